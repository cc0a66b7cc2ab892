"""The training and validation loaders, with the paper's augmentations.

Per training sample, in a loader worker (uint8 all the way):
    decode the 256x256 JPEG -> random 227x227 crop (every offset 0..29 in each
    axis equally likely) -> a horizontal flip with probability 1/2 (decided
    here, applied per batch) -> a lighting shift drawn for this image, this
    time: s = P (a * lambda), a ~ N(0, 0.1)

Per batch, on the training device (`prepare_batch`):
    x = flip?(crop - mean image cropped at the same place + s) * input_scale

How batches travel (`Loader`): each worker writes its batches straight into
one of a few shared-memory slots that are reused, and sends only the slot's
number; the main process reads the slot in place and hands it back once the
batch is on the device. On CUDA the slots are page-locked once, so the copy
to the GPU is a DMA transfer on a side stream, overlapping the previous step
(`device_batches`). Workers persist across epochs.

Shards are read with shards/reader.py's tar parser and shuffled with a
shuffle buffer that draws exactly as `webdataset`'s does. Each epoch the train shards
are shuffled (seeded by seed and epoch), dealt to ranks (`shards[rank::world]`)
and then to loader workers, and samples pass a seeded shuffle buffer. On one
node every training sample is seen exactly once per epoch. With several ranks
each reads disjoint shards, and all run as many steps as the rank with the
fewest samples can fill with whole batches; the other ranks' surplus samples
are skipped for that epoch (different ones each epoch, as shards are reshuffled).
"""

from __future__ import annotations

import collections
import copy
import functools
import os
import random
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shards.pixels import center_crop, center_offset, decode_rgb
from shards.reader import DamagedShard, iter_grouped
from shards.stats import SCALES, Stats

try:  # the C decoder (training/_jpeg.c), built by `pip install` where a compiler is
    from training import _jpeg
except ImportError:  # e.g. a GPU host running the project from a checkout: Pillow decodes
    _jpeg = None

