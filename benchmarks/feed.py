"""Feeding the training process: what the loader benchmarks here and on a GPU host share.

  bare, bare_parallel   the baseline: decode + 227 crop copy of the stored JPEGs
  run_loader            the project's loader over the same shards
  absorb                the main process's ceiling, with workers replaying one batch

Imports only torch, NumPy, Pillow and the project's `training` and `shards`
packages (a GPU host has those, not Dask or Prefect).

The ceiling. No decoding at all: each worker builds one batch of 227x227 uint8 crops once and
hands it over again and again, so what is measured is the handing over, the
main process's share of every batch. Two ways, in the same run:

  tensors   the way before: the worker yields the batch's tensors and the
            DataLoader moves them through shared memory to the main process,
            plus a pinning copy by its one thread when pinned (on CUDA)
  slots     `training.loader.workers.Loader`: the worker takes one of its reused
            shared-memory slots and sends only its number; the main process
            views it in place and releases it (on CUDA after copying it to the
            GPU on a side stream, with `device_batches`)

"""

from __future__ import annotations

import io
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from shards.reader import iter_samples
from training.loader.augment import Augment
from training.loader.batch import Batch, BatchBuffer
from training.loader.dataset import ShardSamples
from training.loader.decode import Decoder
from training.loader.transport import device_batches
from training.loader.workers import Loader

CROP = 227


def jpegs_of(paths: list[Path] | list[str]) -> list[bytes]:
    return [s.image for s in iter_samples([str(p) for p in paths])]


def bare(jpegs: list[bytes], batch: int = 128, simplejpeg: bool = False) -> float:
    """Decode + 227 crop copy into a batch array, in this process; returns seconds.

    Decoded with Pillow, or with `simplejpeg=True` as the loader decodes (`Decoder`).
    """
    rng = np.random.default_rng(0)
    out = np.empty((batch, CROP, CROP, 3), np.uint8)
    offsets = rng.integers(0, 256 - CROP + 1, (len(jpegs), 2))
    decoder = Decoder()
    t0 = time.perf_counter()
    for i, data in enumerate(jpegs):
        if simplejpeg:
            image = decoder(data)
        else:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                image = np.asarray(im)
        top, left = offsets[i]
        out[i % batch] = image[top : top + CROP, left : left + CROP]
    return time.perf_counter() - t0


def _bare_shard(path: str) -> float:
    return bare(jpegs_of([path]))


def bare_parallel(paths: list[Path], processes: int) -> float:
    """The bare decode + crop copy on `processes` processes, each reading its shards; seconds."""
    t0 = time.perf_counter()
    with mp.get_context("fork").Pool(processes) as pool:
        pool.map(_bare_shard, [str(p) for p in paths], chunksize=1)
    return time.perf_counter() - t0


def run_loader(
    paths: list[Path], basis: np.ndarray | None, workers: int, device: str = "cpu"
) -> tuple[float, float, int]:
    """(seconds end to end, seconds from the first batch, images after the first batch).

    On CUDA every batch is copied to the GPU (`device_batches`), as training does.
    """
    dev = torch.device(device)
    ds = ShardSamples(paths, True, Augment(), basis, batch_size=128)
    t0 = time.perf_counter()
    first, after = None, 0
    with Loader(ds, workers, pin=dev.type == "cuda") as loader:
        for batch in device_batches(loader, dev):
            if first is None:
                first = time.perf_counter()
            else:
                after += len(batch)
            batch.release()
        if dev.type == "cuda":
            torch.cuda.synchronize()
    end = time.perf_counter()
    return end - t0, end - first, after


def _prebuilt(batch_size: int, crop: int) -> BatchBuffer:
    rng = np.random.default_rng(0)
    filling = BatchBuffer.fresh(batch_size, crop)
    filling.crops[:] = rng.integers(0, 256, filling.crops.shape, dtype=np.uint8)
    filling.offsets[:] = rng.integers(0, 30, filling.offsets.shape)
    filling.flips[:] = rng.random(batch_size) < 0.5
    filling.shifts[:] = rng.normal(0, 5, filling.shifts.shape)
    filling.labels[:] = rng.integers(0, 1000, batch_size)
    filling.keys.extend(f"train/{i:08d}" for i in range(batch_size))
    return filling


class ReplayTensors(torch.utils.data.IterableDataset):
    """Each worker yields one prebuilt `Batch` of tensors `batches` times.

    With `copy=True` it yields a fresh copy each time, as the loader before did
    (its collate filled new arrays for every batch, which the DataLoader then
    moved into a new shared-memory segment).
    """

    def __init__(self, batches: int, batch_size: int = 128, crop: int = 227, copy: bool = False):
        self.batches, self.batch_size, self.crop, self.copy = batches, batch_size, crop, copy

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        share = self.batches // (info.num_workers if info else 1)
        source = _prebuilt(self.batch_size, self.crop)
        batch = source.finish()
        for _ in range(share):
            if self.copy:
                fresh = BatchBuffer.fresh(self.batch_size, self.crop)
                for mine, theirs in zip(fresh.arrays(), source.arrays(), strict=True):
                    mine[:] = theirs
                fresh.keys = list(source.keys)
                batch = fresh.finish()
            yield batch


class ReplaySlots(ShardSamples):
    """Each worker hands over one of its slots `batches` times (the slot holds a prebuilt batch).

    With `copy=True` the worker also writes the prebuilt crops into the slot
    each time (one 19.8 MB copy: what a real worker's per-image copies add up to).
    """

    def __init__(self, batches: int, batch_size: int = 128, crop: int = 227, copy: bool = False):
        super().__init__([], True, Augment(crop=crop), None, batch_size=batch_size)
        self.batches, self.copy = batches, copy

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        source = _prebuilt(self.batch_size, self.aug.crop)
        for _ in range(self.batches // workers):
            filling = (self.slots and self.slots.take(worker)) or BatchBuffer.fresh(
                self.batch_size, self.aug.crop
            )
            if self.copy or filling.slot is None:
                for mine, theirs in zip(filling.arrays(), source.arrays(), strict=True):
                    mine[:] = theirs
            filling.keys = list(source.keys)
            yield filling.finish()


def absorb(way: str, workers: int, batches: int, device: str = "cpu", copy: bool = False) -> dict:
    """Images/s the main process takes in, from the first batch to the last (steady state)."""
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    if way == "tensors":
        items = torch.utils.data.DataLoader(
            ReplayTensors(batches, copy=copy),
            batch_size=None,
            num_workers=workers,
            pin_memory=cuda,
            collate_fn=lambda b: b,
        )
        stream: object = (b.to(dev, non_blocking=True) if cuda else b for b in items)
        loader = None
    else:
        loader = Loader(ReplaySlots(batches, copy=copy), workers, pin=cuda)
        stream = device_batches(loader, dev)
    images, t0 = 0, None
    for batch in stream:
        assert isinstance(batch, Batch)
        if t0 is None:  # the workers have started: time from here
            t0, first = time.perf_counter(), len(batch)
        images += len(batch)
        batch.release()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    fallbacks = loader.fallbacks if loader is not None else None
    if loader is not None:
        loader.close()
    return {"images_per_s": (images - first) / seconds, "fallbacks": fallbacks}
