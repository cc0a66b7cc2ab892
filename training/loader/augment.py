"""The paper's augmentations: a random 227x227 crop, a horizontal flip, PCA lighting.

Per training sample, in a loader worker (uint8 all the way): a random crop
(every offset 0..29 in each axis equally likely), a flip with probability 1/2
(decided here, applied per batch), and a lighting shift drawn for this image,
this time: s = P (a * lambda), a ~ N(0, 0.1). Each is a `View` of the image.

Per batch, on the training device (`prepare_batch`):
    x = flip?(crop - mean image cropped at the same place + s) * input_scale
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from shards.pixels import center_crop, center_offset
from shards.stats import SCALES, Stats
from training.loader.batch import Batch, View


@dataclass(frozen=True)
class Augment:
    """What the loader does to each training sample."""

    crop: int = 227
    flip: bool = True
    lighting: str = "paper"  # "paper" | "stddev" | "none"
    sigma: float = 0.1


def lighting_basis(stats: Stats, mode: str) -> np.ndarray:
    """M with shift = M @ a on the 0-255 scale, the same whatever scale `stats` are on.

    "paper": 255 P diag(lambda) with lambda the eigenvalues of the covariance of
    pixel/255 (docs/alexnet-spec.md's reading of the paper); "stddev": 255 P diag(sqrt(lambda)),
    Krizhevsky's code. Statistics stored on another scale (pixel/unit) are brought
    to pixel/255 first: eigenvalues of a covariance scale with the square of the
    unit, their square roots with the unit itself.
    """
    ratio = SCALES[stats.scale] / 255.0  # pixel/unit values are `ratio` times pixel/255 ones
    if mode == "paper":
        values = stats.eigenvalues * ratio**2
    else:
        values = np.sqrt(stats.eigenvalues) * ratio
    return stats.eigenvectors.T @ np.diag(values) * 255.0  # P has the eigenvectors as columns


def augment(
    image: np.ndarray, rng: np.random.Generator, aug: Augment, basis: np.ndarray | None
) -> View:
    """Random crop, flip decision and lighting shift for a (256, 256, 3) uint8 image.

    The crop is an unflipped view of the image; the flip itself is applied per batch
    by `prepare_batch` (a reversed copy of 3-byte pixels costs 30x a plain one in NumPy).
    """
    top = int(rng.integers(0, image.shape[0] - aug.crop + 1))
    left = int(rng.integers(0, image.shape[1] - aug.crop + 1))
    patch = image[top : top + aug.crop, left : left + aug.crop]
    flipped = bool(aug.flip and rng.random() < 0.5)
    if basis is None or aug.lighting == "none":
        shift = np.zeros(3, np.float32)
    else:
        shift = (basis @ rng.normal(0.0, aug.sigma, 3)).astype(np.float32)
    return View(patch, top, left, flipped, shift)


def center(image: np.ndarray, crop: int) -> View:
    """The evaluation view: the central crop, unflipped, no lighting."""
    off = center_offset(image.shape[0], crop)
    return View(center_crop(image, crop), off, off, False, np.zeros(3, np.float32))


def prepare_batch(
    batch: Batch, mean: torch.Tensor, input_scale: float, device: torch.device
) -> torch.Tensor:
    """flip(crop - mean at the crop's offset + lighting shift) * input_scale, as NCHW float.

    `mean` is the (256, 256, 3) float32 mean image on `device`, where all the
    work runs, with no per-image Python and no device sync: one gather takes
    every image's mean crop, already flipped where the image is (flipping after
    subtracting is the same as subtracting the mean flipped like the crop).
    The result is NCHW with channels-last strides. A host batch is copied to
    `device` here (`device_batches` copies ahead instead); either way the
    caller releases the batch once it is done with it, labels included.
    """
    b = batch if _same_device(batch.crops.device, device) else batch.to(device)
    c = b.crops.shape[1]
    span = torch.arange(c, device=device)
    rows = b.offsets[:, 0, None] + span  # (B, c)
    cols = b.offsets[:, 1, None] + torch.where(b.flips[:, None], span.flip(0), span)
    means = mean[rows[:, :, None], cols[:, None, :]]  # (B, c, c, 3): one gather
    crops = torch.where(b.flips[:, None, None, None], b.crops.flip(2), b.crops)
    x = crops.float() - means + b.shifts[:, None, None, :]
    return (x * input_scale).permute(0, 3, 1, 2)


def _same_device(a: torch.device, b: torch.device) -> bool:
    return a.type == b.type and (a.index or 0) == (b.index or 0)
