"""The training loader against bare decoding, and the main process's ceiling, in one run.

    .venv/bin/python benchmarks/loader.py [--images 4000] [--repeats 3] [--dry-run]

Data: `synthetic.write_data_root`, 256x256 photograph-like JPEGs at quality 95
in shards of 250 (as the preprocess stage stores them). Interleaved, medians:

  ceiling      workers (one per core) replaying one prebuilt batch, no decoding
               (benchmarks/feed.py): the images/s the main process absorbs,
               the way before (tensors through the DataLoader) and now (slots);
               "same" re-sends one batch, "fresh" makes a new one per batch
               (the old collate did; a slot worker then copies into its slot)
  per worker   one loader worker against a bare decode (Pillow) + 227 crop copy
               in one process over the same JPEGs (already in memory), end to
               end and steady (from the first batch); with the per-step
               breakdown of a loader worker's time, measured in this process
               step by step; and against the same decode (simplejpeg) + crop
               copy
  all cores    the loader with one worker per core against the bare decode +
               crop copy on as many processes

Prints one JSON object; benchmarks/README.md records it.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import time
from pathlib import Path

import numpy as np
import webdataset as wds
from common import machine, parser
from feed import CROP, absorb, bare, bare_parallel, jpegs_of, run_loader
from synthetic import write_data_root

from shards.format import sample_checksum
from shards.reader import iter_grouped, shard_paths
from shards.stats import read_stats
from training.loader.augment import Augment, augment, lighting_basis
from training.loader.batch import BatchBuffer
from training.loader.decode import Decoder


def breakdown(paths: list[Path], basis: np.ndarray, checksum: bool = True) -> dict[str, float]:
    """Milliseconds per image of each step of a loader worker, timed inside one pass here.

    With `checksum=False` the pass skips the per-sample CRC: the difference of the
    two passes' totals is the check's real cost (timed alone, the CRC also pays
    for bringing the sample's bytes into the cache, which the decoder then does not).
    """
    clock = time.perf_counter
    spent = dict.fromkeys(STEPS, 0.0)

    def timed(items, step):  # the time spent producing each item, charged to `step`
        while True:
            t0 = clock()
            item = next(items, None)
            spent[step] += clock() - t0
            if item is None:
                return
            yield item

    rng, aug = np.random.default_rng(0), Augment(lighting="none")
    unchecked = iter_grouped([str(p) for p in paths], check=False)  # the checksum is timed below
    tar = timed(({"__key__": k, **fields} for k, fields, _ in unchecked), STEPS[0])
    samples = timed(wds.filters.shuffle(1000, 100, rng=random.Random(0))(tar), STEPS[1])
    buffer, n, decoder = BatchBuffer.fresh(128, CROP), 0, Decoder()
    for sample in samples:
        tc = clock()
        if checksum:
            sample_checksum((sample["jpg"], sample["cls"], sample["json"]))
        t0 = clock()
        image = decoder(sample["jpg"])
        t1 = clock()
        patch, top, left, flipped, _ = augment(image, rng, aug, None)
        t2 = clock()
        shift = (basis @ rng.normal(0.0, 0.1, 3)).astype(np.float32)
        t3 = clock()
        if (
            buffer.add((patch, top, left, flipped, shift), int(sample["cls"]), sample["__key__"])
            == 128
        ):
            buffer.finish()
            buffer.keys = []  # reused, as a worker reuses its slots
        t4 = clock()
        for step, dt in zip(STEPS[2:], (t0 - tc, t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            spent[step] += dt
        n += 1
    spent[STEPS[1]] -= spent[STEPS[0]]  # the shuffle's time included the reads it asked for
    return {step: 1e3 * t / n for step, t in spent.items()}


STEPS = (
    "read + tar parsing",
    "shuffle buffer",
    "checksum (CRC-32 of the sample's bytes, against its record)",
    "decode (to an RGB array)",
    "crop offsets, flip, RNG",
    "lighting (a ~ N(0, 0.1), P diag(lambda) a)",
    "crop copy + labels into the batch",
)


def main() -> None:
    ap = parser(__doc__, dry_run=True)
    ap.add_argument("--images", type=int, default=4000)
    ap.add_argument("--replay-batches", type=int, default=400)
    args = ap.parse_args()
    if args.dry_run:
        args.images, args.repeats, args.replay_batches = 300, 1, 8
    cores = len(os.sched_getaffinity(0))
    out = Path(args.workdir) / f"loader-synthetic-v2-{args.images}"  # v2: with records
    if not (out / "manifest.json").exists():
        write_data_root(out, args.images, 50, classes=10, per_shard=min(250, args.images // 4))
    paths = shard_paths(out, "train")
    basis = lighting_basis(read_stats(out), "paper")
    jpegs = jpegs_of(paths)

    ways = {
        "tensors_same": ("tensors", False),
        "slots_same": ("slots", False),
        "tensors_fresh": ("tensors", True),
        "slots_fresh": ("slots", True),
    }
    names = [
        *ways,
        "bare_1",
        "bare_1_simplejpeg",
        "loader_1",
        "bare_all",
        "loader_all",
    ]
    runs: dict[str, list] = {k: [] for k in names}
    steps: list[dict] = []
    unchecked: list[float] = []  # ms per image of the same pass without the checksum
    for _ in range(args.repeats):
        for name, (way, copy) in ways.items():
            runs[name].append(absorb(way, cores, args.replay_batches, copy=copy)["images_per_s"])
        runs["bare_1"].append(bare(jpegs))
        runs["bare_1_simplejpeg"].append(bare(jpegs, simplejpeg=True))
        runs["loader_1"].append(run_loader(paths, basis, 1))
        runs["bare_all"].append(bare_parallel(paths, cores))
        runs["loader_all"].append(run_loader(paths, basis, cores))
        steps.append(breakdown(paths, basis))
        unchecked.append(sum(breakdown(paths, basis, checksum=False).values()))
    med = statistics.median
    n = len(jpegs)

    def rate(name: str) -> float:  # images/s, end to end
        return n / med(r[0] if isinstance(r, tuple) else r for r in runs[name])

    def steady(name: str) -> float:  # images/s after the first batch (the workers are up)
        return med(r[2] / r[1] for r in runs[name])

    bare_1 = rate("bare_1")
    ceiling = {k: round(med(runs[k])) for k in ways}
    per_image = {k: round(med(s[k] for s in steps), 4) for k in STEPS}
    checksum_share = per_image[STEPS[2]] / sum(per_image.values())
    checked_total = med(sum(s.values()) for s in steps)
    checksum_marginal = (checked_total - med(unchecked)) / checked_total
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
            "bare_pillow_images_per_s": round(bare_1, 1),
            "bare_simplejpeg_images_per_s": round(rate("bare_1_simplejpeg"), 1),
            "loader_images_per_s": round(rate("loader_1"), 1),
            "loader_over_bare_pillow_end_to_end": round(rate("loader_1") / bare_1, 3),
            "loader_over_bare_pillow_steady": round(steady("loader_1") / bare_1, 3),
            "same_decoder_steady": round(steady("loader_1") / rate("bare_1_simplejpeg"), 3),
            "breakdown_ms_per_image": per_image,
            "checksum_share_of_worker_time": round(checksum_share, 4),
            "checksum_marginal_share": round(checksum_marginal, 4),
            "bare_pillow_ms_per_image": round(1e3 / bare_1, 4),
        },
        "all_cores": {
            "processes": cores,
            "bare_pillow_images_per_s": round(rate("bare_all"), 1),
            "loader_images_per_s": round(rate("loader_all"), 1),
            "ratio_end_to_end": round(rate("loader_all") / rate("bare_all"), 3),
        },
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
