"""Per-shard partial statistics: exact integer sums of the pixels as stored.

Preprocessing accumulates them from the same decoded pixels that a reader of
the shard gets back, so the statistics stage reduces them without another pass
over the images. All accumulators are integers, so sums over any number of
shards, in any order, are exact:

- `pixel_sum` (H, W, 3) uint64: per-pixel, per-channel sum (the mean image's numerator)
- `rgb_sum` (3,) int64: sum of every pixel's RGB vector (derived from `pixel_sum`)
- `rgb_outer` (3, 3) int64: sum of x xᵀ over every pixel x (the covariance's second moment)
- `n_images`, `n_pixels`
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np

from shards.atomic import atomic_writer

try:  # the one-pass C loop (shards/_sums.c), built by `pip install` when a compiler is there
    from shards import _sums
except ImportError:  # pragma: no cover - the same sums in NumPy below
    _sums = None

# Per image, sum(x_c * x_d) <= 255² * 256² < 2**53: float64 dot products of
# uint8 values are exact integers, and BLAS computes them fast.
_FIXED_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
# Pixel sums are staged in uint16, exact for 257 images (255 * 257 = 65535) and
# the cheapest add there is (measured: uint16 += uint8 0.04 ms an image, uint32
# 0.07 ms), then flushed into a uint32 total, exact for this many images
# (255 * n < 2**32); past it, the total widens to uint64.
_STAGE_IMAGES = (2**16 - 1) // 255
_UINT32_IMAGES = (2**32 - 1) // 255
_PAIRS = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))


def _numpy_add(pixels: np.ndarray, stage: np.ndarray) -> list[int]:
    """What shards/_sums.c does: add `pixels` to `stage`; return the six sums of x_c x_d."""
    np.add(stage, pixels, out=stage, casting="unsafe")
    # Planar float64 rows and six dot products: about twice as fast as x.T @ x
    # on (N, 3) data, and exact (see above).
    planes = pixels.reshape(-1, 3).T.astype(np.float64)
    return [int(planes[i] @ planes[j]) for i, j in _PAIRS]


class Partials:
    """Exact sums over some images; `add` one image, `merge` another shard's sums."""

    def __init__(self, pixel_sum: np.ndarray, rgb_outer: np.ndarray, n_images: int = 0) -> None:
        self._total = pixel_sum
        self._stage: np.ndarray | None = None
        self._staged = 0
        self.rgb_outer = rgb_outer
        self.n_images = n_images

    @classmethod
    def zeros(cls, size: int = 256) -> Partials:
        """Empty accumulators for `size` x `size` RGB images."""
        return cls(np.zeros((size, size, 3), np.uint32), np.zeros((3, 3), np.int64))

    @property
    def pixel_sum(self) -> np.ndarray:
        """Per-pixel, per-channel sums (uint32 or uint64), staged sums included."""
        self._flush()
        return self._total

    def _flush(self) -> None:
        if not self._staged:
            return
        if self._total.dtype == np.uint32 and self.n_images > _UINT32_IMAGES:
            self._total = self._total.astype(np.uint64)
        np.add(self._total, self._stage, out=self._total, casting="unsafe")
        self._stage.fill(0)
        self._staged = 0

    @property
    def n_pixels(self) -> int:
        return self.n_images * self._total.shape[0] * self._total.shape[1]

    @property
    def rgb_sum(self) -> np.ndarray:
        return self.pixel_sum.sum(axis=(0, 1), dtype=np.uint64).astype(np.int64)

    def add(self, pixels: np.ndarray) -> None:
        """Accumulate one (H, W, 3) uint8 image."""
        if pixels.dtype != np.uint8 or pixels.shape != self._total.shape:
            raise ValueError(
                f"expected uint8 {self._total.shape}, got {pixels.dtype} {pixels.shape}"
            )
        if self._stage is None:
            self._stage = np.zeros(self._total.shape, np.uint16)
        elif self._staged == _STAGE_IMAGES:
            self._flush()
        self._staged += 1
        self.n_images += 1
        if _sums is not None and pixels.flags.c_contiguous:
            moments = _sums.add(pixels, self._stage)
        else:
            moments = _numpy_add(pixels, self._stage)
        for (i, j), v in zip(_PAIRS, moments, strict=True):
            self.rgb_outer[i, j] += v
            if i != j:
                self.rgb_outer[j, i] += v

    def merge(self, other: Partials) -> None:
        """Add another shard's sums to these."""
        self._total = self.pixel_sum.astype(np.uint64) + other.pixel_sum.astype(np.uint64)
        self.rgb_outer = self.rgb_outer + other.rgb_outer
        self.n_images += other.n_images

    def copy(self) -> Partials:
        """Independent sums equal to these, with a uint64 pixel sum (ready to merge into)."""
        return Partials(self.pixel_sum.astype(np.uint64), self.rgb_outer.copy(), self.n_images)

    def to_bytes(self) -> bytes:
        """A deterministic .npz (fixed timestamps, fixed member order)."""
        arrays = {
            # uint32 whenever the sums fit (any shard of under 16 million images).
            "pixel_sum": self.pixel_sum.astype(
                np.uint32 if int(self.pixel_sum.max(initial=0)) < 2**32 else np.uint64
            ),
            "rgb_sum": self.rgb_sum,
            "rgb_outer": self.rgb_outer,
            "n_images": np.int64(self.n_images),
            "n_pixels": np.int64(self.n_pixels),
        }
        buf = io.BytesIO()
        # Stored, not deflated: 786 KB a 256x256 shard instead of 380 KB, but
        # deflating took 16 ms a shard (0.16 ms an image at 100 images a shard),
        # a sixth of a decode, on the stats stage's from-pixels path.
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
            for name, arr in arrays.items():
                member = io.BytesIO()
                np.lib.format.write_array(member, np.asarray(arr), allow_pickle=False)
                z.writestr(
                    zipfile.ZipInfo(f"{name}.npy", date_time=_FIXED_ZIP_DATE), member.getvalue()
                )
        return buf.getvalue()

    def save(self, path: str | os.PathLike) -> None:
        """Atomically write the .npz to `path`."""
        with atomic_writer(path) as f:
            f.write(self.to_bytes())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Partials:
        """Read a file written by `save`, checking that it is consistent."""
        with np.load(Path(path), allow_pickle=False) as z:
            p = cls(
                z["pixel_sum"].astype(np.uint64),
                z["rgb_outer"].astype(np.int64),
                int(z["n_images"]),
            )
            if int(z["n_pixels"]) != p.n_pixels or not np.array_equal(z["rgb_sum"], p.rgb_sum):
                raise ValueError(f"{path}: inconsistent partial statistics")
        return p
