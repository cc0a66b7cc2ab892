"""Top-k errors."""

from __future__ import annotations

import torch


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
