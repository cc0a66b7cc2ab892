"""Stored images as pixels: the one decode and the one centre crop every reader uses.

Preprocessing (its re-decode of what it stored, the statistics from pixels),
the training loader, evaluation and the figures all see a stored image through
`decode_rgb`, and its centre through `center_crop`, so they cannot drift apart.
(The loader's workers decode JPEGs faster through training/_jpeg.c, with the
same pixels, and come here for anything else.)
"""

from __future__ import annotations

import io
from typing import TypeVar

import numpy as np
from PIL import Image

T = TypeVar("T")


def decode_rgb(data: bytes) -> np.ndarray:
    """An encoded image (any format Pillow reads) as (H, W, 3) uint8 RGB."""
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return np.asarray(im if im.mode == "RGB" else im.convert("RGB"))


def center_offset(size: int, crop: int) -> int:
    """Where the central `crop` of `size` starts (the 10-crop's centre patch too)."""
    return (size - crop) // 2


def center_crop(pixels: T, crop: int) -> T:
    """The central crop x crop of HWC pixels, or of a batch (..., H, W, C): a view.

    Works on NumPy arrays and torch tensors alike (plain slicing)."""
    off = center_offset(pixels.shape[-3], crop)  # type: ignore[attr-defined]
    return pixels[..., off : off + crop, off : off + crop, :]  # type: ignore[index]
