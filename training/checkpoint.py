"""Checkpoint files, and a model loaded from one.

    save_checkpoint(path, payload)   atomic (a temporary name, then rename)
    load_checkpoint(path)            weights_only=True: tensors and plain containers
    load_model(path) -> Loaded       the model of any form, its settings, path and sha256

Training writes checkpoints; evaluation and the figures load them: both import
this module, and neither the other.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from shards.atomic import atomic_writer, ctrl_c_held
from shards.format import sha256_file
from shards.manifest import Manifest
from training.config import TrainConfig
from training.model import AlexNet, GroupedAlexNet, OneGpuAlexNet, default_devices


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """torch.save to a temporary name, then rename: never a half-written checkpoint.

    A failed write (a full disk, a file size limit) is the OSError itself,
    naming the checkpoint, not torch's RuntimeError chained over it.
    """
    try:
        with ctrl_c_held(), atomic_writer(Path(path)) as f:  # a Ctrl-C: once it is written
            torch.save(payload, f)
    except RuntimeError as err:
        cause: BaseException | None = err
        while cause is not None and not isinstance(cause, OSError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        raise OSError(cause.errno, f"could not write {path}: {cause.strerror or cause}") from None


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load with weights_only=True: tensors and plain containers only, no pickled code.

    A file that is not such a checkpoint (empty, cut short, a pickle of objects) is a
    ValueError naming it. torch's own message would advise `weights_only=False`, which
    runs whatever code the file holds: never do that with a file you did not write.
    """
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as err:  # EOFError, UnpicklingError, RuntimeError (zip), ...
        raise ValueError(
            f"{path} is not a checkpoint alexnet train wrote, or it is damaged "
            f"({type(err).__name__}: empty, cut short, or holding objects other than "
            "tensors, which are not loaded)"
        ) from None
    if not isinstance(payload, dict) or "model" not in payload or "config" not in payload:
        raise ValueError(f"{path} is not a checkpoint alexnet train wrote (no model or config)")
    return payload


@dataclass
class Loaded:
    model: torch.nn.Module
    config: TrainConfig
    path: Path
    sha256: str
    wnids: list[str] | None = None  # the classes it was trained on (None: an older checkpoint)


class WrongClasses(ValueError):
    """A checkpoint applied to a data root whose class list is not the one it learnt."""


def check_classes(
    path: Path, wnids: list[str] | None, num_classes: int, manifest: Manifest
) -> None:
    """Refuse to apply the checkpoint at `path` (trained on `wnids`, in output order) to a
    data root with another class list: its outputs would be read as the wrong classes.
    A checkpoint from before the class list was recorded is held to the class count."""
    ours = manifest.wnids
    if wnids is None:  # a checkpoint from before the class list was recorded
        if num_classes != len(ours):
            raise WrongClasses(
                f"{path} outputs {num_classes} classes; this data root has {len(ours)}: "
                "use the data root it was trained on"
            )
        return
    if wnids != ours:
        pairs = enumerate(zip(wnids, ours, strict=False))
        first = next((i for i, (a, b) in pairs if a != b), min(len(wnids), len(ours)))
        how = (
            "the same classes in another order"
            if sorted(wnids) == sorted(ours)
            else f"{len(set(wnids) ^ set(ours))} class(es) differ"
        )
        raise WrongClasses(
            f"{path} was trained on another class list than this data root's manifest "
            f"({len(wnids)} classes against {len(ours)}; {how}, the first at index {first}): "
            "its outputs would be read as the wrong classes; use the data root it was "
            "trained on"
        )


def load_model(path: str | os.PathLike, devices: list[str] | None = None) -> Loaded:
    """A model from a checkpoint of any form (two-column, grouped, one-GPU), in eval mode, on
    `devices` (or the defaults)."""
    path = Path(path)
    payload = load_checkpoint(path)
    config = TrainConfig.from_dict(payload["config"])
    form = payload.get("form", "two-column")
    if form == "grouped":
        device = (devices or [str(default_devices()[0])])[0]
        model: torch.nn.Module = GroupedAlexNet(config.model, device)
    elif form == "one-gpu":
        model = OneGpuAlexNet(config.model, devices)
    else:
        model = AlexNet(config.model, devices)
    model.load_state_dict(payload["model"])
    wnids = payload.get("classes")
    return Loaded(model.eval(), config, path, sha256_file(path), wnids)
