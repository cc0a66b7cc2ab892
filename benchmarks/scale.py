"""ImageNet at full size: how every fixed and per-file cost grows, on a 1.33M-file tree.

    .venv/bin/python benchmarks/scale.py WORKDIR [--train 1281167] [--val 50000]

1. Builds an ImageNet-shaped source in WORKDIR/src: 1,000 train/<wnid>/ folders
   holding `--train` entries and a flat val/ of `--val` with LOC_val_solution.csv
   and LOC_synset_mapping.txt. Every entry is a hard link to one of a pool of
   `--pool` JPEGs drawn with ImageNet's spread of sizes (benchmarks/common.py),
   so the tree costs the pool's disk (about 160 MB) plus its directory entries.
2. Measures, each step in its own process (wall time, the peak RSS of its main
   process and of the largest other process it started, and the tree's summed peak):
     listing     scan + fingerprint (what the pipeline's cache key costs)
     plan        `alexnet preprocess SRC OUT --dry-run` on an empty OUT
     (write)     a complete OUT, written out of band: the real plan and the real
                 `write_shard`, with the first `--real-shards` train shards from the
                 real decode + resize + encode of each pool image, and every other
                 sample a flat grey image (cheap but valid: correct tars, records,
                 checksums and partials; 5 GB instead of 41 GB)
     adopt       `alexnet preprocess` over that OUT: every shard complete, none seen
                 before on this disk, so each tar's sha256 is read (a copied OUT)
     rerun       the same again: unchanged, what a nightly re-run costs
     verify      `alexnet verify OUT` (every sha256), and `--deep` per shard
     stats       `alexnet stats OUT`: the reduction over the train shards' partials
     replan      `--dry-run` after 1% of the train files changed (mtime)
     cache       the pipeline flow's cache check on the unchanged tree
3. Writes WORKDIR/scale.json and prints a table; removes WORKDIR unless `--keep`.

Smaller runs (`--train 50000 --val 2000`) check the script in a minute.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import TreePeak, _make_one, machine
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CLASSES = 1000


def build_source(work: Path, n_train: int, n_val: int, pool: int) -> dict:
    """The tree of hard links (see the module docstring); returns its timings."""
    started = time.perf_counter()
    pool_dir = work / "pool"
    pool_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(i, str(pool_dir / f"{i}.JPEG")) for i in range(pool)]
    from multiprocessing import Pool

    with Pool(os.cpu_count()) as p:
        p.map(_make_one, jobs, chunksize=16)
    pool_s = time.perf_counter() - started
    src = work / "src"
    wnids = [f"n{1440000 + i:08d}" for i in range(CLASSES)]
    started = time.perf_counter()
    for c, wnid in enumerate(wnids):
        folder = src / "train" / wnid
        folder.mkdir(parents=True)
        for i in range(c, n_train, CLASSES):
            os.link(jobs[i % pool][1], folder / f"{wnid}_{i}.JPEG")
    (src / "val").mkdir()
    rows = []
    for i in range(n_val):
        name = f"ILSVRC2012_val_{i + 1:08d}"
        os.link(jobs[(i * 7) % pool][1], src / "val" / f"{name}.JPEG")
        rows.append(f"{name},{wnids[i % CLASSES]} 0 0 10 10\n")
    (src / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "".join(rows))
    (src / "LOC_synset_mapping.txt").write_text("".join(f"{w} class {w}\n" for w in wnids))
    return {"pool_s": round(pool_s, 1), "links_s": round(time.perf_counter() - started, 1)}


def measure(name: str, cmd: list[str], results: dict, env: dict | None = None) -> str:
    """Run `cmd`, record its wall time and memory under `name`; return its stdout."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
    )
    peak = TreePeak(proc.pid)
    out, err = proc.communicate()
    wall = time.perf_counter() - started
    memory = peak.stop()
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed ({proc.returncode}):\n{err[-3000:]}")
    results[name] = {"wall_s": round(wall, 2), **memory}
    print(f"{name:<8} {wall:8.1f} s  {json.dumps(memory)}", flush=True)
    return out


# --- steps that run in their own process (`scale.py --step NAME ...`) ----------------


def step_listing(src: str) -> None:
    from preprocessing.source import scan

    tree = scan(src)
    print(json.dumps({"inputs": tree.n_inputs, "fingerprint": tree.fingerprint()}))


def step_cache(src: str, out: str) -> None:
    from flows.pipeline import has_manifest, has_stats, prepare_settings, source_fingerprint
    from shards.manifest import read_manifest, train_shard_digests

    settings = prepare_settings()
    fingerprint = source_fingerprint(src, out)
    made = has_manifest(out, fingerprint, settings)
    current = has_stats(out, train_shard_digests(read_manifest(out)), "pixel/255")
    print(json.dumps({"manifest_current": made, "stats_current": current}))


_MODE = {"real": False}


def _cheap_processor(settings):  # replaces preprocessing.prepare._processor in `step_write`
    import hashlib

    from preprocessing.image import ImageProcessor

    real, cache = ImageProcessor(settings), {}
    flat = io.BytesIO()
    Image.new("RGB", (320, 256), (118, 121, 109)).save(flat, "JPEG", quality=90)
    grey = real(flat.getvalue())

    def process(data: bytes):
        if not _MODE["real"]:
            return grey
        key = hashlib.md5(data).digest()
        if key not in cache:
            cache[key] = real(data)
        return cache[key]

    return process


