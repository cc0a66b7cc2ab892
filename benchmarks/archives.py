"""Listing ILSVRC-2012's train tar in place at ImageNet's size: time and memory.

    .venv/bin/python benchmarks/archives.py [--classes 1000] [--per-class 1281] [--dry-run]

Writes (once, cached in --workdir) a train tar of the real shape: `--classes`
class tars `<wnid>.tar`, each of `--per-class` members `<wnid>_<n>.JPEG`, in
the real names; each member holds 200 bytes (listing reads only the headers, so
the images' size changes nothing but the seeks' length: 1.28M members make a
0.9 GB tar instead of 138 GB). Then, in a fresh process each time (3 runs, the
median): `preprocessing.archives.list_train` over it, its wall time and the
process's peak resident memory, against the same process that only imports
the module (the baseline memory). Prints one JSON object; benchmarks/README.md
records it.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from common import machine

_LIST = """
import resource, sys, time
from preprocessing.archives import list_train
t = time.perf_counter()
members, rejects = list_train(sys.argv[1]) if sys.argv[2] == "list" else ([], [])
seconds = time.perf_counter() - t
print(len(members), len(rejects), seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


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


def run(tar: Path, what: str) -> tuple[int, int, float, int]:
    done = subprocess.run(
        [sys.executable, "-c", _LIST, str(tar), what], capture_output=True, text=True, check=True
    )
    n, rejects, seconds, rss_kib = done.stdout.split()
    return int(n), int(rejects), float(seconds), int(rss_kib)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--per-class", type=int, default=1281)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes: checks the script runs")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "alexnet-bench"))
    args = ap.parse_args()
    if args.dry_run:
        args.classes, args.per_class, args.repeats = 5, 20, 1
    tar = Path(args.workdir) / f"train-tar-{args.classes}x{args.per_class}.tar"
    tar.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if not tar.exists():
        write_train_tar(tar, args.classes, args.per_class)
    made = time.perf_counter() - t0
    listed, bare = [], []
    for _ in range(args.repeats):
        listed.append(run(tar, "list"))
        bare.append(run(tar, "import"))
    n = listed[0][0]
    assert n == args.classes * args.per_class and listed[0][1] == 0
    seconds = statistics.median(r[2] for r in listed)
    peak = statistics.median(r[3] for r in listed) / 1024
    base = statistics.median(r[3] for r in bare) / 1024
    result = {
        "machine": machine(),
        "members": n,
        "class_tars": args.classes,
        "tar_bytes": tar.stat().st_size,
        "write_s": round(made, 1),
        "list_s": round(seconds, 2),
        "us_per_member": round(1e6 * seconds / n, 2),
        "peak_rss_mib": round(peak),
        "import_only_rss_mib": round(base),
        "bytes_per_member": round((peak - base) * 2**20 / n),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
