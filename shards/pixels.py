"""Stored images as pixels: the one decode and the one centre crop every reader uses.

Preprocessing (its re-decode of what it stored, the statistics from pixels),
the training loader, evaluation and the figures all see a stored image through
`decode_rgb`, and its centre through `center_crop`, so they cannot drift apart.
"""

from __future__ import annotations

import io
from typing import TypeVar

import numpy as np
import simplejpeg
from PIL import Image

T = TypeVar("T")


def decode_rgb(data: bytes, buffer: np.ndarray | None = None) -> np.ndarray:
    """An encoded image (any format Pillow reads) as (H, W, 3) uint8 RGB.

    Colour JPEGs (what preprocessing stores) are decoded by simplejpeg
    (libjpeg-turbo), into `buffer` when given and large enough: 0.45 ms a
    stored image against Pillow's 0.70, the same pixels (a test compares
    them). Anything else (PNG, greyscale or CMYK JPEG, a damaged file) goes to
    Pillow, which decodes it or raises its usual error.
    """
    if data[:2] == b"\xff\xd8":
        try:
            height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
            if colorspace == "YCbCr":
                fits = buffer is not None and buffer.size >= height * width * 3
                return simplejpeg.decode_jpeg(data, "RGB", buffer=buffer if fits else None)
        except ValueError:  # damaged (libjpeg-turbo's warnings are errors here): Pillow says how
            pass
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
