"""The training loader against a bare decode of the same JPEGs, in the same run.

    .venv/bin/python benchmarks/loader.py [--images 2000] [--repeats 3]

Preprocesses the ImageNet-like corpus of benchmarks/common.py (train split,
shards of 100) and computes its statistics once, then measures, interleaved:

  bare decode   multiprocessing.Pool on all cores: read every stored JPEG from
                the shards and decode it to RGB, nothing else
  loader        training.data's DataLoader (one worker per core) yielding
                batches of 128 with every augmentation: decode, random crop,
                flip, lighting shift (the mean subtraction runs per batch on
                the training device and is timed with it)

Reports images/s, images/s per core and the ratio loader / bare (target >= 0.8).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from common import build_corpus, machine
from stats import decode_only

from preprocessing.cluster import default_workers
from preprocessing.prepare import PrepareSettings, preprocess
from preprocessing.stats import compute_stats
from shards.reader import shard_paths
from shards.stats import read_stats
from training.data import Augment, ShardSamples, lighting_basis, loader, prepare_batch


def run_loader(out: Path, cores: int, with_batch_work: bool) -> float:
    import torch

    stats = read_stats(out)
    mean = torch.from_numpy(stats.mean)
    basis = lighting_basis(stats, "paper")
    ds = ShardSamples(shard_paths(out, "train"), True, Augment(), basis, batch_size=128)
    t0 = time.perf_counter()
    for batch in loader(ds, cores):
        if with_batch_work:
            prepare_batch(batch, mean, 1.0, torch.device("cpu"))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "alexnet-bench"))
    args = ap.parse_args()
    cores = default_workers()
    work = Path(args.workdir)
    src = build_corpus(work, args.images)
    out = work / f"loader-out-{args.images}"
    if not (out / "stats" / "pca.json").exists():
        preprocess(
            src,
            out,
            PrepareSettings(shard_size=100),
            splits=("train",),
            workers=cores,
            progress=False,
        )
        compute_stats(out, workers=cores)
    runs: dict[str, list[float]] = {"bare_decode": [], "loader": [], "loader_and_batch_work": []}
    for _ in range(args.repeats):
        runs["bare_decode"].append(decode_only(out, cores))
        runs["loader"].append(run_loader(out, cores, False))
        runs["loader_and_batch_work"].append(run_loader(out, cores, True))
    med = {k: statistics.median(v) for k, v in runs.items()}
    rate = {k: args.images / v for k, v in med.items()}
    bare = rate["bare_decode"]
    print(json.dumps({
        "machine": machine(),
        "images": args.images,
        "images_per_s": {k: round(v, 1) for k, v in rate.items()},
        "images_per_s_per_core": {k: round(v / cores, 1) for k, v in rate.items()},
        "ratio_loader_over_bare": round(rate["loader"] / bare, 3),
        "ratio_with_batch_work_over_bare": round(rate["loader_and_batch_work"] / bare, 3),
        "raw_seconds": {k: [round(x, 2) for x in v] for k, v in runs.items()},
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
