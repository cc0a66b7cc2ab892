"""Where the flows find OUT and its runs, on this machine or in a bucket, and how a
training run is moved aside or launched elsewhere."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from prefect import get_run_logger

from shards import bucket, storage
from training.runlog import run_folder


def where(out: str) -> str:
    """OUT as a cache key names it: a folder resolved, a bucket's URL as it is."""
    return out if storage.is_url(out) else str(Path(out).resolve())


def here(out: str, run: str | None = None) -> Path:
    """OUT as it is read on this machine: the folder, or a bucket's local view refreshed
    now (with the run's folder if it is further on in the bucket); a view with no manifest
    where the bucket holds no data root yet."""
    if not storage.is_url(out):
        return Path(out)
    try:
        return bucket.resolve(out, runs=[run] if run else [])
    except FileNotFoundError:  # nothing there yet: nor in the view
        empty = bucket.view_of(out)
        (empty / "manifest.json").unlink(missing_ok=True)
        return empty


def fresh_run_dir(out: str, run: str) -> Path | None:
    """Move an earlier run of this name aside (nothing is deleted); return where it went.
    In a bucket, its objects too (copied, then deleted: object stores have no rename)."""
    run_dir = run_folder(here(out, run), run)
    if not run_dir.exists():
        return None
    n = 1
    while (target := run_dir.with_name(f"{run}.superseded-{n}")).exists():
        n += 1
    if storage.is_url(out):
        storage.move(storage.join(out, "runs", run), storage.join(out, "runs", target.name))
    run_dir.rename(target)
    return target


def launch_training(out: str, run: str, config: dict, launcher: list[str]) -> None:
    """Run `alexnet train` under `launcher` (torchrun, srun, ...) and wait for it."""
    from training.config import TrainConfig

    # Beside the run folder, not in it (training wants a new run folder), and on
    # OUT's file system, which every node of a multi-node launch sees.
    runs = here(out).resolve() / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    config_file = runs / f".{run}.launch.json"  # the resolved config, exactly
    config_file.write_text(json.dumps(TrainConfig.from_dict(config).to_dict(), indent=1))
    handed = str(config_file)
    if storage.is_url(out):  # the nodes share no disk: they read it from the bucket
        handed = storage.join(out, "runs", config_file.name)
        storage.upload(config_file, handed)
    # -m flows.cli: torchrun's way to run a module; "--name", not "--run", which
    # torchrun's own parser would take.
    command = [
        *launcher,
        "-m",
        "flows.cli",
        "train",
        out if storage.is_url(out) else str(runs.parent),
        "--name",
        run,
        "--preset",
        "paper",
        "--config",
        handed,
    ]
    logger = get_run_logger()
    logger.info("launching training: %s", " ".join(command))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        with subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        ) as proc:
            assert proc.stdout is not None
            tail: list[str] = []
            for line in proc.stdout:
                logger.info("%s", line.rstrip())
                tail = [*tail[-19:], line]
            code = proc.wait()
    except FileNotFoundError:
        raise RuntimeError(f"the training launcher {launcher[0]!r} was not found") from None
    finally:
        config_file.unlink(missing_ok=True)
        if handed != str(config_file):
            storage.remove([handed])
    if code != 0:
        raise RuntimeError(
            f"the training launch exited with status {code}: {' '.join(command)}\n" + "".join(tail)
        )
