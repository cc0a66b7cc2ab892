"""`Loader`: a dataset's batches, made by worker processes that live as long as it."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import torch

from shards.atomic import ctrl_c_as_before, ctrl_c_held
from training.loader.batch import Batch, _SlotRef
from training.loader.dataset import ShardSamples, _Failure
from training.loader.stop import stop_workers
from training.loader.transport import SlotPool


def _as_is(item: object) -> object:
    return item


def _worker_started(worker_id: int) -> None:
    ctrl_c_as_before()  # the fork happened under ctrl_c_held


class Loader:
    """A `ShardSamples`' batches, made by `workers` processes that live as long as the loader.

    Batches are written by the workers straight into reused shared-memory
    slots (`SlotPool`) and only the slot's number crosses the process
    boundary: the main process does no per-batch copy, pinning or
    shared-memory set-up, so it is not the ceiling (see benchmarks/README.md).
    The workers persist across epochs (and a validation loader's across
    validations). With `pin=True` (a CUDA training device) the slots are
    page-locked in place once the workers have started. Iterating the loader
    again starts the next epoch; stopping an iteration early stops the workers
    (the next one starts new ones). `workers=0` builds batches in this process.
    """

    def __init__(
        self,
        dataset: ShardSamples,
        workers: int,
        *,
        pin: bool = False,
        prefetch: int = 2,
    ) -> None:
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.dataset, self.workers, self.pin, self.prefetch = dataset, workers, pin, prefetch
        self.fallbacks = 0  # batches that came by value: the consumer held every free slot
        self._dl: torch.utils.data.DataLoader | None = None
        self._pool: SlotPool | None = None

    def __iter__(self) -> Iterator[Batch]:
        if self.workers == 0:
            yield from self.dataset  # type: ignore[misc]
            return
        if self._dl is None or self._pool is None:
            self._dl, self._pool = self._start()
        with ctrl_c_held():  # one landing in the fork's at-fork hooks would be lost
            items = iter(self._dl)  # the first time, this starts the workers (fork)
        pool = self._pool
        pool.reap()  # slots whose copies finished after the last epoch's end
        if self.pin and not pool.pinned:
            pool.pin()  # after the fork: children need not inherit a locked mapping
        finished = False
        try:
            for item in items:
                if isinstance(item, _SlotRef):
                    yield pool.batch(item)
                elif isinstance(item, _Failure):
                    raise item.error()
                else:
                    self.fallbacks += 1
                    yield item
            finished = True
        finally:
            if not finished:
                self.close()

    def _start(self) -> tuple[torch.utils.data.DataLoader, SlotPool]:
        dataset = copy.copy(self.dataset)  # shares the epoch; the slots are this loader's
        context = torch.multiprocessing.get_context()  # the DataLoader's default
        per_worker = self.prefetch + 2  # queued, being read, being copied to the device
        pool = SlotPool(self.workers, per_worker, dataset.batch_size, dataset.aug.crop, context)
        dataset.slots = pool
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=None,
            num_workers=self.workers,
            collate_fn=_as_is,
            worker_init_fn=_worker_started,
            persistent_workers=True,
            prefetch_factor=self.prefetch,
            pin_memory=False,
            # the workers' base seed is drawn from this, not from the global generator,
            # so that starting workers (once, not every epoch) leaves dropout's draws alone
            generator=torch.Generator(),
        )
        return loader, pool

    def close(self) -> None:
        """Stop the workers and unlock the slots (batches still held stay readable)."""
        if self._dl is not None:
            stop_workers(self._dl)
            self._dl = None
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __enter__(self) -> Loader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
