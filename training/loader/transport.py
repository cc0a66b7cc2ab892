"""How batches travel: shared-memory slots, page-locking, and the copy to the device.

Each worker writes its batches straight into one of a few shared-memory slots
that are reused, and sends only the slot's number; the main process reads the
slot in place and hands it back once the batch is on the device. On CUDA the
slots are page-locked once, so the copy to the GPU is a DMA transfer on a side
stream, overlapping the previous step (`device_batches`).
"""

from __future__ import annotations

import collections
import functools
import os
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch

from training.loader.batch import Batch, BatchBuffer, _SlotRef


class SlotPool:
    """Reusable batch buffers in shared memory: `per_worker` slots for each loader worker.

    A worker takes a free slot from its own queue, writes a batch into it and
    sends the slot's number; the main process views the slot in place (no
    copy, no new shared-memory segment) and puts the number back on release.
    Allocated before the workers start, so they inherit it. On a CUDA host the
    buffers can be page-locked in place (`pin`), so that copies to the GPU are
    DMA transfers that overlap computation, with no pinning copy by any thread.
    """

    def __init__(
        self, workers: int, per_worker: int, batch_size: int, crop: int, context: Any
    ) -> None:
        shape = (workers, per_worker, batch_size)
        need = workers * per_worker * batch_size * (crop * crop * 3 + 45)
        _check_shared_memory(need, workers)

        def shared(tail: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
            return torch.empty((*shape, *tail), dtype=dtype).share_memory_()

        self.crops = shared((crop, crop, 3), torch.uint8)
        self.offsets = shared((2,), torch.int64)
        self.flips = shared((), torch.bool)
        self.shifts = shared((3,), torch.float32)
        self.labels = shared((), torch.int64)
        self.free = [context.SimpleQueue() for _ in range(workers)]
        for queue in self.free:
            for k in range(per_worker):
                queue.put(k)
        self._pending: collections.deque = collections.deque()  # (event, worker, slot)
        self._views: dict[tuple[int, int], tuple[np.ndarray, ...]] = {}  # in a worker
        self.pinned = False

    def _tensors(self) -> tuple[torch.Tensor, ...]:
        return self.crops, self.offsets, self.flips, self.shifts, self.labels

    # In a worker.
    def take(self, worker: int) -> BatchBuffer | None:
        """A free slot of this worker's to fill, or None if the consumer holds them all."""
        queue = self.free[worker]
        if queue.empty():  # only this worker takes from its queue: get() cannot block
            return None
        k = queue.get()
        views = self._views.get((worker, k))
        if views is None:
            views = self._views[worker, k] = tuple(t[worker, k].numpy() for t in self._tensors())
        return BatchBuffer(views, (worker, k))

    def give_back(self, worker: int, k: int) -> None:
        self.free[worker].put(k)

    # In the main process.
    def batch(self, ref: _SlotRef) -> Batch:
        self.reap()
        w, k, n = ref.worker, ref.slot, ref.n
        views = (t[w, k, :n] for t in self._tensors())
        return Batch(*views, ref.keys, functools.partial(self._release, w, k))

    def _release(self, worker: int, k: int, after: object) -> None:
        if after is None or after.query():
            self.free[worker].put(k)
        else:
            self._pending.append((after, worker, k))

    def reap(self) -> None:
        """Return the slots whose copies to the device have completed."""
        while self._pending and self._pending[0][0].query():
            _, worker, k = self._pending.popleft()
            self.free[worker].put(k)

    def pin(self) -> bool:
        """Page-lock the buffers in place for CUDA; False (and a warning) if it cannot."""
        cudart = torch.cuda.cudart()
        done = []
        for t in self._tensors():
            err = int(cudart.cudaHostRegister(t.data_ptr(), t.untyped_storage().nbytes(), 0))
            if err != 0:
                for ptr in done:
                    cudart.cudaHostUnregister(ptr)
                size = self.crops.untyped_storage().nbytes() >> 20
                warnings.warn(
                    f"could not page-lock the loader's {size} MiB of batch buffers "
                    f"(cudaError {err}): copies to the GPU stay synchronous",
                    stacklevel=2,
                )
                return False
            done.append(t.data_ptr())
        self.pinned = True
        return True

    def close(self) -> None:
        """Wait for copies in flight, then unlock the buffers (they are freed with their views)."""
        for event, _, _ in self._pending:
            event.synchronize()
        self._pending.clear()
        if self.pinned:
            torch.cuda.synchronize()
            for t in self._tensors():
                torch.cuda.cudart().cudaHostUnregister(t.data_ptr())
            self.pinned = False


def _check_shared_memory(need: int, workers: int, where: str = "/dev/shm") -> None:
    """A clear error instead of a SIGBUS later, when the slots cannot fit in shared memory."""
    try:
        st = os.statvfs(where)
    except OSError:
        return  # no such folder (not Linux): nothing to check
    free = st.f_bavail * st.f_frsize
    if need > free:
        raise MemoryError(
            f"the loader's batch slots need {need >> 20} MiB of shared memory for {workers} "
            f"workers, but {where} has {free >> 20} MiB free: use fewer loader workers "
            "(--set loader_workers=N), a smaller batch, or a larger /dev/shm "
            "(in Docker: --shm-size)"
        )


def device_batches(batches: Iterable[Batch], device: torch.device) -> Iterator[Batch]:
    """The batches on `device`. On CUDA, batch i+1 is copied on a side stream while step i runs.

    Each host batch is released as soon as its copy has completed (the copy
    engine works from the page-locked slot in place). Elsewhere the batches
    pass through unchanged: release each when done with it (after the
    backward pass, which reads the labels); on a device copy that is a no-op.
    """
    if device.type != "cuda":
        yield from batches
        return
    side = torch.cuda.Stream(device)
    ahead = None
    for host in batches:
        with torch.cuda.stream(side):
            moved = host.to(device, non_blocking=True)
            copied = torch.cuda.Event()
            copied.record(side)
        host.release(after=copied)
        if ahead is not None:
            yield _hand_over(*ahead, device)
        ahead = moved, copied
    if ahead is not None:
        yield _hand_over(*ahead, device)


def _hand_over(batch: Batch, copied: object, device: torch.device) -> Batch:
    """Make the current stream wait for the side stream's copy, and keep the memory alive for it."""
    current = torch.cuda.current_stream(device)
    current.wait_event(copied)
    for t in batch.tensors():
        t.record_stream(current)
    return batch
