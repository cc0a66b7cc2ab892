"""Top-k errors and checkpoint files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from shards.atomic import atomic_writer


def topk_errors(
    scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)
) -> dict[int, int]:
    """How many rows' label is NOT among the k highest scores, for each k.

    A label's rank is the number of classes scored strictly higher; it is
    within the top k when that rank is below k. Ties therefore count in the
    label's favour, the same on every device and in every order.
    """
    counts = topk_error_counts(scores, labels, ks)
    return {k: int(n) for k, n in zip(ks, counts.tolist(), strict=True)}


def topk_error_counts(
    scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)
) -> torch.Tensor:
    """`topk_errors` as a tensor on the scores' device: summed over batches without a sync."""
    labels = labels.to(scores.device)
    own = scores.gather(1, labels[:, None])  # (B, 1)
    rank = (scores > own).sum(1)  # (B,)
    return torch.stack([(rank >= k).sum() for k in ks])


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """torch.save to a temporary name, then rename: never a half-written checkpoint.

    A failed write (a full disk, a file size limit) is the OSError itself,
    naming the checkpoint, not torch's RuntimeError chained over it.
    """
    try:
        with atomic_writer(Path(path)) as f:
            torch.save(payload, f)
    except RuntimeError as err:
        cause: BaseException | None = err
        while cause is not None and not isinstance(cause, OSError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        raise OSError(cause.errno, f"could not write {path}: {cause.strerror or cause}") from None


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load with weights_only=True: tensors and plain containers only, no pickled code."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)
