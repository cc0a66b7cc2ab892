"""Decoding a stored image into a reused array (shards/pixels.py's decode)."""

from __future__ import annotations

import numpy as np

from shards.pixels import decode_rgb

SIZE = 256  # the stored images' side

decode = decode_rgb  # an encoded image as (H, W, 3) uint8 RGB (shards/pixels.py)


class Decoder:
    """`decode` into one reused array: each result is valid only until the next call.

    A loader worker decodes every image of its epoch; reusing one array saves
    an allocation and its page faults per image. A larger image than the array
    gets an array of its own, and the next ones a larger reused one.
    """

    def __init__(self) -> None:
        self.scratch = np.empty(SIZE * SIZE * 3, np.uint8)

    def __call__(self, data: bytes) -> np.ndarray:
        image = decode_rgb(data, self.scratch)
        if image.size > self.scratch.size:
            self.scratch = np.empty(image.size, np.uint8)
        return image
