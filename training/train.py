"""The training stage: `alexnet train OUT --run NAME`.

Reads OUT/manifest.json, OUT/stats/ and the shards; writes OUT/runs/NAME/:

    config.json        the resolved TrainConfig (also inside every checkpoint)
    metrics.jsonl      one JSON object per logged step and per epoch
    checkpoints/       last.pt and best.pt every epoch, epoch-NNN.pt every N epochs
    ranks/rank-R.json  per process: the shards it read each epoch, a hash of its weights

Schedule (the paper): the learning rate is divided by 10 when the validation
top-1 error has not improved for `lr_patience` epochs; after `max_lr_drops`
drops, the next plateau ends training (or `epochs`, whichever comes first).

Beyond one machine: launched by `torchrun`, each process is one replica (a
two-column model on its own two devices), wrapped in DistributedDataParallel
(gloo on CPUs, NCCL on GPUs); ranks read disjoint shards (see training/data.py).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from shards.atomic import write_bytes, write_json
from shards.reader import read_manifest, shard_paths
from shards.stats import read_stats
from training.config import TrainConfig
from training.data import Augment, ShardSamples, lighting_basis, loader, prepare_batch
from training.metrics import load_checkpoint, save_checkpoint, topk_errors
from training.model import AlexNet
from training.optim import PaperSGD


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class Plateau:
    """Divide the rate when validation error stops improving; stop after the last drop."""

    patience: int
    threshold: float
    max_drops: int
    best: float = math.inf
    bad_epochs: int = 0
    drops: int = 0

    def step(self, error: float) -> str:
        """'keep', 'drop' (divide the rate now) or 'stop'."""
        if error < self.best - self.threshold:
            self.best, self.bad_epochs = error, 0
            return "keep"
        self.bad_epochs += 1
        if self.bad_epochs < self.patience:
            return "keep"
        if self.drops >= self.max_drops:
            return "stop"
        self.drops, self.bad_epochs = self.drops + 1, 0
        return "drop"

    def state_dict(self) -> dict:
        return {"best": self.best, "bad_epochs": self.bad_epochs, "drops": self.drops}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.bad_epochs, self.drops = state["best"], state["bad_epochs"], state["drops"]


@dataclass
class TrainResult:
    run_dir: Path
    epochs_done: int
    step: int
    best_top1_error: float
    last: dict = field(default_factory=dict)  # the last epoch's metrics
    stopped: str = ""  # why training ended


def _kaiming(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)


def _weights_sha(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class _Line:
    """A live step line on a terminal; one line per epoch in logs; silent on ranks > 0."""

    def __init__(self, enabled: bool | None, quiet: bool) -> None:
        self.tty = sys.stderr.isatty() if enabled is None else enabled
        self.quiet = quiet

    def show(self, text: str) -> None:
        if self.tty and not self.quiet:
            print("\r" + text.ljust(100), end="", file=sys.stderr, flush=True)

    def done(self, text: str) -> None:
        if not self.quiet:
            print(
                ("\r" if self.tty else "") + text.ljust(100 if self.tty else 0),
                file=sys.stderr,
                flush=True,
            )


def train(
    out: str | os.PathLike,
    run: str,
    config: TrainConfig | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    devices: list[str] | None = None,
    progress: bool | None = None,
    on_epoch: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train (or resume) run `run` on data root `out`; see the module docstring.

    `on_epoch(metrics)` is called on rank 0 after each epoch with that epoch's
    metrics line (for a progress display elsewhere, such as a Prefect artifact).
    """
    out = Path(out)
    run_dir = out / "runs" / run
    ckpt_dir = run_dir / "checkpoints"
    # Everything that can be wrong with the inputs is an error before any training.
    manifest = read_manifest(out)
    for split in ("train", "val"):
        if split not in manifest["splits"] or not manifest["splits"][split]["shards"]:
            raise ValueError(
                f"{out}: the manifest has no {split} shards; "
                "run `alexnet preprocess` with both splits"
            )
    stats = read_stats(out, manifest)

    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    state = None
    if resume:
        if not (ckpt_dir / "last.pt").is_file():
            raise FileNotFoundError(f"{ckpt_dir / 'last.pt'} not found: nothing to resume")
        state = load_checkpoint(ckpt_dir / "last.pt")
        config = TrainConfig.from_dict(state["config"])
    elif run_dir.exists() and any(run_dir.iterdir()) and rank == 0:
        raise FileExistsError(
            f"{run_dir} exists: pass --resume to continue it, or choose another --run"
        )
    config = config or TrainConfig()
    if config.model.num_classes != len(manifest["classes"]):
        config = TrainConfig.from_dict(
            {
                **config.to_dict(),
                "model": {**config.model.to_dict(), "num_classes": len(manifest["classes"])},
            }
        )

    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    torch.manual_seed(config.seed + rank)
    model = AlexNet.from_config(config.model, devices)
    if config.init == "kaiming":
        _kaiming(model)
    if world > 1:  # same initial weights everywhere: DDP broadcasts rank 0's
        model_ddp: nn.Module = nn.parallel.DistributedDataParallel(model)
    else:
        model_ddp = model
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    forward = torch.compile(model_ddp) if config.compile else model_ddp
    opt = PaperSGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        decay_biases=config.decay_biases,
    )
    plateau = Plateau(config.lr_patience, config.lr_threshold, config.max_lr_drops)
    epoch, step = 0, 0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        plateau.load_state_dict(state["schedule"])
        epoch, step = state["epoch"], state["step"]
        torch.set_rng_state(state["torch_rng"])
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "config.json", config.to_dict())
        _trim_metrics(run_dir / "metrics.jsonl", step)

    device = model.devices[0]
    mean = torch.from_numpy(stats.mean).to(device)  # (256, 256, 3)
    aug = Augment(config.crop, config.flip, config.lighting, config.lighting_sigma)
    basis = lighting_basis(stats, config.lighting) if config.lighting != "none" else None
    train_shards = shard_paths(out, "train", manifest)
    counts = {
        str(p): s["count"]
        for p, s in zip(train_shards, manifest["splits"]["train"]["shards"], strict=True)
    }
    train_ds = ShardSamples(train_shards, True, aug, basis, config.seed, rank, world,
                            config.shuffle_buffer, config.batch_size)  # fmt: skip
    val_shards = shard_paths(out, "val", manifest)
    val_ds = ShardSamples(val_shards, False, aug, None, batch_size=config.batch_size)
    train_loader = loader(train_ds, config.loader_workers)
    val_loader = loader(val_ds, config.loader_workers)
    line = _Line(progress, quiet=rank != 0)
    read_log: dict[int, list[str]] = {}
    result = TrainResult(run_dir, epoch, step, plateau.best)

    def log(entry: dict) -> None:
        if rank == 0:
            with open(run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(entry) + "\n")

    try:
        while epoch < config.epochs:
            train_ds.set_epoch(epoch)
            read_log[epoch] = [Path(u).name for u in train_ds.shards_for()]
            limit = None
            if world > 1:  # all ranks take the same number of steps (see training/data.py)
                per_rank = [
                    sum(counts[u] for u in train_ds.shards_for(rank=r)) for r in range(world)
                ]
                limit = min(per_rank) // config.batch_size
            model_ddp.train()
            t0, seen, losses = time.perf_counter(), 0, []
            for i, batch in enumerate(train_loader):
                if limit is not None and i >= limit:
                    break
                x = prepare_batch(batch, mean, config.input_scale, device)
                labels = batch.labels
                if config.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16):
                    logits = forward(x)
                loss = nn.functional.cross_entropy(logits.float(), labels.to(logits.device))
                if not torch.isfinite(loss):
                    last = ckpt_dir / "last.pt"
                    raise TrainingDiverged(
                        f"loss is {loss.item()} at step {step + 1} (epoch {epoch + 1}); "
                        "the last good "
                        f"checkpoint is {last if last.exists() else 'none (no epoch completed)'}"
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                seen += len(labels)
                losses.append(loss.item())
                rate = seen / (time.perf_counter() - t0)
                lr = opt.param_groups[0]["lr"]
                line.show(
                    f"epoch {epoch + 1}/{config.epochs} step {step} loss {losses[-1]:.4f} "
                    f"lr {lr:g} {rate:.0f} img/s"
                )
                if step % config.log_every == 0:
                    log(
                        {
                            "step": step,
                            "epoch": epoch + 1,
                            "loss": losses[-1],
                            "lr": lr,
                            "images_per_s": rate,
                        }
                    )
            epoch += 1
            top1, top5 = _validate(model, val_loader, mean, config, device, rank, world)
            action = plateau.step(top1)
            lr = opt.param_groups[0]["lr"]
            entry = {
                "step": step,
                "epoch": epoch,
                "loss": float(np.mean(losses)) if losses else None,
                "lr": lr,
                "images_per_s": seen / (time.perf_counter() - t0),
                "val_top1_error": top1,
                "val_top5_error": top5,
            }
            log(entry)
            if on_epoch is not None and rank == 0:
                on_epoch({**entry, "epochs": config.epochs})
            line.done(
                f"epoch {epoch}/{config.epochs}: loss {entry['loss']:.4f}, "
                f"val top-1 {top1:.2%}, top-5 {top5:.2%}, lr {lr:g}"
            )
            if action == "drop":
                for g in opt.param_groups:
                    g["lr"] *= config.lr_factor
            result = TrainResult(run_dir, epoch, step, plateau.best, entry)
            if rank == 0:
                payload = {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "schedule": plateau.state_dict(),
                    "epoch": epoch,
                    "step": step,
                    "torch_rng": torch.get_rng_state(),
                    "config": config.to_dict(),
                    "model_config": config.model.to_dict(),
                    "form": "two-column",
                    "metrics": entry,
                }
                save_checkpoint(ckpt_dir / "last.pt", payload)
                if top1 <= plateau.best:
                    save_checkpoint(ckpt_dir / "best.pt", payload)
                if epoch % config.checkpoint_every == 0:
                    save_checkpoint(ckpt_dir / f"epoch-{epoch:03d}.pt", payload)
            if action == "stop":
                result.stopped = (
                    f"validation error stopped improving after {plateau.drops} learning-rate drops"
                )
                break
            if stop_after is not None and epoch - (state["epoch"] if state else 0) >= stop_after:
                result.stopped = (
                    f"stopped after {stop_after} epochs as asked (resume with --resume)"
                )
                break
        else:
            result.stopped = f"reached {config.epochs} epochs"
    finally:
        write_json(
            run_dir / "ranks" / f"rank-{rank}.json",
            {
                "rank": rank,
                "world_size": world,
                "shards_read": {str(k): v for k, v in read_log.items()},
                "weights_sha256": _weights_sha(model),
            },
        )
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()
    return result


@torch.no_grad()
def _validate(
    model: AlexNet,
    val_loader: torch.utils.data.DataLoader,
    mean: torch.Tensor,
    config: TrainConfig,
    device: torch.device,
    rank: int,
    world: int,
) -> tuple[float, float]:
    """Centre-crop top-1 and top-5 error on the val shards (rank 0 computes, all receive)."""
    errors = torch.zeros(3, dtype=torch.float64)
    if rank == 0:
        model.eval()
        for batch in val_loader:
            x = prepare_batch(batch, mean, config.input_scale, device)
            labels = batch.labels
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16):
                logits = model(x).float()
            e = topk_errors(logits, labels)
            errors += torch.tensor([e[1], e[5], len(labels)], dtype=torch.float64)
        model.train()
    if world > 1:
        dist.broadcast(errors, 0)
    return float(errors[0] / errors[2]), float(errors[1] / errors[2])


def _trim_metrics(path: Path, step: int) -> None:
    """On resume, drop lines logged after the checkpoint being resumed from."""
    if path.is_file():
        kept = [
            line
            for line in path.read_text().splitlines()
            if line and json.loads(line)["step"] <= step
        ]
        write_bytes(path, "".join(line + "\n" for line in kept).encode())
