"""What each loader worker reads: its shards, shuffled, dealt to ranks and workers.

Shards are read with shards/reader.py's tar parser, samples shuffled with
webdataset's shuffle buffer. Each epoch the train shards
are shuffled (seeded by seed and epoch), dealt to ranks (`shards[rank::world]`)
and then to loader workers, and samples pass a seeded shuffle buffer. On one
node every training sample is seen exactly once per epoch. With several ranks
each reads disjoint shards, and all run as many steps as the rank with the
fewest samples can fill with whole batches; the other ranks' surplus samples
are skipped for that epoch (different ones each epoch, as shards are reshuffled).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import webdataset as wds

from shards.reader import DamagedShard, iter_grouped
from training.loader.augment import Augment, augment, center
from training.loader.batch import Batch, BatchBuffer, _SlotRef
from training.loader.decode import Decoder
from training.loader.transport import SlotPool


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


def _samples(urls: list[str]) -> Iterator[dict]:
    """webdataset-style sample dicts, read with shards/reader.py's tar parser.

    (webdataset's own tar expander goes through `tarfile`: 0.35 ms an image,
    a third of this loader's time per image, measured.)
    """
    for key, fields, url in iter_grouped(urls):
        yield {"__key__": key, "__url__": url, **fields}


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
            samples = wds.filters.shuffle(self.buffer, min(self.buffer, 100), rng=pyrng)(samples)
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
