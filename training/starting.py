"""How a training run starts: its inputs checked, and its settings, fresh, resumed (with the
`--set` a resumed run may take) or restarted, and checked against the data root."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from shards.bucket import available
from shards.manifest import Manifest, read_manifest
from shards.reader import shard_paths
from shards.stats import Stats, read_stats
from training.checkpoint import check_classes, load_checkpoint
from training.config import TrainConfig, resume_with


def read_inputs(out: Path) -> tuple[Manifest, Stats]:
    """The manifest (with both splits) and the statistics: every input error before training."""
    manifest = read_manifest(out)
    for split in ("train", "val"):
        if not manifest.shards(split):
            raise ValueError(
                f"{out}: the manifest has no {split} shards; "
                "run `alexnet preprocess` with both splits"
            )
    stats = read_stats(out, manifest)
    for split in ("train", "val"):
        missing = [p for p in shard_paths(out, split, manifest) if not available(p)]
        if missing:
            raise FileNotFoundError(
                f"{missing[0]} is missing ({len(missing)} {split} shard(s) the manifest lists "
                "are); re-run `alexnet preprocess` to write them again"
            )
    return manifest, stats


def run_settings(
    out: Path,
    run_dir: Path,
    manifest: Manifest,
    config: TrainConfig | None,
    resume: bool,
    resume_overrides: list[str] | None,
) -> tuple[TrainConfig, dict | None]:
    """The settings this process trains with, and the checkpoint it resumes from (or None):
    checked against the data root (enough shards for the ranks; on resume, the classes
    the run began with), with `--set` applied on resume, and fc8 sized to the classes."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    n_shards = len(manifest.shards("train"))
    if world > n_shards:
        raise ValueError(
            f"{world} processes but {out} has {n_shards} train shard(s): each rank reads "
            "shards of its own, so it needs at least one each; run fewer processes, or "
            "preprocess with a smaller --shard-size (with --rewrite)"
        )
    config, state = _settings(run_dir, run_dir.name, config, resume, rank)
    if resume and resume_overrides:
        config, changed = resume_with(config, resume_overrides)
        if rank == 0 and changed:
            print(f"{run_dir.name}: resumed with {', '.join(changed)}", file=sys.stderr)
    if state is not None:  # a resumed run goes on with the classes it began with
        last = run_dir / "checkpoints" / "last.pt"
        check_classes(last, state.get("classes"), config.model.num_classes, manifest)
    if config.model.num_classes != len(manifest.classes):
        model_config = {**config.model.to_dict(), "num_classes": len(manifest.classes)}
        config = TrainConfig.from_dict({**config.to_dict(), "model": model_config})
    return config, state


def _settings(
    run_dir: Path, run: str, config: TrainConfig | None, resume: bool, rank: int
) -> tuple[TrainConfig, dict | None]:
    """The run's settings and, when resuming, its last checkpoint. A run that died before
    its first checkpoint starts again with its saved settings; a run folder in use is an
    error without --resume."""
    last = run_dir / "checkpoints" / "last.pt"
    if resume and last.is_file():
        state = load_checkpoint(last)
        return TrainConfig.from_dict(state["config"]), state
    if resume:  # killed, diverged or out of disk before its first checkpoint
        saved = run_dir / "config.json"
        if not saved.is_file():
            raise FileNotFoundError(f"{last} not found: nothing to resume")
        if rank == 0:
            again = f"{run}: no checkpoint yet; starting it again from the beginning"
            print(f"{again}, with its saved settings", file=sys.stderr)
        return TrainConfig.from_dict(_read_config(saved)), None
    if run_dir.exists() and any(run_dir.iterdir()) and rank == 0:
        again = "" if last.is_file() else " (it has no checkpoint: --resume starts it again)"
        raise FileExistsError(
            f"{run_dir} exists{again}: pass --resume to continue it, or choose another --run"
        )
    return config or TrainConfig(), None


def _read_config(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"{path}: unreadable settings ({err})") from None
