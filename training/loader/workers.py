"""`Loader`: a dataset's batches, made by worker processes that live as long as it."""

from __future__ import annotations

import copy
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from training.loader.batch import Batch, _SlotRef
from training.loader.dataset import ShardSamples, _Failure
from training.loader.stop import stop_workers
from training.loader.transport import SlotPool


def _as_is(item: object) -> object:
    return item


_HELD: list[int] = []  # Ctrl-Cs that came while the workers forked


def _hold(signum: int, frame: object) -> None:
    _HELD.append(signum)


@contextmanager
def _ctrl_c_held() -> Iterator[None]:
    """A Ctrl-C held back while the workers fork, then raised as KeyboardInterrupt.

    Raised where it lands, it may land in one of the at-fork hooks (logging's) that
    the fork runs in this process, and Python drops an exception raised there ("Exception
    ignored in: <function _releaseLock>"): the Ctrl-C would be lost and training go on.
    Only where Ctrl-C is Python's own KeyboardInterrupt (not ignored, not handled).
    """
    default = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if not default or threading.current_thread() is not threading.main_thread():
        yield
        return
    _HELD.clear()
    signal.signal(signal.SIGINT, _hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if _HELD:
        raise KeyboardInterrupt


def _worker_started(worker_id: int) -> None:
    """In each worker: Ctrl-C as the process that forked it had it before it was held."""
    if signal.getsignal(signal.SIGINT) is _hold:
        signal.signal(signal.SIGINT, signal.default_int_handler)


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
        with _ctrl_c_held():
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
