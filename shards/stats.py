"""The statistics files of a data root, and their reader.

    OUT/stats/mean.npy   float32 (256, 256, 3), HWC, RGB, 0-255 scale: the mean
                         training image as stored in the shards
    OUT/stats/pca.json   eigenpairs of the 3x3 covariance of RGB pixel values:
        eigenvalues      3, descending
        eigenvectors     3 unit vectors; row i belongs to eigenvalue i; sign rule:
                         each vector's largest-magnitude component is positive
        covariance       the 3x3 matrix itself (population covariance)
        scale            what the covariance was taken on: "pixel/255" (default)
                         or "pixel" (0-255)
        mean_rgb         per-channel mean, 0-255 scale
        n_images, n_pixels
        shards           the train shards it covers: name and sha256

Training reads them through `read_stats`, which checks them against the
manifest so that stale statistics are an error, not a silent mistake.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shards.atomic import write_bytes, write_json
from shards.manifest import Manifest

STATS_DIR = "stats"
MEAN = "mean.npy"
PCA = "pca.json"
SCALES = {"pixel/255": 255.0, "pixel": 1.0}
SIGN_RULE = "each eigenvector's largest-magnitude component is positive"
_PCA_KEYS = (
    "eigenvalues",
    "eigenvectors",
    "covariance",
    "scale",
    "mean_rgb",
    "n_images",
    "n_pixels",
    "shards",
)


def stats_dir(out: str | os.PathLike) -> Path:
    return Path(out) / STATS_DIR


@dataclass(frozen=True)
class Stats:
    mean: np.ndarray  # (H, W, 3) float32, 0-255
    eigenvalues: np.ndarray  # (3,) descending, on `scale`
    eigenvectors: np.ndarray  # (3, 3), row i for eigenvalue i
    covariance: np.ndarray  # (3, 3), on `scale`
    scale: str
    mean_rgb: np.ndarray  # (3,) 0-255
    n_images: int
    n_pixels: int
    shards: list[dict]  # [{"shard", "sha256"}]


def fix_signs(vectors: np.ndarray) -> np.ndarray:
    """Flip each row so that its largest-magnitude component is positive (SIGN_RULE)."""
    vectors = np.array(vectors, dtype=np.float64)
    for row in vectors:
        if row[np.argmax(np.abs(row))] < 0:
            row *= -1
    return vectors


def _check_values(
    out: str | os.PathLike,
    folder: Path,
    stats: Stats,
    meta: dict,
    mean_bytes: bytes,
    manifest: Manifest | None,
) -> None:
    """The statistics hold numbers a model can use: mean.npy is the file pca.json was
    written with, every value is finite, the eigenvalues are not negative, and the mean
    image is the size of the stored images."""
    again = f"run `alexnet stats {out}` again"
    recorded = meta.get("mean_sha256")  # absent in statistics written before it was
    if recorded is not None and recorded != hashlib.sha256(mean_bytes).hexdigest():
        raise ValueError(f"{folder / MEAN} is not the mean image written with {PCA}; {again}")
    for name, values in (
        (MEAN, stats.mean),
        ("eigenvalues", stats.eigenvalues),
        ("eigenvectors", stats.eigenvectors),
        ("covariance", stats.covariance),
    ):
        bad = int(np.size(values) - np.isfinite(values).sum())
        if bad:
            raise ValueError(f"{folder}: {name} holds {bad} NaN or infinite value(s); {again}")
    if (stats.eigenvalues < -1e-9).any():
        raise ValueError(f"{folder / PCA}: a negative eigenvalue; {again}")
    size = manifest.settings.get("size") if manifest is not None else None
    if size is not None and stats.mean.shape != (size, size, 3):
        raise ValueError(
            f"{folder / MEAN}: a {stats.mean.shape} mean image for {size}x{size} images; {again}"
        )


def write_stats(out: str | os.PathLike, stats: Stats) -> None:
    """Write mean.npy and then pca.json, each atomically."""
    buf = io.BytesIO()
    np.save(buf, stats.mean.astype(np.float32), allow_pickle=False)
    write_bytes(stats_dir(out) / MEAN, buf.getvalue())
    write_json(
        stats_dir(out) / PCA,
        {
            "format_version": 1,
            "mean_sha256": hashlib.sha256(buf.getvalue()).hexdigest(),  # mean.npy's bytes
            "eigenvalues": stats.eigenvalues.tolist(),
            "eigenvectors": stats.eigenvectors.tolist(),
            "sign_rule": SIGN_RULE,
            "covariance": stats.covariance.tolist(),
            "scale": stats.scale,
            "mean_rgb": stats.mean_rgb.tolist(),
            "n_images": stats.n_images,
            "n_pixels": stats.n_pixels,
            "shards": stats.shards,
        },
    )


def read_stats(out: str | os.PathLike, manifest: Manifest | None = None) -> Stats:
    """Read and check the statistics; with `manifest`, insist they cover its train shards."""
    folder = stats_dir(out)
    try:
        meta = json.loads((folder / PCA).read_text())
        mean_bytes = (folder / MEAN).read_bytes()
        mean = np.load(io.BytesIO(mean_bytes), allow_pickle=False)
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"{err.filename} not found: run `alexnet stats {out}` first"
        ) from None
    except ValueError as err:
        raise ValueError(f"{folder}: unreadable statistics ({err})") from None
    missing = [k for k in _PCA_KEYS if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise ValueError(
            f"{folder / PCA} lacks {', '.join(missing)}: run `alexnet stats {out}` again"
        )
    stats = Stats(
        mean=mean,
        eigenvalues=np.array(meta["eigenvalues"], dtype=np.float64),
        eigenvectors=np.array(meta["eigenvectors"], dtype=np.float64),
        covariance=np.array(meta["covariance"], dtype=np.float64),
        scale=meta["scale"],
        mean_rgb=np.array(meta["mean_rgb"], dtype=np.float64),
        n_images=int(meta["n_images"]),
        n_pixels=int(meta["n_pixels"]),
        shards=meta["shards"],
    )
    if mean.dtype != np.float32 or mean.ndim != 3 or mean.shape[2] != 3:
        raise ValueError(
            f"{folder / MEAN}: expected float32 (H, W, 3), got {mean.dtype} {mean.shape}"
        )
    if stats.eigenvalues.shape != (3,) or stats.eigenvectors.shape != (3, 3):
        raise ValueError(f"{folder / PCA}: expected 3 eigenvalues and a 3x3 eigenvector matrix")
    if stats.scale not in SCALES:
        raise ValueError(f"{folder / PCA}: unknown scale {stats.scale!r}")
    _check_values(out, folder, stats, meta, mean_bytes, manifest)
    if manifest is not None:
        expected = [{"shard": s.shard, "sha256": s.sha256} for s in manifest.shards("train")]
        if stats.shards != expected:
            raise ValueError(
                f"{folder} does not describe the train shards of {out}/manifest.json (they were "
                f"re-processed since); run `alexnet stats {out}` again"
            )
    return stats
