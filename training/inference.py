"""A stored image through a trained model: the one path evaluation, predict and the figures
share.

`view_probs` subtracts the run's mean image from whole 256x256 images, scales
them as training did (`input_scale`), cuts the paper's views (the centre
patch, or ten: four corners and the centre, and their reflections) and
returns the softmax averaged over the views with the centre patch's fc7 rows.
(Training's loader does the same arithmetic per random crop: loader/augment.py.)
"""

from __future__ import annotations

import torch

from shards.pixels import center_offset
from training.checkpoint import Loaded

CROP = 227


def crop_offsets(size: int = 256, crop: int = CROP) -> list[tuple[int, int]]:
    """(top, left) of the paper's five patches: four corners, then the centre."""
    far, mid = size - crop, center_offset(size, crop)
    return [(0, 0), (0, far), (far, 0), (far, far), (mid, mid)]


def ten_crops(images: torch.Tensor, crops: int = 10, crop: int = CROP) -> torch.Tensor:
    """(B, H, W, 3) float images -> (crops * B, 3, crop, crop): five patches, then mirrors.

    With crops=1, only the centre patch. Row v * B + i is view v of image i.
    """
    offsets = crop_offsets(images.shape[1], crop)
    if crops == 1:
        offsets = offsets[4:]
    elif crops != 10:
        raise ValueError(f"crops must be 1 or 10, got {crops}")
    views = [images[:, t : t + crop, left : left + crop] for t, left in offsets]
    if crops == 10:
        views += [v.flip(2) for v in views]  # horizontal reflections
    return torch.cat(views).permute(0, 3, 1, 2)


def average_views(probs: torch.Tensor, n_views: int) -> torch.Tensor:
    """(n_views * B, C) softmax outputs -> (B, C), the mean over each image's views."""
    return probs.reshape(n_views, -1, probs.shape[1]).mean(0)


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def view_probs(
    m: Loaded, images: torch.Tensor, mean: torch.Tensor, crops: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 256, 256, 3) uint8 images -> their (B, C) softmax averaged over the views, and
    the (B, 4096) fc7 rows of their centre patches: all views of the batch in one pass.
    `mean` is the run's mean image on the model's device. What evaluation,
    `alexnet predict` and the figures' fc7 pass run."""
    x = (images.to(mean.device).float() - mean) * m.config.input_scale
    logits, fc7 = m.model.forward_features(ten_crops(x, crops, m.config.crop))
    centre = 0 if crops == 1 else 4  # the centre patch's view (see ten_crops)
    b = len(images)
    probs = average_views(torch.softmax(logits.float(), 1), crops)
    return probs, fc7[centre * b : (centre + 1) * b]
