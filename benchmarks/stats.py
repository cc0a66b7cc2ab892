"""The stats stage: from partials against preprocessing, from pixels against decoding.

    .venv/bin/python benchmarks/stats.py [--sizes 1000 4000] [--shard-size 50] [--repeats 3]

For each corpus size (the ImageNet-like corpus of benchmarks/common.py),
preprocesses it once (timed), then measures, interleaved, `--repeats` times:

  stats from partials   `compute_stats(OUT)`: the normal path
  stats from pixels     `compute_stats(OUT, from_pixels=True)`: decodes every image
  decode only           a multiprocessing.Pool on all cores decoding every stored
                        JPEG of the shards: the speed limit of "from pixels"
  cluster               starting and stopping the local Dask cluster alone: a
                        fixed cost, the same at any corpus size, so "steady"
                        ratios take it out

and the peak resident memory of the whole process tree during each stats run.
With two sizes it also gives the marginal cost of an image between them, free
of every fixed cost: the from-pixels rate that a large corpus approaches.
Shards are small (100) so that the two sizes differ in shard count (10 vs 40).
"""

from __future__ import annotations

import io
import json
import multiprocessing as mp
import shutil
import statistics
import time
from pathlib import Path

from common import PeakRSS, build_corpus, machine, parser
from PIL import Image

from preprocessing.cluster import dask_client, default_workers
from preprocessing.prepare import PrepareSettings, preprocess
from preprocessing.stats import compute_stats
from shards.reader import iter_samples, shard_paths


def _decode_shard(path: str) -> int:
    n = 0
    for s in iter_samples([path]):
        with Image.open(io.BytesIO(s.image)) as im:
            im.convert("RGB").load()
        n += 1
    return n


def decode_only(out: Path, cores: int) -> float:
    t0 = time.perf_counter()
    with mp.Pool(cores) as pool:
        pool.map(_decode_shard, [str(p) for p in shard_paths(out, "train")])
    return time.perf_counter() - t0


def cluster_start_stop(cores: int) -> float:
    t0 = time.perf_counter()
    with dask_client(cores):
        pass
    return time.perf_counter() - t0


def timed_stats(out: Path, cores: int, from_pixels: bool) -> tuple[float, int]:
    shutil.rmtree(out / "stats", ignore_errors=True)
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        compute_stats(out, from_pixels=from_pixels, workers=cores)
        seconds = time.perf_counter() - t0
    return seconds, mem.peak


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000])
    ap.add_argument("--shard-size", type=int, default=100)
    args = ap.parse_args()
    cores = default_workers()
    work = Path(args.workdir)
    results = {
        "machine": machine(),
        "shard_size": args.shard_size,
        "repeats": args.repeats,
        "sizes": {},
    }
    for n in args.sizes:
        src = build_corpus(work, n)
        out = work / f"stats-out-{n}"
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        preprocess(
            src,
            out,
            PrepareSettings(shard_size=args.shard_size),
            splits=("train",),
            workers=cores,
            progress=False,
        )
        prep = time.perf_counter() - t0
        runs: dict[str, list[float]] = {"partials": [], "pixels": [], "decode": [], "cluster": []}
        peaks: dict[str, int] = {"partials": 0, "pixels": 0}
        for _ in range(args.repeats):
            for how in ("partials", "pixels"):
                seconds, peak = timed_stats(out, cores, how == "pixels")
                runs[how].append(seconds)
                peaks[how] = max(peaks[how], peak)
            runs["decode"].append(decode_only(out, cores))
            runs["cluster"].append(cluster_start_stop(cores))
        med = {k: statistics.median(v) for k, v in runs.items()}
        results["sizes"][n] = {
            "shards": len(shard_paths(out, "train")),
            "preprocess_s": round(prep, 2),
            "stats_from_partials_s": round(med["partials"], 2),
            "ratio_partials_over_preprocess": round(med["partials"] / prep, 3),
            "images_per_s_from_pixels": round(n / med["pixels"], 1),
            "images_per_s_decode_only": round(n / med["decode"], 1),
            "ratio_pixels_over_decode_speed": round(med["decode"] / med["pixels"], 3),
            "cluster_start_stop_s": round(med["cluster"], 2),
            "ratio_pixels_over_decode_speed_steady": round(
                med["decode"] / (med["pixels"] - med["cluster"]), 3
            ),
            "peak_rss_mib": {k: round(v / 2**20) for k, v in peaks.items()},
            "raw_seconds": {k: [round(x, 2) for x in v] for k, v in runs.items()},
        }
        shutil.rmtree(out, ignore_errors=True)
    if len(args.sizes) >= 2:
        # The marginal cost of more images, between the smallest and largest size:
        # what every fixed cost (cluster start, worker imports, pool start) drops out of.
        small, large = min(args.sizes), max(args.sizes)
        a, b = results["sizes"][small]["raw_seconds"], results["sizes"][large]["raw_seconds"]
        extra = {k: statistics.median(b[k]) - statistics.median(a[k]) for k in ("pixels", "decode")}
        results["marginal"] = {
            "images": large - small,
            "pixels_ms_per_image_per_core": round(
                extra["pixels"] / (large - small) * cores * 1e3, 3
            ),
            "decode_ms_per_image_per_core": round(
                extra["decode"] / (large - small) * cores * 1e3, 3
            ),
            "ratio_pixels_over_decode_speed": round(extra["decode"] / extra["pixels"], 3),
        }
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
