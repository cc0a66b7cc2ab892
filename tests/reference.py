"""Test-only helpers: brute-force references and readers the production code has no use for."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import torch
from torch import nn

from training.architecture import AlexNetConfig
from training.figures import GAP, KERNEL_ZOOM, PER_ROW
from training.loader.batch import Batch, BatchBuffer, View


def read_events(run_dir: Path) -> list[tuple[str, int, float | bytes]]:
    """(tag, step, value) of every scalar and image (its PNG bytes) in the run's event
    files, in the order written, less what a resume purged (as TensorBoard shows them):
    TFRecords of tensorboardX's own Event protobufs."""
    from tensorboardX.proto.event_pb2 import Event, SessionLog

    found = []
    for path in sorted(Path(run_dir).glob("events.out.tfevents.*")):
        data = path.read_bytes()
        at = 0
        while at + 12 <= len(data):
            (length,) = struct.unpack_from("<Q", data, at)
            event = Event.FromString(data[at + 12 : at + 12 + length])
            at += 12 + length + 4  # length, its CRC, the record, its CRC
            if event.HasField("session_log") and event.session_log.status == SessionLog.START:
                found = [f for f in found if f[1] < event.step]  # a resume's purge
            for v in event.summary.value:
                if v.HasField("image"):
                    found.append((v.tag, event.step, v.image.encoded_image_string))
                else:
                    found.append((v.tag, event.step, v.simple_value))
    return found


def nearest(train_feats: torch.Tensor, query_feats: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k training rows nearest (Euclidean) to each query row, nearest first:
    the brute-force answer `figures.nearest_in_split` must give."""
    d = torch.cdist(query_feats.double(), train_feats.double())
    return torch.topk(d, min(k, d.shape[1]), largest=False).indices


def conv1_size(n_per_column: int, columns: int = 2, k: int = 11) -> tuple[int, int]:
    """The pixel size `figures.conv1_kernels` should draw for these kernel counts."""
    cell = k * KERNEL_ZOOM + GAP
    rows = int(np.ceil(n_per_column / PER_ROW)) * columns
    return PER_ROW * cell + GAP, rows * cell + GAP * (1 + 3 * (columns - 1))


def to_two_column(state: dict[str, torch.Tensor], config: AlexNetConfig) -> dict[str, torch.Tensor]:
    """GroupedAlexNet state dict -> two-column state dict (the inverse of `to_grouped`)."""
    out = {}
    for key, tensor in state.items():
        if not tensor.ndim:  # BatchNorm's count of batches: the same in both columns
            parts = [tensor, tensor]
        else:
            half = tensor.shape[0] // 2
            split = config.class_split() if key.startswith("fc8.") else (half, half)
            parts = torch.split(tensor.cpu(), list(split), 0)
        for i, part in enumerate(parts):
            out[f"columns.{i}.{key}"] = part.clone()
    return out


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def collate(views: list[View], labels: list[int], keys: list[str], crop: int) -> Batch:
    """A batch of `augment`/`center` views in fresh arrays, as a worker fills its slot."""
    filling = BatchBuffer.fresh(len(views), crop)
    for view, label, key in zip(views, labels, keys, strict=True):
        filling.add(view, label, key)
    batch = filling.finish()
    assert isinstance(batch, Batch)
    return batch
