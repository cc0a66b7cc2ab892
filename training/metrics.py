"""Top-k errors, with ties and non-finite scores counted against the label."""

from __future__ import annotations

import torch


def topk_errors(
    scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)
) -> dict[int, int]:
    """How many rows' label is NOT among the k highest scores, for each k.

    A label's rank is the number of other classes scored higher than it or
    equal to it; it is within the top k when that rank is below k. Ties
    therefore count against the label: a model whose outputs are all equal
    scores no better than chance (every row wrong when there are more than k
    classes), the same on every device and in every order. A row with a
    non-finite score (NaN, inf) is always an error; callers that must refuse
    such a model check `non_finite_rows` first.
    """
    counts = topk_error_counts(scores, labels, ks)
    return {k: int(n) for k, n in zip(ks, counts.tolist(), strict=True)}


def topk_error_counts(
    scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)
) -> torch.Tensor:
    """`topk_errors` as a tensor on the scores' device: summed over batches without a sync."""
    labels = labels.to(scores.device)
    own = scores.gather(1, labels[:, None])  # (B, 1)
    rank = (scores >= own).sum(1) - 1  # (B,): the others scored >= the label's own
    rank = torch.where(torch.isfinite(scores).all(1), rank, scores.shape[1])  # never right
    return torch.stack([(rank >= k).sum() for k in ks])


def non_finite_rows(scores: torch.Tensor) -> torch.Tensor:
    """How many rows hold a NaN or an infinity (a 0-d tensor on the scores' device)."""
    return (~torch.isfinite(scores).all(1)).sum()
