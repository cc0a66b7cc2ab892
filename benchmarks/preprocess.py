"""Preprocessing throughput and memory, against baselines measured in the same run.

    .venv/bin/python benchmarks/preprocess.py [--images 3000] [--small 1000] [--repeats 3]

Builds an ImageNet-like corpus (photograph-like detail; mostly about 500x375,
landscape and portrait, 10% at 1000-1600 px, 10% smaller; JPEG quality 90),
then measures, interleaved, `--repeats` times each:

  (a) bare:  decode with draft + resize + crop + encode, on all cores, nothing
             else (multiprocessing.Pool over the files): the limit;
  (b) plain: the same with a full decode (no draft): what most scripts do;
  (c) stage: `preprocess()` end to end (Dask cluster start, scan, decode,
             resize, crop, encode, re-decode for the statistics, partial
             statistics, tar writing, records, manifest).

Reports medians of images/s and images/s per core, the ratios c/a and a/b, and
the peak resident memory of the whole process tree during (c) at two corpus
sizes (`--small` and `--images`).

With `--official`, also (d): the same images as ILSVRC-2012's downloads (a
train tar of one tar per class, and a devkit), read in place, and the ratio
d/c: the archives against the extracted tree (issue 25's target: >= 0.9).
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

from preprocessing.cluster import default_workers
from preprocessing.prepare import PrepareSettings, preprocess

SIZE = 256


def _bare(args: tuple[str, bool]) -> int:
    path, draft = args
    with Image.open(path) as im:
        w, h = im.size
        if draft and min(w, h) >= 2 * SIZE:
            k = SIZE / min(w, h)
            im.draft("RGB", (round(w * k), round(h * k)))
        im = im.convert("RGB")
        w, h = im.size
        k = SIZE / min(w, h)
        nw, nh = max(SIZE, round(w * k)), max(SIZE, round(h * k))
        im = im.resize((nw, nh), Image.Resampling.LANCZOS)
        left, top = (nw - SIZE) // 2, (nh - SIZE) // 2
        buf = io.BytesIO()
        im.crop((left, top, left + SIZE, top + SIZE)).save(buf, "JPEG", quality=95)
    return len(buf.getvalue())


def run_loop(files: list[str], draft: bool, cores: int) -> float:
    t0 = time.perf_counter()
    with mp.Pool(cores) as pool:
        pool.map(_bare, [(f, draft) for f in files], chunksize=32)
    return time.perf_counter() - t0


def run_stage(src: Path, work: Path, cores: int, shard_size: int) -> tuple[float, int]:
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        settings = PrepareSettings(shard_size=shard_size)
        preprocess(src, out, settings, splits=("train",), workers=cores, progress=False)
        seconds = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    return seconds, mem.peak


def official_corpus(src: Path) -> Path:
    """`src`'s train/ tree as ILSVRC-2012's train tar of class tars, with a devkit (cached
    beside it)."""
    from preprocessing.archives import write_archives
    from preprocessing.devkit import DEVKIT, write_devkit

    out = src.with_name(src.name + "-official")
    if (out / "done").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    write_archives(src, out)  # the corpus has train/ only
    folders = sorted((src / "train").iterdir())
    synsets = [(i + 1, f.name, f.name, 0) for i, f in enumerate(folders)]
    write_devkit(out / DEVKIT, synsets, [])
    (out / "done").touch()
    return out


def cluster_start_stop(cores: int) -> float:
    """Seconds to start and stop the local Dask cluster: the stage's fixed cost."""
    from preprocessing.cluster import dask_client

    t0 = time.perf_counter()
    with dask_client(cores):
        pass
    return time.perf_counter() - t0


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--images", type=int, default=4000, help="corpus size for the speed runs")
    ap.add_argument(
        "--small", type=int, default=1000, help="smaller corpus, for the memory comparison"
    )
    # ImageNet's 1,282 shards keep every core busy; a corpus of a few thousand
    # needs smaller shards for the same (the default 1,000 would leave cores idle).
    ap.add_argument("--shard-size", type=int, default=250)
    ap.add_argument(
        "--official", action="store_true", help="also (d): the same images from the archives"
    )
    args = ap.parse_args()
    cores = default_workers()
    work = Path(args.workdir)
    src = build_corpus(work, args.images)
    small = build_corpus(work, args.small)
    files = sorted(str(p) for p in (src / "train").rglob("*.JPEG"))

    times: dict[str, list[float]] = {"a_bare": [], "b_plain": [], "c_stage": [], "cluster": []}
    official = official_corpus(src) if args.official else None
    if official is not None:
        times["d_archives"] = []
    peaks: list[int] = []
    for _ in range(args.repeats):
        times["a_bare"].append(run_loop(files, True, cores))
        times["b_plain"].append(run_loop(files, False, cores))
        seconds, peak = run_stage(src, work, cores, args.shard_size)
        times["c_stage"].append(seconds)
        peaks.append(peak)
        times["cluster"].append(cluster_start_stop(cores))
        if official is not None:
            times["d_archives"].append(run_stage(official, work, cores, args.shard_size)[0])
    small_peak = max(run_stage(small, work, cores, args.shard_size)[1] for _ in range(2))

    med = {k: statistics.median(v) for k, v in times.items()}
    fixed = med.pop("cluster")
    med["c_stage_steady"] = med["c_stage"] - fixed  # without the cluster's start and stop
    rate = {k: args.images / v for k, v in med.items()}
    result = {
        "machine": machine(),
        "images": args.images,
        "repeats": args.repeats,
        "shard_size": args.shard_size,
        "images_per_s": {k: round(v, 1) for k, v in rate.items()},
        "images_per_s_per_core": {k: round(v / cores, 1) for k, v in rate.items()},
        "ratio_stage_over_bare": round(rate["c_stage"] / rate["a_bare"], 3),
        "ratio_steady_stage_over_bare": round(rate["c_stage_steady"] / rate["a_bare"], 3),
        "ratio_bare_over_plain": round(rate["a_bare"] / rate["b_plain"], 3),
        **(
            {"ratio_archives_over_tree": round(rate["d_archives"] / rate["c_stage"], 3)}
            if official is not None
            else {}
        ),
        "cluster_start_stop_s": round(fixed, 2),
        "peak_rss_mib": {
            str(args.small): round(small_peak / 2**20),
            str(args.images): round(max(peaks) / 2**20),
        },
        "raw_seconds": {k: [round(x, 2) for x in v] for k, v in times.items()},
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
