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

from shards.atomic import append_line, write_bytes

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
    """Every line of the run's metrics, in order ([] before the first).

    A last line without its newline is what a kill or a full disk leaves in the middle
    of an append (appends are not atomic): it is skipped. Any other line that is not a
    JSON object is an error naming the file and the line.
    """
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    text = path.read_text(errors="replace")
    lines = text.split("\n")
    torn = lines.pop()  # "" after a final newline; else a line cut short
    entries = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError as err:
            raise ValueError(f"{path}:{n}: not a metrics line ({err}): {line[:80]!r}") from None
        if not isinstance(entry, dict):
            raise ValueError(f"{path}:{n}: not a metrics line (not an object): {line[:80]!r}")
        entries.append(entry)
    if torn.strip():
        try:  # a complete object that only lacks its newline is kept
            entry = json.loads(torn)
            if isinstance(entry, dict):
                entries.append(entry)
        except ValueError:
            pass
    return entries


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
    """Append one line and fsync it (a line a crash cuts is the last, and readers skip it)."""
    append_line(Path(run_dir) / METRICS, entry)


def trim_metrics(run_dir: str | Path, step: int) -> None:
    """On resume, drop the lines logged after the checkpoint being resumed from."""
    if (Path(run_dir) / METRICS).is_file():
        kept = [m for m in read_metrics(run_dir) if m["step"] <= step]
        lines = "".join(json.dumps(m, sort_keys=True) + "\n" for m in kept)  # as append_line
        write_bytes(Path(run_dir) / METRICS, lines.encode())
