"""The training loader against bare decoding, and the main process's ceiling, in one run.

    .venv/bin/python benchmarks/loader.py [--images 4000] [--repeats 3] [--dry-run]

Data: `synthetic.write_data_root`, 256x256 photograph-like JPEGs at quality 95
in shards of 250 (as the preprocess stage stores them). Interleaved, medians:

  ceiling      workers (one per core) replaying one prebuilt batch, no decoding
               (benchmarks/replay.py): the images/s the main process absorbs,
               the way before (tensors through the DataLoader) and now (slots);
               "same" re-sends one batch, "fresh" makes a new one per batch
               (the old collate did; a slot worker then copies into its slot)
  per worker   one loader worker against a bare decode + 227 crop copy in one
               process over the same JPEGs (already in memory), end to end and
               steady (from the first batch); with the per-step breakdown of a
               loader worker's time, measured in this process step by step
  all cores    the loader with one worker per core against the bare decode +
               crop copy on as many processes

Prints one JSON object; benchmarks/README.md records it.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from common import machine
from PIL import Image
from replay import absorb
from synthetic import write_data_root

from shards.reader import iter_samples, shard_paths
from shards.stats import read_stats
from training.data import (
    Augment,
    BatchBuffer,
    Loader,
    ShardSamples,
    _samples,
    augment,
    decode,
    lighting_basis,
    shuffle,
)

CROP = 227


def _jpegs(paths: list[str]) -> list[bytes]:
    return [s.image for s in iter_samples(paths)]


def bare(jpegs: list[bytes], batch: int = 128) -> float:
    """Decode + 227 crop copy into a batch array, one process; returns seconds."""
    rng = np.random.default_rng(0)
    out = np.empty((batch, CROP, CROP, 3), np.uint8)
    offsets = rng.integers(0, 256 - CROP + 1, (len(jpegs), 2))
    t0 = time.perf_counter()
    for i, data in enumerate(jpegs):
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            image = np.asarray(im)
        top, left = offsets[i]
        out[i % batch] = image[top : top + CROP, left : left + CROP]
    return time.perf_counter() - t0


def _bare_shard(path: str) -> float:
    return bare(_jpegs([path]))


def bare_parallel(paths: list[Path], processes: int) -> float:
    """The bare decode + crop copy on `processes` processes, each reading its shards; seconds."""
    t0 = time.perf_counter()
    with mp.get_context("fork").Pool(processes) as pool:
        pool.map(_bare_shard, [str(p) for p in paths], chunksize=1)
    return time.perf_counter() - t0


def run_loader(paths: list[Path], basis: np.ndarray, workers: int) -> tuple[float, float, int]:
    """(seconds end to end, seconds from the first batch, images after the first batch)."""
    ds = ShardSamples(paths, True, Augment(), basis, batch_size=128)
    t0 = time.perf_counter()
    first, after = None, 0
    with Loader(ds, workers) as loader:
        for batch in loader:
            if first is None:
                first = time.perf_counter()
            else:
                after += len(batch)
            batch.release()
    end = time.perf_counter()
    return end - t0, end - first, after


def breakdown(paths: list[Path], basis: np.ndarray) -> dict[str, float]:
    """Seconds per image of a loader worker's steps, each stage added to the one before."""
    aug_plain = Augment(lighting="none")
    n = sum(1 for _ in _samples([str(p) for p in paths]))

    def stages(upto: int) -> float:
        rng, pyrng = np.random.default_rng(0), random.Random(0)
        t0 = time.perf_counter()
        samples = _samples([str(p) for p in paths])
        if upto >= 1:
            samples = shuffle(samples, 1000, 100, pyrng)
        buffer = BatchBuffer.fresh(128, CROP)
        for sample in samples:
            if upto < 2:
                continue
            image = decode(sample["jpg"])
            if upto < 3:
                continue
            view = augment(image, rng, aug_plain if upto < 4 else Augment(), basis)
            if upto < 5:
                continue
            if buffer.add(view, int(sample["cls"]), sample["__key__"]) == 128:
                buffer = BatchBuffer.fresh(128, CROP)
        return (time.perf_counter() - t0) / n

    names = [
        "read + tar parsing",
        "shuffle buffer",
        "decode (to an RGB array)",
        "crop offsets, flip, RNG",
        "lighting (a ~ N(0, 0.1), P diag(lambda) a)",
        "crop copy + labels into the batch",
    ]
    totals = [stages(i) for i in range(len(names))]
    return {name: totals[i] - (totals[i - 1] if i else 0) for i, name in enumerate(names)}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--images", type=int, default=4000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--replay-batches", type=int, default=400)
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes: checks the script runs")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "alexnet-bench"))
    args = ap.parse_args()
    if args.dry_run:
        args.images, args.repeats, args.replay_batches = 300, 1, 8
    cores = len(os.sched_getaffinity(0))
    out = Path(args.workdir) / f"loader-synthetic-{args.images}"
    if not (out / "manifest.json").exists():
        write_data_root(out, args.images, 50, classes=10, per_shard=min(250, args.images // 4))
    paths = shard_paths(out, "train")
    basis = lighting_basis(read_stats(out), "paper")
    jpegs = _jpegs([str(p) for p in paths])

    ways = {
        "tensors_same": ("tensors", False),
        "slots_same": ("slots", False),
        "tensors_fresh": ("tensors", True),
        "slots_fresh": ("slots", True),
    }
    runs: dict[str, list] = {k: [] for k in [*ways, "bare_1", "loader_1", "bare_all", "loader_all"]}
    steps: list[dict] = []
    for _ in range(args.repeats):
        for name, (way, copy) in ways.items():
            runs[name].append(absorb(way, cores, args.replay_batches, copy=copy)["images_per_s"])
        runs["bare_1"].append(bare(jpegs))
        runs["loader_1"].append(run_loader(paths, basis, 1))
        runs["bare_all"].append(bare_parallel(paths, cores))
        runs["loader_all"].append(run_loader(paths, basis, cores))
        steps.append(breakdown(paths, basis))
    med = statistics.median
    n = len(jpegs)
    bare_1 = n / med(runs["bare_1"])
    loader_1_e2e = n / med(r[0] for r in runs["loader_1"])
    loader_1_steady = med(r[2] / r[1] for r in runs["loader_1"])
    bare_all = n / med(runs["bare_all"])
    loader_all = n / med(r[0] for r in runs["loader_all"])
    ceiling = {k: round(med(runs[k])) for k in ways}
    per_image = {k: round(med(s[k] for s in steps) * 1e3, 4) for k in steps[0]}
    result = {
        "machine": machine(),
        "images": n,
        "ceiling_images_per_s": {
            **ceiling,
            "slots_over_tensors_same": round(ceiling["slots_same"] / ceiling["tensors_same"], 1),
            "slots_over_tensors_fresh": round(ceiling["slots_fresh"] / ceiling["tensors_fresh"], 1),
            "workers": cores,
        },
        "per_worker": {
            "bare_decode_crop_images_per_s": round(bare_1, 1),
            "loader_1_worker_images_per_s": round(loader_1_e2e, 1),
            "ratio_end_to_end": round(loader_1_e2e / bare_1, 3),
            "ratio_steady": round(loader_1_steady / bare_1, 3),
            "breakdown_ms_per_image": per_image,
            "bare_ms_per_image": round(1e3 / bare_1, 4),
        },
        "all_cores": {
            "processes": cores,
            "bare_decode_crop_images_per_s": round(bare_all, 1),
            "loader_images_per_s": round(loader_all, 1),
            "ratio": round(loader_all / bare_all, 3),
        },
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
