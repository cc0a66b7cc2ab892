"""The training and validation loaders, with the paper's augmentations.

Per training sample, in a loader worker (uint8 all the way):
    decode the 256x256 JPEG -> random 227x227 crop (every offset 0..29 in each
    axis equally likely) -> a horizontal flip with probability 1/2 (decided
    here, applied per batch) -> a lighting shift drawn for this image, this
    time: s = P (a * lambda), a ~ N(0, 0.1)

Per batch, on the training device (`prepare_batch`):
    x = flip?(crop - mean image cropped at the same place + s) * input_scale

Shards are read with shards/reader.py's tar parser and shuffled with the
`webdataset` library's shuffle buffer. Each epoch the train shards
are shuffled (seeded by seed and epoch), dealt to ranks (`shards[rank::world]`)
and then to loader workers, and samples pass a seeded shuffle buffer. On one
node every training sample is seen exactly once per epoch. With several ranks
each reads disjoint shards, and all run as many steps as the rank with the
fewest samples can fill with whole batches; the other ranks' surplus samples
are skipped for that epoch (different ones each epoch, as shards are reshuffled).
"""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from shards.reader import iter_grouped
from shards.stats import SCALES, Stats

SIZE = 256


@dataclass(frozen=True)
class Augment:
    """What the loader does to each training sample."""

    crop: int = 227
    flip: bool = True
    lighting: str = "paper"  # "paper" | "stddev" | "none"
    sigma: float = 0.1


def lighting_basis(stats: Stats, mode: str) -> np.ndarray:
    """M with shift = M @ a, 0-255 scale: P diag(lambda), or P diag(sqrt(lambda)) for "stddev"."""
    values = stats.eigenvalues if mode == "paper" else np.sqrt(stats.eigenvalues)
    unit = SCALES[stats.scale]  # the covariance was taken on pixel/unit: back to 0-255
    return stats.eigenvectors.T @ np.diag(values) * unit  # P has the eigenvectors as columns


def decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return np.asarray(im if im.mode == "RGB" else im.convert("RGB"))


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
    off = (image.shape[0] - crop) // 2
    return image[off : off + crop, off : off + crop], off, off, False, np.zeros(3, np.float32)


@dataclass
class Batch:
    """What a loader worker hands over: uint8 crops in HWC, and how each was made."""

    crops: torch.Tensor  # (B, c, c, 3) uint8, not yet flipped
    offsets: torch.Tensor  # (B, 2) top, left
    flips: torch.Tensor  # (B,) bool
    shifts: torch.Tensor  # (B, 3) float32, 0-255 scale
    labels: torch.Tensor  # (B,) int64
    keys: list[str]

    def pin_memory(self) -> Batch:  # DataLoader(pin_memory=True) calls this
        return Batch(self.crops.pin_memory(), self.offsets, self.flips, self.shifts.pin_memory(),
                     self.labels.pin_memory(), self.keys)  # fmt: skip


def collate(views: list[tuple], labels: list[int], keys: list[str], crop: int) -> Batch:
    """One copy per image, straight into the batch array (no per-sample tensors)."""
    n = len(views)
    crops = np.empty((n, crop, crop, 3), np.uint8)
    offsets = np.empty((n, 2), np.int64)
    flips = np.empty(n, bool)
    shifts = np.empty((n, 3), np.float32)
    for i, (patch, top, left, flipped, shift) in enumerate(views):
        crops[i] = patch
        offsets[i] = top, left
        flips[i] = flipped
        shifts[i] = shift
    return Batch(torch.from_numpy(crops), torch.from_numpy(offsets), torch.from_numpy(flips),
                 torch.from_numpy(shifts), torch.tensor(labels), keys)  # fmt: skip


def prepare_batch(
    batch: Batch, mean: torch.Tensor, input_scale: float, device: torch.device
) -> torch.Tensor:
    """flip(crop - mean at the crop's offset + lighting shift) * input_scale, as NCHW float.

    `mean` is the (256, 256, 3) float32 mean image on `device`, where all the
    work runs. Flipping after subtracting is the same as subtracting the mean
    flipped like the crop. The result is NCHW with channels-last strides.
    """
    c = batch.crops.shape[1]
    crops = batch.crops.to(device, non_blocking=True)  # (B, c, c, 3)
    means = torch.stack([mean[t : t + c, lft : lft + c] for t, lft in batch.offsets.tolist()])
    x = crops.float() - means + batch.shifts.to(device)[:, None, None, :]
    flips = batch.flips.to(device)
    if bool(flips.any()):
        x[flips] = x[flips].flip(2)  # horizontal: along the width
    return (x * input_scale).permute(0, 3, 1, 2)


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
    last batch of each worker may be partial, so an epoch holds every sample once.
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
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def shards_for(self, worker: int = 0, workers: int = 1, rank: int | None = None) -> list[str]:
        """A rank's (this one's by default) and worker's shards for the current epoch."""
        order = list(self.shards)
        if self.train:
            random.Random(f"{self.seed}-{self.epoch}").shuffle(order)
        return order[self.rank if rank is None else rank :: self.world][worker::workers]

    def __iter__(self) -> Iterator[Batch]:
        import webdataset as wds

        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker])
        samples = _samples(self.shards_for(worker, workers))
        if self.train:
            pyrng = random.Random(f"{self.seed}-{self.epoch}-{self.rank}-{worker}")
            samples = wds.filters.shuffle(self.buffer, initial=min(self.buffer, 100), rng=pyrng)(
                samples
            )
        views, labels, keys = [], [], []
        for sample in samples:
            image = decode(sample["jpg"] if "jpg" in sample else sample["png"])
            views.append(
                augment(image, rng, self.aug, self.basis)
                if self.train
                else center(image, self.aug.crop)
            )
            labels.append(int(sample["cls"]))
            keys.append(sample["__key__"])
            if len(views) == self.batch_size:
                yield collate(views, labels, keys, self.aug.crop)
                views, labels, keys = [], [], []
        if views:  # the last, partial batch of this worker: every sample once per epoch
            yield collate(views, labels, keys, self.aug.crop)


def _as_is(batch: Batch) -> Batch:
    return batch


def loader(dataset: ShardSamples, workers: int) -> torch.utils.data.DataLoader:
    """Batches come whole from the workers (batch_size=None: no per-sample collation)."""
    return torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=workers, collate_fn=_as_is,
        pin_memory=torch.cuda.is_available(),
    )  # fmt: skip
