"""Validation during training: centre-crop top-1 and top-5 error on the val shards, summed
on the device (one sync per validation), with non-finite outputs an error."""

from __future__ import annotations

import torch
import torch.distributed as dist

from training.config import TrainConfig
from training.loader.augment import prepare_batch
from training.loader.transport import device_batches
from training.loader.workers import Loader
from training.metrics import non_finite_rows, topk_error_counts
from training.model import AlexNet, OneGpuAlexNet


class TrainingDiverged(RuntimeError):
    """The training loss, or the validation outputs, became NaN or infinite."""


@torch.no_grad()
def validate(
    model: AlexNet | OneGpuAlexNet,
    val_loader: Loader,
    mean: torch.Tensor,
    config: TrainConfig,
    device: torch.device,
    rank: int,
    world: int,
) -> tuple[float, float]:
    """Centre-crop top-1 and top-5 error on the val shards (rank 0 computes, all receive)."""
    errors = torch.zeros(4, dtype=torch.float64)
    if rank == 0:
        model.eval()
        counts = torch.zeros(4, dtype=torch.int64, device=device)  # summed on the device
        for batch in device_batches(val_loader, device):
            x = prepare_batch(batch, mean, config.input_scale, device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16):
                logits = model(x).float()
            counts[:2] += topk_error_counts(logits, batch.labels).to(device)
            counts[2] += len(batch)
            counts[3] += non_finite_rows(logits)
            batch.release()
        errors = counts.cpu().double()
        model.train()
    if world > 1:
        dist.broadcast(errors, 0)
    if errors[3] > 0:  # a collapsed model must not look like a good one to best.pt
        raise TrainingDiverged(
            f"the model's validation outputs are not finite (NaN or inf) on {int(errors[3])} "
            f"of {int(errors[2])} images; no checkpoint of this epoch is written"
        )
    return float(errors[0] / errors[2]), float(errors[1] / errors[2])
