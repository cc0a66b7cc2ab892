"""What DDP ranks (and a rank's loader workers) split: the batch, the shards, the cores."""

from __future__ import annotations

import hashlib
import os
import sys

import torch

from training.config import TrainConfig


def replica_batch(config: TrainConfig, world: int) -> int:
    """Each replica's batch: the global batch split across `world` replicas (the paper
    trained one model on 128, and DDP's mean of the replicas' gradients is then the
    gradient of that batch), or `batch_size` each with `global_batch=false`."""
    if not config.global_batch or world == 1:
        return config.batch_size
    if config.batch_size % world:
        raise ValueError(
            f"batch_size {config.batch_size} does not split across {world} replicas; choose a "
            "multiple of the replica count, or --set global_batch=false (batch_size each)"
        )
    return config.batch_size // world


def keys_digest(keys: list[str]) -> int:
    """An order-free digest of sample keys: the sum of each key's 64-bit hash, mod 2^64.

    Ranks' digests add up to the digest of all keys they read together, so a
    test can check that DDP ranks consumed disjoint sets that cover the data.
    """
    total = 0
    for key in keys:
        total += int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")
    return total % 2**64


def loader_workers(requested: int, rank: int) -> int:
    """At most one loader worker per core this process may use (more only cost memory)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if requested > (cores or 1):
        if rank == 0:
            note = f"loader_workers={requested} is more than the {cores} cores: using {cores}"
            print(note, file=sys.stderr)
        return cores or 1
    return requested


def weights_sha256(model: torch.nn.Module) -> str:
    """A hash of a model's weights: equal on every DDP replica, or they diverged."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
