"""A run's metrics.jsonl: the one writer and the one reader (no torch: the flows use it).

OUT/runs/NAME/metrics.jsonl   one JSON object per line: a line per logged step
                              (step, epoch, loss, lr, images_per_s, data_wait), and
                              a line per epoch with val_top1_error and val_top5_error
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from shards.atomic import write_bytes

METRICS = "metrics.jsonl"
RUNS = "runs"
_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def check_run_name(name: object) -> str:
    """`name` if it is a run's name: one path component of 1-100 letters, digits, '.', '_'
    and '-', starting with a letter or digit; else a ValueError saying so.

    So a name can neither leave OUT/runs/ (`../x`, `/tmp/x`), nor alias another
    (`t2/` and `t2` would be two locks on one folder), nor hide a newline.
    """
    if not isinstance(name, str) or not _RUN_NAME.fullmatch(name):
        raise ValueError(
            f"run name {name!r} is not allowed: a run's name is one folder name under "
            "OUT/runs/ of 1-100 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit (for example: paper-1, smoke_b128)"
        )
    return name


def run_folder(out: str | os.PathLike, name: str) -> Path:
    """OUT/runs/NAME, once NAME is checked (`check_run_name`)."""
    return Path(out) / RUNS / check_run_name(name)


def read_metrics(run_dir: str | Path) -> list[dict]:
    """Every line of the run's metrics, in order ([] before the first)."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def epoch_lines(metrics: list[dict]) -> list[dict]:
    """The per-epoch lines (those with the validation errors)."""
    return [m for m in metrics if "val_top1_error" in m]


def step_lines(metrics: list[dict]) -> list[dict]:
    return [m for m in metrics if "val_top1_error" not in m]


def loss_by_epoch(metrics: list[dict]) -> list[tuple[float, float]]:
    """(x, loss) of each logged step, x in epochs (step 150 of 100-step epochs: 1.5), for
    curves drawn over epochs. Before the first epoch ends, the steps per epoch are not
    known: each line is put in the middle of its epoch."""
    ends = epoch_lines(metrics)
    per_epoch = ends[-1]["step"] / ends[-1]["epoch"] if ends else None
    return [
        (m["step"] / per_epoch if per_epoch else m["epoch"] - 0.5, m["loss"])
        for m in step_lines(metrics)
        if m.get("loss") is not None
    ]


def append_metrics(run_dir: str | Path, entry: dict) -> None:
    with open(Path(run_dir) / METRICS, "a") as f:
        f.write(json.dumps(entry) + "\n")


def trim_metrics(run_dir: str | Path, step: int) -> None:
    """On resume, drop the lines logged after the checkpoint being resumed from."""
    if (Path(run_dir) / METRICS).is_file():
        kept = [m for m in read_metrics(run_dir) if m["step"] <= step]
        write_bytes(Path(run_dir) / METRICS, "".join(json.dumps(m) + "\n" for m in kept).encode())
