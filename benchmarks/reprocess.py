"""Re-processing a changed source, against preprocessing it from scratch, in the same run.

    .venv/bin/python benchmarks/reprocess.py [--images 4000] [--shard-size 500] [--repeats 3]

Copies the ImageNet-like corpus of benchmarks/common.py, preprocesses it and
computes its statistics once, then `--repeats` times, interleaved:

  update    change the source (add 3 images, change 1, delete 1), then
            `preprocess()` + `compute_stats()` on the existing data root: what
            the alexnet-reprocess flow runs
  scratch   the same two stages on a new data root from the same new source

and reports the medians, their ratio, and how many shards each wrote.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from pathlib import Path

from common import build_corpus, machine, parser
from PIL import Image

from preprocessing.cluster import default_workers
from preprocessing.prepare import PrepareSettings, preprocess
from preprocessing.stats import compute_stats


def change_source(src: Path, round_: int) -> None:
    """Add 3 images, change 1 (re-encoded mirror image), delete 1."""
    train = sorted((src / "train").rglob("*.JPEG"))
    for i in range(3):
        path = train[0].with_name(f"added-{round_}-{i}.JPEG")
        Image.new("RGB", (500, 375), (30 * i, 120, 60 + round_)).save(path, "JPEG", quality=90)
    with Image.open(train[len(train) // 2]) as im:
        changed = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    changed.save(train[len(train) // 2], "JPEG", quality=85)
    train[-1].unlink()


def stages(src: Path, out: Path, settings: PrepareSettings, cores: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    report = preprocess(src, out, settings, workers=cores, progress=False)
    compute_stats(out, workers=cores)
    return time.perf_counter() - t0, report.shards_written


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--images", type=int, default=4000)
    ap.add_argument("--shard-size", type=int, default=500)
    args = ap.parse_args()
    cores = default_workers()
    work = Path(args.workdir)
    corpus = build_corpus(work, args.images)
    src, out = work / "reprocess-src", work / "reprocess-out"
    for p in (src, out):
        shutil.rmtree(p, ignore_errors=True)
    shutil.copytree(corpus, src)
    settings = PrepareSettings(shard_size=args.shard_size)
    stages(src, out, settings, cores)
    runs: dict[str, list[float]] = {"update": [], "scratch": []}
    written: dict[str, list[int]] = {"update": [], "scratch": []}
    for r in range(args.repeats):
        change_source(src, r)
        seconds, n = stages(src, out, settings, cores)
        runs["update"].append(seconds)
        written["update"].append(n)
        scratch = work / "reprocess-scratch"
        shutil.rmtree(scratch, ignore_errors=True)
        seconds, n = stages(src, scratch, settings, cores)
        runs["scratch"].append(seconds)
        written["scratch"].append(n)
        shutil.rmtree(scratch)
    med = {k: statistics.median(v) for k, v in runs.items()}
    shards = len(list((out / "shards" / "train").glob("*.tar")))
    print(
        json.dumps(
            {
                "machine": machine(),
                "images": args.images,
                "shard_size": args.shard_size,
                "train_shards_after": shards,
                "update_s": round(med["update"], 2),
                "scratch_s": round(med["scratch"], 2),
                "ratio_update_over_scratch": round(med["update"] / med["scratch"], 3),
                "shards_written": written,
                "raw_seconds": {k: [round(x, 2) for x in v] for k, v in runs.items()},
            },
            indent=1,
        )
    )
    for p in (src, out):
        shutil.rmtree(p, ignore_errors=True)


if __name__ == "__main__":
    main()
