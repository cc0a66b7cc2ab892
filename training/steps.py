"""What the training loop measures per step without syncing the device: the loss, images/s
and the time spent waiting for data; and the batches it takes from the loader."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

import torch

from training.loader.batch import Batch


class Meter:
    """Loss, images and time spent waiting for data since `reset`, read without a sync per step.

    The loss is summed on the training device; reading it (`loss()`) is the one
    place that waits for the device, so the loop reads it only to log or show.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.t0, self.wait, self.images, self.steps = time.perf_counter(), 0.0, 0, 0
        self._loss: torch.Tensor | None = None

    def add(self, loss: torch.Tensor, images: int, wait: float) -> None:
        value = loss.detach().double()
        self._loss = value if self._loss is None else self._loss + value
        self.images, self.steps, self.wait = self.images + images, self.steps + 1, self.wait + wait

    def loss(self) -> float | None:
        return None if self._loss is None else self._loss.item() / self.steps

    def rates(self) -> dict:
        """images/s, the fraction of wall time the loop waited for data (after `loss()`), and
        the seconds since the meter started (an epoch's: its training time)."""
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        return {
            "images_per_s": self.images / elapsed,
            "data_wait": min(self.wait / elapsed, 1.0),
            "seconds": round(elapsed, 3),
        }


def timed(batches: Iterable[Batch]) -> Iterator[tuple[Batch, float]]:
    """Each batch with the seconds spent waiting for it."""
    it = iter(batches)
    while True:
        t0 = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            return
        yield batch, time.perf_counter() - t0


def first_batches(batches: Iterable[Batch], limit: int | None) -> Iterator[Batch]:
    """The first `limit` batches; the rest are read and released (the workers finish the epoch)."""
    for i, batch in enumerate(batches):
        if limit is None or i < limit:
            yield batch
        else:
            batch.release()