SIZE = 256


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
    pixel/255 (the spec's reading of the paper); "stddev": 255 P diag(sqrt(lambda)),
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


decode = decode_rgb  # an encoded image as (H, W, 3) uint8 RGB, with Pillow (shards/pixels.py)


class Decoder:
    """`decode` into one reused array: each result is valid only until the next call.

    RGB JPEGs (what the preprocess stage stores) go through training/_jpeg.c,
    the system libjpeg called directly, when it is built: the same pixels as
    Pillow's (a test compares them), without Pillow's Python-level header
    parsing and the two copies behind `np.asarray(image)`. Anything else (PNG,
    greyscale or CMYK JPEG, a damaged file) goes to Pillow, which decodes it
    or raises its usual error.
    """

    def __init__(self) -> None:
        self.scratch = np.empty(SIZE * SIZE * 3, np.uint8)

    def __call__(self, data: bytes) -> np.ndarray:
        if _jpeg is not None and data[:2] == b"\xff\xd8":
            got = _jpeg.decode(data, self.scratch)
            if got is not None and not got[2]:  # larger than the array: grow it, once
                self.scratch = np.empty(got[0] * got[1] * 3, np.uint8)
                got = _jpeg.decode(data, self.scratch)
            if got is not None and got[2]:
                height, width, _ = got
                return self.scratch[: height * width * 3].reshape(height, width, 3)
        return decode(data)


def augment(
    image: np.ndarray, rng: np.random.Generator, aug: Augment, basis: np.ndarray | None
) -> tuple[np.ndarray, int, int, bool, np.ndarray]:
    """Random crop, flip decision and lighting shift for a (256, 256, 3) uint8 image.

    Returns (crop: an unflipped (c, c, 3) view, top, left, flipped, shift (3,) float32
    on 0-255). The flip itself is applied per batch by `prepare_batch`: a reversed
    copy of 3-byte pixels costs 30x a plain one in NumPy (0.6 ms vs 0.02 ms).
    """
    top = int(rng.integers(0, image.shape[0] - aug.crop + 1))
    left = int(rng.integers(0, image.shape[1] - aug.crop + 1))
    patch = image[top : top + aug.crop, left : left + aug.crop]
    flipped = bool(aug.flip and rng.random() < 0.5)
    if basis is None or aug.lighting == "none":
        shift = np.zeros(3, np.float32)
    else:
        shift = (basis @ rng.normal(0.0, aug.sigma, 3)).astype(np.float32)
    return patch, top, left, flipped, shift


def center(image: np.ndarray, crop: int) -> tuple[np.ndarray, int, int, bool, np.ndarray]:
    """The evaluation view: the central crop, unflipped, no lighting."""
    off = center_offset(image.shape[0], crop)
    return center_crop(image, crop), off, off, False, np.zeros(3, np.float32)


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

    def add(self, view: tuple, label: int, key: str) -> int:
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


def collate(views: list[tuple], labels: list[int], keys: list[str], crop: int) -> Batch:
    """A batch of `augment`/`center` views in fresh arrays: one copy per image."""
    filling = BatchBuffer.fresh(len(views), crop)
    for view, label, key in zip(views, labels, keys, strict=True):
        filling.add(view, label, key)
    batch = filling.finish()
    assert isinstance(batch, Batch)
    return batch


@dataclass(frozen=True)
class _Failure:
    """A worker's damaged shard or I/O error, re-raised as itself by the main process.

    (Raised in a worker, it would reach the user wrapped in the DataLoader's
    traceback of the worker.)
    """

    damaged: bool
    message: str

    def error(self) -> Exception:
        return DamagedShard(self.message) if self.damaged else OSError(self.message)


@dataclass(frozen=True)
class _SlotRef:
    """What a worker sends instead of a batch: which slot holds it, and its keys."""

    worker: int
    slot: int
    n: int
    keys: list[str]


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


def _samples(urls: list[str]) -> Iterator[dict]:
    """webdataset-style sample dicts, read with shards/reader.py's tar parser.

    (webdataset's own tar expander goes through `tarfile`: 0.35 ms an image,
    a third of this loader's time per image, measured.)
    """
    for key, fields, url in iter_grouped(urls):
        yield {"__key__": key, "__url__": url, **fields}


def shuffle(items: Iterator, size: int, initial: int, rng: random.Random) -> Iterator:
    """A shuffle buffer: the same algorithm and draws as `webdataset.filters.shuffle`.

    Fill up to `size` (taking two items per step while filling), start yielding
    once `initial` are held, yield a random one each step. Written here so that
    the loader's workers need only torch, NumPy and Pillow (a GPU host without
    webdataset runs it); a test checks it against webdataset's order.
    """
    buf: list = []
    for item in items:
        buf.append(item)
        if len(buf) < size:
            nxt = next(items, _END)
            if nxt is not _END:
                buf.append(nxt)
        if len(buf) >= initial:
            yield _pick(buf, rng)
    while buf:
        yield _pick(buf, rng)


_END = object()


def _pick(buf: list, rng: random.Random) -> object:
    k = rng.randint(0, len(buf) - 1)
    item = buf[k]
    buf[k] = buf[-1]
    buf.pop()
    return item


class ShardSamples(torch.utils.data.IterableDataset):
    """Batches of a list of shards' samples: augmented (train) or centre-cropped (eval).

    Each loader worker reads its own shards and yields whole `Batch`es; the
    last batch of each worker may be partial, so an epoch holds every sample
    once. The epoch lives in shared memory, so workers that persist across
    epochs see `set_epoch` from the main process.
    """

    def __init__(
        self,
        shards: list[Path],
        train: bool,
        aug: Augment,
        basis: np.ndarray | None,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        shuffle_buffer: int = 1000,
        batch_size: int = 128,
    ) -> None:
        self.shards = [str(s) for s in shards]
        self.batch_size = batch_size
        self.train, self.aug, self.basis = train, aug, basis
        self.seed, self.rank, self.world, self.buffer = seed, rank, world, shuffle_buffer
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self.slots: SlotPool | None = None  # set by `Loader` on its own copy

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(epoch)

    def shards_for(self, worker: int = 0, workers: int = 1, rank: int | None = None) -> list[str]:
        """A rank's (this one's by default) and worker's shards for the current epoch."""
        order = list(self.shards)
        if self.train:
            random.Random(f"{self.seed}-{self.epoch}").shuffle(order)
        return order[self.rank if rank is None else rank :: self.world][worker::workers]

    def __iter__(self) -> Iterator[Batch | _SlotRef | _Failure]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        epoch = self.epoch
        rng = np.random.default_rng([self.seed, epoch, self.rank, worker])
        samples = _samples(self.shards_for(worker, workers))
        if self.train:
            pyrng = random.Random(f"{self.seed}-{epoch}-{self.rank}-{worker}")
            samples = shuffle(samples, self.buffer, min(self.buffer, 100), pyrng)
        slots = self.slots if info is not None else None
        aug, basis, crop, size = self.aug, self.basis, self.aug.crop, self.batch_size
        decoder = Decoder()  # each image is copied into the batch before the next decode
        filling = None
        try:
            for sample in samples:
                if filling is None:
                    filling = (slots and slots.take(worker)) or BatchBuffer.fresh(size, crop)
                image = decoder(sample["jpg"] if "jpg" in sample else sample["png"])
                view = augment(image, rng, aug, basis) if self.train else center(image, crop)
                if filling.add(view, int(sample["cls"]), sample["__key__"]) == size:
                    batch, filling = filling.finish(), None
                    yield batch
            if filling is not None:  # this worker's last, partial batch: every sample once
                batch, filling = filling.finish(), None
                yield batch
        except (DamagedShard, OSError) as err:
            if info is None:
                raise
            yield _Failure(isinstance(err, DamagedShard), str(err))  # raised by the main process
        finally:  # abandoned mid-batch (the loader stopped): the slot is free again
            if filling is not None and filling.slot is not None and slots is not None:
                slots.give_back(*filling.slot)


def _as_is(item: object) -> object:
    return item


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
            running = self._dl._iterator
            if running is not None:
                running._shutdown_workers()
            self._dl = None
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __enter__(self) -> Loader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
