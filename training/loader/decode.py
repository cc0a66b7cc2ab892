"""Decoding a stored image into a reused array (the C decoder, or Pillow)."""

from __future__ import annotations

import numpy as np

from shards.pixels import decode_rgb

SIZE = 256  # the stored images' side

try:  # the C decoder (training/_jpeg.c), built by `pip install` where a compiler is
    from training import _jpeg
except ImportError:  # e.g. a GPU host running the project from a checkout: Pillow decodes
    _jpeg = None

decode = decode_rgb  # an encoded image as (H, W, 3) uint8 RGB, with Pillow (shards/pixels.py)


class Decoder:
    """`decode` into one reused array: each result is valid only until the next call.

    RGB JPEGs (what the preprocess stage stores) go through training/_jpeg.c,
    the system libjpeg called directly, when it is built: the same pixels as
    Pillow's (a test compares them), without Pillow's Python-level header
    parsing and the two copies behind `np.asarray(image)`. Anything else (PNG,
    greyscale or CMYK JPEG, a damaged file) goes to Pillow, which decodes it
    or raises its usual error.
    """

    def __init__(self) -> None:
        self.scratch = np.empty(SIZE * SIZE * 3, np.uint8)

    def __call__(self, data: bytes) -> np.ndarray:
        if _jpeg is not None and data[:2] == b"\xff\xd8":
            got = _jpeg.decode(data, self.scratch)
            if got is not None and not got[2]:  # larger than the array: grow it, once
                self.scratch = np.empty(got[0] * got[1] * 3, np.uint8)
                got = _jpeg.decode(data, self.scratch)
            if got is not None and got[2]:
                height, width, _ = got
                return self.scratch[: height * width * 3].reshape(height, width, 3)
        return decode(data)
