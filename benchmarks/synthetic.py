"""Photograph-like images and a ready data root built from them, with no preprocess stage.

Imports only NumPy, Pillow, the project's `shards` package and its statistics
code (`preprocessing.stats`, which imports no Dask until a cluster starts), so
that the GPU scripts can build their data on a host that has torch, NumPy and
Pillow but none of the data stages' dependencies (Dask, Prefect).

    write_data_root(out, n_train=25_000, n_val=1_000)   # shards, manifest, statistics

The images are made at 256x256 and stored as the preprocess stage stores them
(JPEG quality 95), so a reader decodes what it would decode from ImageNet's
shards: smooth fields at four scales, hard-edged objects, grain (not noise,
not flat colour; about 30-40 KB each).
"""

from __future__ import annotations

import io
import json
import multiprocessing as mp
import os
from pathlib import Path

import numpy as np
from PIL import Image

from shards.atomic import write_json
from shards.format import MANIFEST, ShardWriter, record_path, shard_dir, shard_name
from shards.stats import Stats, write_stats

SIZE = 256


def photo(w: int, h: int, rng: np.random.Generator) -> Image.Image:
    """Photograph-like: smooth fields at several scales, edges, grain."""
    out = np.zeros((h, w, 3), np.float32)
    for cells, amp in ((3, 80), (10, 45), (40, 25), (160, 12)):
        small = rng.uniform(0, 255, (cells, max(2, cells * w // h), 3)).astype(np.uint8)
        big = Image.fromarray(small).resize((w, h), Image.BICUBIC)
        out += (np.asarray(big, np.float32) / 127.5 - 1) * amp
    for _ in range(6):  # hard-edged objects
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        out[y0 : y0 + rng.integers(10, h // 2), x0 : x0 + rng.integers(10, w // 2)] += rng.uniform(
            -60, 60, 3
        )
    out += 120 + rng.normal(0, 5, out.shape)
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), "RGB")


def _write_shard(job: tuple[str, str, int, int, int, int]) -> dict:
    folder, split, index, first, count, classes = job
    path = Path(folder) / shard_name(split, index)
    with ShardWriter(path) as writer:
        for i in range(first, first + count):
            rng = np.random.default_rng([index, i, split == "val"])
            buf = io.BytesIO()
            photo(SIZE, SIZE, rng).save(buf, "JPEG", quality=95)
            writer.write(f"{split}/{i:08d}", buf.getvalue(), "jpg", i % classes, b"{}")
    record = {"shard": path.name, "count": count, "sha256": writer.sha256, "bytes": writer.bytes}
    write_json(record_path(path), {**record, "checksums": writer.checksums})  # what readers check
    return record


def _stats(shards: list[dict], folder: Path) -> Stats:
    """The statistics stage's own mean image and PCA (`preprocessing.stats`), from the
    pixels of the first training shard only (enough for a benchmark)."""
    from preprocessing.stats import finish, pixels_partials

    total = pixels_partials(folder / shards[0]["shard"], SIZE)
    return finish(
        total, "pixel/255", [{"shard": s["shard"], "sha256": s["sha256"]} for s in shards]
    )


def write_data_root(
    out: str | os.PathLike,
    n_train: int,
    n_val: int,
    classes: int = 1000,
    per_shard: int = 250,
    workers: int | None = None,
    repeat: int = 1,
) -> Path:
    """Shards of both splits, manifest.json and stats/ under `out`, ready for `train()`.

    `repeat` lists the training shards that many times (as hard links under
    other names): an epoch of repeat x n_train samples for the cost of making
    n_train images.
    """
    out = Path(out)
    workers = workers or len(os.sched_getaffinity(0))
    jobs, splits = [], {}
    for split, n in (("train", n_train), ("val", n_val)):
        folder = shard_dir(out, split)
        folder.mkdir(parents=True, exist_ok=True)
        for index, first in enumerate(range(0, n, per_shard)):
            jobs.append((str(folder), split, index, first, min(per_shard, n - first), classes))
    with mp.get_context("fork").Pool(workers) as pool:
        written = pool.map(_write_shard, jobs, chunksize=1)
    for split in ("train", "val"):
        splits[split] = [w for w, j in zip(written, jobs, strict=True) if j[1] == split]
    base = list(splits["train"])
    train_dir = shard_dir(out, "train")
    for r in range(1, repeat):
        for i, s in enumerate(base):
            name = shard_name("train", r * len(base) + i)
            os.link(train_dir / s["shard"], train_dir / name)
            os.link(record_path(train_dir / s["shard"]), record_path(train_dir / name))
            splits["train"].append({**s, "shard": name})
    manifest = {
        "format_version": 1,
        "classes": [
            {"index": c, "wnid": f"n{c:08d}", "name": f"class {c}"} for c in range(classes)
        ],
        "splits": {
            split: {"count": sum(s["count"] for s in shards), "shards": shards}
            for split, shards in splits.items()
        },
        "source": {"path": "synthetic (benchmarks/synthetic.py)"},
        "settings": {"size": 256, "format": "jpg"},  # what readers look up; no preprocess ran
    }
    write_stats(out, _stats(splits["train"], train_dir))
    write_json(out / MANIFEST, manifest)
    return out


if __name__ == "__main__":  # a quick look: python benchmarks/synthetic.py OUT
    import sys

    root = write_data_root(sys.argv[1], 500, 100, classes=10)
    print(json.dumps(json.loads((root / MANIFEST).read_text())["splits"]["train"]["count"]))
