"""What the benchmark scripts share: the ImageNet-like corpus, memory sampling, the machine."""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import platform
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
from synthetic import photo

from preprocessing.cluster import default_workers


def _make_one(args: tuple[int, str]) -> None:
    i, path = args
    rng = np.random.default_rng(i)
    u = rng.uniform()
    if u < 0.8:
        w, h = int(rng.normal(500, 20)), int(rng.normal(375, 20))
    elif u < 0.9:
        w, h = int(rng.uniform(1000, 1600)), int(rng.uniform(750, 1200))
    else:
        w, h = int(rng.uniform(200, 400)), int(rng.uniform(150, 300))
    if rng.uniform() < 0.3:
        w, h = h, w
    photo(w, h, rng).save(path, "JPEG", quality=90)


def build_corpus(root: Path, n: int) -> Path:
    """An ImageNet-shaped train/ tree of n images in 10 classes (cached in `root`)."""
    src = root / f"corpus-{n}"
    if (src / "done").exists():
        return src
    jobs = []
    for i in range(n):
        wnid = f"n{1441000 + 1000 * (i % 10):08d}"
        (src / "train" / wnid).mkdir(parents=True, exist_ok=True)
        jobs.append((i, str(src / "train" / wnid / f"{wnid}_{i}.JPEG")))
    with mp.Pool(default_workers()) as pool:
        pool.map(_make_one, jobs, chunksize=16)
    (src / "done").touch()
    return src


class PeakRSS:
    """Samples the summed RSS of this process and all its descendants."""

    def __init__(self, every_s: float = 0.25) -> None:
        self.every_s, self.peak, self._stop = every_s, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):  # a child may just have exited
                    total += p.memory_info().rss
            self.peak = max(self.peak, total)
            time.sleep(self.every_s)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class TreePeak:
    """Peak RSS per process of a process tree, sampled every 0.2 s."""

    def __init__(self, pid: int) -> None:
        self.pid, self.per_pid, self.total = pid, {}, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                root = psutil.Process(self.pid)
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                procs = []
            total = 0
            for p in procs:
                try:
                    rss = p.memory_info().rss
                except psutil.Error:
                    continue
                total += rss
                self.per_pid[p.pid] = max(self.per_pid.get(p.pid, 0), rss)
            self.total = max(self.total, total)
            time.sleep(0.2)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        others = [v for k, v in self.per_pid.items() if k != self.pid]
        mib = 2**20
        return {
            "main_mib": round(self.per_pid.get(self.pid, 0) / mib),
            "largest_other_mib": round(max(others, default=0) / mib),
            "processes": len(self.per_pid),
            "tree_mib": round(self.total / mib),
        }


def parser(doc: str | None, dry_run: bool = False) -> argparse.ArgumentParser:
    """A benchmark's argument parser: its docstring as the help, and the arguments every
    benchmark takes: --repeats, --workdir (its cached corpora), and --dry-run if asked."""
    ap = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "alexnet-bench"))
    if dry_run:
        ap.add_argument("--dry-run", action="store_true", help="tiny sizes: checks the script runs")
    return ap


def machine() -> str:
    cores = default_workers()
    return (
        f"{platform.processor() or platform.machine()}, {cores} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}"
    )
