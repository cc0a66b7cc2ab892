"""Batches: the arrays a worker writes a batch into, and what the main process reads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch


class View(NamedTuple):
    """One sample as the loader hands it on: the unflipped crop (a view of the image),
    where it was cut, whether to flip it, and its lighting shift (0-255 scale)."""

    crop: np.ndarray  # (c, c, 3) uint8
    top: int
    left: int
    flipped: bool
    shift: np.ndarray  # (3,) float32


class Batch:
    """Crops in HWC uint8 and how each was made: what a loader worker hands over.

    From a `Loader` with workers, the tensors are views of a shared-memory slot
    that the workers reuse: call `release()` once they have been read (the
    training loop does, after the backward pass); `device_batches` does on CUDA
    once its copy to the GPU has completed. Until then the slot
    stays out of use; a batch never released only costs speed (the worker then
    falls back to a fresh array), never correctness.
    """

    __slots__ = ("_release", "crops", "flips", "keys", "labels", "offsets", "shifts")

    def __init__(
        self,
        crops: torch.Tensor,  # (B, c, c, 3) uint8, not yet flipped
        offsets: torch.Tensor,  # (B, 2) int64: top, left
        flips: torch.Tensor,  # (B,) bool
        shifts: torch.Tensor,  # (B, 3) float32, 0-255 scale
        labels: torch.Tensor,  # (B,) int64
        keys: list[str],
        release: Callable[[object], None] | None = None,
    ) -> None:
        self.crops, self.offsets, self.flips, self.shifts = crops, offsets, flips, shifts
        self.labels, self.keys, self._release = labels, keys, release

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return self.crops, self.offsets, self.flips, self.shifts, self.labels

    def to(self, device: torch.device, non_blocking: bool = True) -> Batch:
        """A copy on `device` (this batch's buffers are not released)."""
        moved = (t.to(device, non_blocking=non_blocking) for t in self.tensors())
        return Batch(*moved, self.keys)

    def pin_memory(self) -> Batch:
        """A page-locked copy (a plain `DataLoader(pin_memory=True)` calls this)."""
        return Batch(*(t.pin_memory() for t in self.tensors()), self.keys)

    def release(self, after: object = None) -> None:
        """Hand the buffers back to the workers: now, or once `after` (a CUDA event) completes."""
        release, self._release = self._release, None
        if release is not None:
            release(after)

    def __len__(self) -> int:
        return len(self.keys)


class BatchBuffer:
    """The arrays one batch is written into, a sample at a time: a shared slot's, or fresh ones."""

    __slots__ = ("crops", "flips", "keys", "labels", "offsets", "shifts", "slot")

    def __init__(self, arrays: tuple[np.ndarray, ...], slot: tuple[int, int] | None) -> None:
        self.crops, self.offsets, self.flips, self.shifts, self.labels = arrays
        self.keys: list[str] = []
        self.slot = slot

    @classmethod
    def fresh(cls, n: int, crop: int) -> BatchBuffer:
        arrays = (
            np.empty((n, crop, crop, 3), np.uint8),
            np.empty((n, 2), np.int64),
            np.empty(n, bool),
            np.empty((n, 3), np.float32),
            np.empty(n, np.int64),
        )
        return cls(arrays, None)

    def arrays(self) -> tuple[np.ndarray, ...]:
        return self.crops, self.offsets, self.flips, self.shifts, self.labels

    def add(self, view: View, label: int, key: str) -> int:
        """Write one sample (a view from `augment` or `center`); returns the count so far."""
        patch, top, left, flipped, shift = view
        i = len(self.keys)
        self.crops[i] = patch  # the one copy of the pixels, straight into the batch
        self.offsets[i] = top, left
        self.flips[i] = flipped
        self.shifts[i] = shift
        self.labels[i] = label
        self.keys.append(key)
        return i + 1

    def finish(self) -> Batch | _SlotRef:
        n = len(self.keys)
        if self.slot is not None:
            return _SlotRef(*self.slot, n, self.keys)
        return Batch(*(torch.from_numpy(a[:n]) for a in self.arrays()), self.keys)


@dataclass(frozen=True)
class _SlotRef:
    """What a worker sends instead of a batch: which slot holds it, and its keys."""

    worker: int
    slot: int
    n: int
    keys: list[str]
