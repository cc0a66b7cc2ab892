"""Indexing ILSVRC-2012's train tar in place at ImageNet's size: time and memory.

    .venv/bin/python benchmarks/archives.py [--classes 1000] [--per-class 1281] [--dry-run]

Writes (once, cached in --workdir) a source of the real shape: a train tar of
`--classes` class tars `<wnid>.tar`, each of `--per-class` members
`<wnid>_<n>.JPEG` in the real names, and a devkit naming those classes. Each
member holds 200 bytes: indexing reads every byte (for the CRC-32s), so on the
real 138 GB the read itself adds the disk's time for 138 GB, spread over the
workers; what this measures is the fixed cost per member and per class tar
(1.28M members make a 1.3 GB tar). Then, each in a fresh process (`--repeats`
runs of each, interleaved, the medians):

    cold-1    `scan(SRC, ("train",))` with an empty OUT/.index, listed in one process
    cold-2    the same on a Dask cluster of 2 workers (one task per class tar)
    warm      the same with the index complete: what every later run costs
    import    the process that only imports `preprocessing.source` (baseline memory)

with its wall time, the peak RSS of its main process (its own count) and of its
largest other process (sampled: a Dask worker, holding one class tar at a time,
so flat in the number of class tars). Prints one JSON object; benchmarks/README.md records it.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from common import TreePeak, machine, parser

from preprocessing.devkit import DEVKIT, write_devkit

_SCAN = """
import resource, sys, time
from pathlib import Path
from preprocessing.cluster import StageCluster
from preprocessing.index import Indexer
from preprocessing.source import scan
src, index, how = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
t = time.perf_counter()
n = 0
if how != "import":
    workers = 2 if how == "cold-2" else 1
    with StageCluster(workers) as cluster:
        tree = scan(src, ("train",), indexer=Indexer(index, True, cluster))
    n, rejects = len(tree.files["train"]), len(tree.rejects)
    assert not rejects, tree.rejects[:3]
print(n, time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""
STEPS = ("cold-1", "cold-2", "warm", "import")


def write_train_tar(path: Path, classes: int, per_class: int) -> None:
    payload = b"\xff\xd8" + bytes(198)

    def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime = len(data), 1_300_000_000
        tar.addfile(info, io.BytesIO(data))

    tmp = path.with_suffix(".tmp")
    with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as out:
        for c in range(classes):
            wnid = f"n{c:08d}"
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w", format=tarfile.USTAR_FORMAT) as tar:
                for i in range(per_class):
                    add(tar, f"{wnid}_{i}.JPEG", payload)
            add(out, f"{wnid}.tar", inner.getvalue())
    os.replace(tmp, path)


def write_source(src: Path, classes: int, per_class: int) -> None:
    """The train tar (see `write_train_tar`) and a devkit of its classes (no val images)."""
    src.mkdir(parents=True, exist_ok=True)
    write_train_tar(src / "ILSVRC2012_img_train.tar", classes, per_class)
    synsets = [(c + 1, f"n{c:08d}", f"class {c}", 0) for c in range(classes)]
    write_devkit(src / DEVKIT, synsets, [])  # last: the source is complete


def run(src: Path, index: Path, step: str) -> dict:
    """One step in a fresh process (the index emptied first for a cold one)."""
    if step.startswith("cold"):
        shutil.rmtree(index, ignore_errors=True)
    proc = subprocess.Popen(
        [sys.executable, "-c", _SCAN, str(src), str(index), step], stdout=subprocess.PIPE, text=True
    )
    peak = TreePeak(proc.pid)
    out, _ = proc.communicate()
    memory = peak.stop()
    if proc.returncode:
        raise SystemExit(f"{step} failed (exit {proc.returncode})")
    n, seconds, rss_kib = out.split()
    # the main process's own peak (exact); the workers' from sampling
    return {"members": int(n), "s": float(seconds), **memory, "main_mib": int(rss_kib) / 1024}


def main() -> None:
    ap = parser(__doc__, dry_run=True)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--per-class", type=int, default=1281)
    args = ap.parse_args()
    if args.dry_run:
        args.classes, args.per_class, args.repeats = 5, 20, 1
    work = Path(args.workdir)
    src = work / f"official-{args.classes}x{args.per_class}"
    t0 = time.perf_counter()
    if not (src / DEVKIT).exists():
        shutil.rmtree(src, ignore_errors=True)
        write_source(src, args.classes, args.per_class)
    made = time.perf_counter() - t0
    index = work / f"index-{args.classes}x{args.per_class}"
    runs: dict[str, list[dict]] = {step: [] for step in STEPS}
    for _ in range(args.repeats):
        for step in STEPS:
            runs[step].append(run(src, index, step))
    n = args.classes * args.per_class
    assert all(r["members"] == n for step in STEPS[:3] for r in runs[step])
    result = {
        "machine": machine(),
        "members": n,
        "class_tars": args.classes,
        "tar_bytes": (src / "ILSVRC2012_img_train.tar").stat().st_size,
        "write_s": round(made, 1),
        "index_files": len(list(index.rglob("*.json"))),
        "index_bytes": sum(p.stat().st_size for p in index.rglob("*.json")),
    }
    base = statistics.median(r["main_mib"] for r in runs["import"])
    for step in STEPS:
        med = {k: statistics.median(r[k] for r in runs[step]) for k in runs[step][0]}
        result[step] = {
            "s": round(med["s"], 2),
            "main_mib": round(med["main_mib"]),
            "largest_other_mib": med["largest_other_mib"],
        }
        if step != "import":
            result[step]["us_per_member"] = round(1e6 * med["s"] / n, 2)
            result[step]["main_bytes_per_member"] = round((med["main_mib"] - base) * 2**20 / n)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