def _write_one(args: tuple) -> None:
    from preprocessing import prepare

    src, out, plan, image, wnids, real = args
    src, out = str(Path(src).resolve()), str(Path(out).resolve())
    _MODE["real"] = real
    prepare.write_shard(src, out, plan, image, wnids)


def step_write(src: str, out: str, real_shards: int) -> None:
    """The complete OUT, through the real plan and `write_shard` (see the docstring)."""
    from multiprocessing import get_context

    from preprocessing import prepare
    from preprocessing.plan import PrepareSettings, plan_shards
    from preprocessing.source import scan

    prepare._processor = _cheap_processor  # inherited by the forked workers
    settings = PrepareSettings()
    tree = scan(src)
    plans = plan_shards(tree, settings)
    wnids = tuple(w for w, _ in tree.classes)
    jobs = [
        (src, out, plan, settings.image, wnids, plan.split == "train" and plan.index < real_shards)
        for split_plans in plans.values()
        for plan in split_plans
    ]
    with get_context("fork").Pool(os.cpu_count()) as pool:
        for i, _ in enumerate(pool.imap_unordered(_write_one, jobs, chunksize=4)):
            if i % 100 == 0:
                print(f"written {i}/{len(jobs)} shards", file=sys.stderr, flush=True)
    print(json.dumps({"shards": len(jobs)}))


def step_deep(out: str, shards: int) -> None:
    """--deep's work on the first `shards` train shards (the real ones), per shard."""
    from shards.reader import iter_grouped, shard_paths

    paths = shard_paths(out, "train")[:shards]
    started = time.perf_counter()
    n = sum(1 for _ in iter_grouped(paths))
    seconds = time.perf_counter() - started
    print(json.dumps({"shards": len(paths), "samples": n, "s_per_shard": seconds / len(paths)}))


def touch_one_percent(src: Path) -> int:
    """Change every 100th train file: a copy of its own (the links share one inode,
    so touching a link would change every file behind it) with a later mtime."""
    changed = 0
    later = time.time() + 3600
    for folder in sorted((src / "train").iterdir()):
        names = sorted(e.name for e in os.scandir(folder))
        for name in names[::100]:
            path = folder / name
            data = path.read_bytes()
            path.unlink()
            path.write_bytes(data)
            os.utime(path, (later, later))
            changed += 1
    return changed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("work", type=Path, help="a scratch folder (about 7 GB at full size)")
    p.add_argument("--train", type=int, default=1_281_167, help="train files (ImageNet's)")
    p.add_argument("--val", type=int, default=50_000, help="val files (ImageNet's)")
    p.add_argument("--pool", type=int, default=3000, help="distinct JPEGs behind the links")
    p.add_argument("--real-shards", type=int, default=3, help="train shards of real pixels")
    p.add_argument("--keep", action="store_true", help="leave WORKDIR in place")
    p.add_argument("--step", nargs="+", help=argparse.SUPPRESS)  # internal: one measured step
    a = p.parse_args()
    if a.step:
        steps = {"listing": step_listing, "cache": step_cache, "write": step_write}
        steps["deep"] = step_deep
        name, *rest = a.step
        args = [int(x) if x.isdigit() else x for x in rest]
        steps[name](*args)
        return

    work = a.work.resolve()
    if work.exists() and any(work.iterdir()):
        raise SystemExit(f"{work} is not empty")
    src, out, results = work / "src", work / "out", {"machine": machine()}
    me = [sys.executable, str(Path(__file__).resolve())]
    alexnet = [str(BIN / "alexnet")]
    try:
        results["build"] = build_source(work, a.train, a.val, a.pool)
        print(f"source: {a.train} + {a.val} links to {a.pool} JPEGs {results['build']}")
        measure("listing", [*me, str(work), "--step", "listing", str(src)], results)
        measure("plan", [*alexnet, "preprocess", str(src), str(out), "--dry-run"], results)
        cmd = [*me, str(work), "--step", "write", str(src), str(out), str(a.real_shards)]
        measure("(write)", cmd, results)
        measure("adopt", [*alexnet, "preprocess", str(src), str(out)], results)
        rerun = measure("rerun", [*alexnet, "preprocess", str(src), str(out)], results)
        results["rerun_output"] = rerun.strip().splitlines()
        measure("verify", [*alexnet, "verify", str(out)], results)
        deep = measure("deep", [*me, str(work), "--step", "deep", str(out), "3"], results)
        results["deep_per_shard"] = json.loads(deep)
        measure("stats", [*alexnet, "stats", str(out)], results)
        measure("cache", [*me, str(work), "--step", "cache", str(src), str(out)], results)
        results["changed_files"] = touch_one_percent(src)
        cmd = [*alexnet, "preprocess", str(src), str(out), "--dry-run"]
        replan = measure("replan", cmd, results)
        results["replan_output"] = replan.strip().splitlines()
        size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
        results["out_gib"] = round(size / 2**30, 2)
    finally:
        (a.work / "scale.json").write_text(json.dumps(results, indent=1) + "\n")
        print(json.dumps(results, indent=1))
        if not a.keep:
            shutil.rmtree(work / "src", ignore_errors=True)
            shutil.rmtree(work / "out", ignore_errors=True)
            shutil.rmtree(work / "pool", ignore_errors=True)


if __name__ == "__main__":
    main()
