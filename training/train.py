"""The training stage: `alexnet train OUT --run NAME`.

Reads OUT/manifest.json, OUT/stats/ and the shards; writes OUT/runs/NAME/:

    config.json        the resolved TrainConfig (also inside every checkpoint)
    metrics.jsonl      per logged step and per epoch: the mean loss since the last line,
                       lr, images_per_s, data_wait (the share of time spent waiting for the
                       loader: near 0, the device is the limit), seconds; the val errors
    checkpoints/       last.pt and best.pt every epoch, epoch-NNN.pt every N epochs
    ranks/rank-R.json  per process: the shards it read each epoch (under DDP also how many
                       samples and a digest of their keys), its weights' hash, its command

Schedule (the paper): the learning rate is divided by 10 when the validation top-1 error
has not improved (by `lr_threshold` of the best, relative) for `lr_patience` epochs; after
`max_lr_drops` drops, the next plateau ends training (or `epochs`, whichever first). Or,
with `lr_milestones`, after each epoch listed, for all `epochs` (known in advance).

Beyond one machine: under `torchrun` each process is one replica (a two-column model on
two devices) in DistributedDataParallel (gloo on CPUs, NCCL on GPUs); ranks read
disjoint shards (training/loader/dataset.py).
"""

from __future__ import annotations

import math
import os
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import torch
import torch.distributed as dist
from torch import nn

from shards.atomic import one_writer, write_json
from shards.bucket import Publisher
from shards.bucket import resolve as resolve_root
from shards.dataroot import reading
from shards.manifest import Manifest, read_manifest
from shards.progress import Progress, duration, error_text, plural
from shards.reader import shard_paths
from shards.stats import Stats
from training.checkpoint import save_checkpoint
from training.config import TrainConfig
from training.events import Events
from training.figures import conv1_weights
from training.loader.augment import Augment, lighting_basis, prepare_batch
from training.loader.dataset import ShardSamples
from training.loader.transport import device_batches
from training.loader.workers import Loader
from training.model import build, kaiming_init, zero_fc8
from training.optim import make_optimizer
from training.ranks import keys_digest, loader_workers, replica_batch, weights_sha256
from training.report import show_epoch, write_report
from training.runlog import append_metrics, check_run_name, run_folder, trim_metrics
from training.schedule import Schedule, schedule
from training.starting import read_inputs, run_settings
from training.steps import Meter, first_batches, timed
from training.validate import TrainingDiverged, validate


@dataclass
class TrainResult:
    run_dir: Path
    epochs_done: int
    step: int
    best_top1_error: float
    last: dict = field(default_factory=dict)  # the last epoch's metrics
    stopped: str = ""  # why training ended


def train(
    out: str | os.PathLike,
    run: str,
    config: TrainConfig | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    devices: list[str] | None = None,
    progress: bool | TextIO | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    resume_overrides: list[str] | None = None,
) -> TrainResult:
    """Train (or resume) run `run` on data root `out`; see the module docstring.

    `resume_overrides` (`--set` with `--resume`): settings a resumed run may change
    (`training.config.RESUMABLE`, such as more epochs); any other is an error.

    `on_epoch(metrics)` is called on rank 0 after each epoch with that epoch's
    metrics line (for a progress display elsewhere, such as a Prefect artifact).
    `progress`: True, False, None (a terminal only) or a stream (`Progress.to`).
    One process owns a run at a time: rank 0 holds OUT/runs/.NAME.lock, and a
    second `train` of the same run is an error naming the holder.
    """
    check_run_name(run)
    # a URL: its local view (shards.bucket), with the run's folder if it was trained elsewhere
    url, out = out, resolve_root(out, runs=[run])
    read_manifest(out)  # a clear error before anything is created under OUT
    args = (out, run, config, resume, stop_after, devices, progress, on_epoch, resume_overrides)
    if int(os.environ.get("RANK", 0)) != 0:
        return _train(*args)
    lock = run_folder(out, run).with_name(f".{run}.lock")  # the name checked: one per folder
    with (
        one_writer(lock, f"run {run!r} of {out}"),
        reading(out),
    ):  # a run trained from a bucket is copied up to it after each epoch
        return _train(*args, Publisher.of_run(url, run_folder(out, run)))


@dataclass
class _Run:
    """What `_setup` builds and the loop carries: one process's share of a training run."""

    config: TrainConfig
    run_dir: Path
    rank: int
    world: int
    model: nn.Module  # AlexNet or OneGpuAlexNet
    model_ddp: nn.Module  # the model, or its DistributedDataParallel wrapper
    forward: Callable[[torch.Tensor], torch.Tensor]  # model_ddp, compiled if asked
    opt: torch.optim.Optimizer
    schedule: Schedule
    device: torch.device
    mean: torch.Tensor  # the (256, 256, 3) mean image on `device`
    train_ds: ShardSamples
    train_loader: Loader
    val_loader: Loader
    counts: dict[str, int]  # samples per train shard (to even out the ranks' steps)
    show: Progress
    events: Events | None  # TensorBoard, on rank 0
    wnids: list[str]  # the data root's classes, in output order (saved in checkpoints)
    epoch: int = 0
    step: int = 0
    first_epoch: int = 0  # where this process started (for stop_after)
    read_log: dict[int, list[str]] = field(default_factory=dict)
    consumed: dict[int, list[int]] = field(default_factory=dict)  # DDP: [samples, key digest]

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"


def _train(
    out: Path,
    run: str,
    config: TrainConfig | None,
    resume: bool,
    stop_after: int | None,
    devices: list[str] | None,
    progress: bool | TextIO | None,
    on_epoch: Callable[[dict], None] | None,
    resume_overrides: list[str] | None = None,
    publish: Callable[[], None] | None = None,
) -> TrainResult:
    """The loop: an epoch, validation, the schedule, checkpoints (and `publish`, after each
    epoch and at the end), until a stop."""
    r = _setup(out, run, config, resume, devices, progress, resume_overrides)
    c = r.config
    result = TrainResult(r.run_dir, r.epoch, r.step, r.schedule.lowest)
    finished = False  # the run is over (not paused by --stop-after, nor killed)
    try:
        while r.epoch < c.epochs:
            loss, rates = _train_one_epoch(r)
            r.epoch += 1
            entry, action = _end_epoch(r, loss, rates, on_epoch)
            if publish is not None:
                publish()
            result = TrainResult(r.run_dir, r.epoch, r.step, r.schedule.lowest, entry)
            if action == "stop":
                drops = r.schedule.drops
                result.stopped = (
                    f"validation error stopped improving after {drops} learning-rate drops"
                )
                finished = True
                break
            if stop_after is not None and r.epoch - r.first_epoch >= stop_after:
                result.stopped = (
                    f"stopped after {plural(stop_after, 'epoch')} as asked (resume with --resume)"
                )
                break
        else:
            result.stopped = f"reached {plural(c.epochs, 'epoch')}"
            finished = True
    finally:
        r.show.close()
        if r.events is not None:
            if finished and result.last:  # HParams: the settings beside what they gave
                r.events.hparams(c.to_dict(), result.best_top1_error, result.last)
            r.events.close()
        r.train_loader.close()
        r.val_loader.close()
        _write_rank_record(r)
        if r.world > 1 and dist.is_initialized():
            dist.destroy_process_group()
    if publish is not None:
        publish()  # the report and the rank record of the end
    return result


def _end_epoch(
    r: _Run, loss: float | None, rates: dict, on_epoch: Callable[[dict], None] | None
) -> tuple[dict, str]:
    """Validate, apply the schedule, log, and write the checkpoints of the epoch just
    trained; return its metrics line and the schedule's verdict (keep, drop or stop)."""
    c = r.config
    if r.world > 1:  # BatchNorm's statistics: rank 0's on every replica (as DDP's forward does)
        for buffer in r.model.buffers():
            dist.broadcast(buffer, 0)
    top1, top5 = validate(r.model, r.val_loader, r.mean, c, r.device, r.rank, r.world)
    lr = r.opt.param_groups[0]["lr"]  # the rate this epoch trained at
    action = r.schedule.step(top1)  # which may divide it for the next
    entry = {"step": r.step, "epoch": r.epoch, "loss": loss, "lr": lr, **rates}
    entry |= {"val_top1_error": top1, "val_top5_error": top5}
    _log(r, entry)
    if on_epoch is not None and r.rank == 0:
        on_epoch({**entry, "epochs": c.epochs})
    left = c.epochs - r.epoch  # at most: a plateau after the last rate drop ends it sooner
    to_go = f", at most {duration(left * rates['seconds'])} to go" if left else ""
    r.show.note(
        f"epoch {r.epoch}/{c.epochs}: loss {loss:.4f}, val {error_text(top1, top5)}, "
        f"lr {lr:g}, {rates['images_per_s']:.0f} img/s, "
        f"data wait {rates['data_wait']:.0%}{to_go}"
    )
    if r.rank == 0:
        _save_checkpoints(r, entry, top1)
        show_epoch(r.run_dir, r.events, conv1_weights(r.model, c.model), r.step)
    return entry, action


def _setup(
    out: Path,
    run: str,
    config: TrainConfig | None,
    resume: bool,
    devices: list[str] | None,
    progress: bool | TextIO | None,
    resume_overrides: list[str] | None = None,
) -> _Run:
    """Inputs checked, the settings (fresh, resumed or restarted), the model, optimizer
    and schedule (restored on resume), the run folder, and the loaders."""
    manifest, stats = read_inputs(out)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    run_dir = run_folder(out, run)
    config, state = run_settings(out, run_dir, manifest, config, resume, resume_overrides)
    wnids = manifest.wnids
    model, model_ddp, opt, sched = _model(config, devices, rank, world, state)
    epoch, step = (state["epoch"], state["step"]) if state is not None else (0, 0)
    device = model.devices[0]
    # the loaders (their workers started) before the run folder: a start that fails
    # leaves no folder that would then demand --resume
    train_ds, train_loader, val_loader = _loaders(out, manifest, stats, config, device, rank, world)
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "config.json", config.to_dict())
        trim_metrics(run_dir, step)
    listed = manifest.shards("train")
    counts = {str(p): s.count for p, s in zip(train_ds.shards, listed, strict=True)}
    forward = torch.compile(model_ddp) if config.compile else model_ddp
    mean = torch.from_numpy(stats.mean).to(device)
    # a stream (a Prefect task's log): a progress line to it every 30 s, and each epoch's
    show = Progress.to("train", progress, quiet=rank != 0, transient=True)
    events = Events(run_dir, step) if rank == 0 else None
    return _Run(
        config,
        run_dir,
        rank,
        world,
        model,
        model_ddp,
        forward,
        opt,
        sched,
        device,
        mean,
        train_ds,
        train_loader,
        val_loader,
        counts,
        show,
        events,
        wnids,
        epoch=epoch,
        step=step,
        first_epoch=epoch,
    )


def _model(
    config: TrainConfig, devices: list[str] | None, rank: int, world: int, state: dict | None
) -> tuple[nn.Module, nn.Module, torch.optim.Optimizer, Schedule]:
    """(model, its DDP wrapper or itself, optimizer, schedule), restored from `state`."""
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    torch.manual_seed(config.seed + rank)
    model = build(config.model, devices)  # the two-column net, or (columns=1) the one-GPU one
    if config.init == "kaiming":
        kaiming_init(model)
    if config.zero_fc8:
        zero_fc8(model)
    # same initial weights everywhere: DDP broadcasts rank 0's
    model_ddp = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    opt = make_optimizer(model, config)
    sched = schedule(config, opt)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["schedule"])
        torch.set_rng_state(state["torch_rng"])
    return model, model_ddp, opt, sched


def _loaders(
    out: Path,
    manifest: Manifest,
    stats: Stats,
    config: TrainConfig,
    device: torch.device,
    rank: int,
    world: int,
) -> tuple[ShardSamples, Loader, Loader]:
    """The train samples (this rank's share, augmented) and the train and val loaders."""
    aug = Augment(config.crop, config.flip, config.lighting, config.lighting_sigma)
    basis = lighting_basis(stats, config.lighting) if config.lighting != "none" else None
    train_shards, per_replica = shard_paths(out, "train", manifest), replica_batch(config, world)
    train_ds = ShardSamples(
        train_shards, True, aug, basis, config.seed, rank, world, config.shuffle_buffer, per_replica
    )
    val_ds = ShardSamples(
        shard_paths(out, "val", manifest), False, aug, None, batch_size=config.batch_size
    )
    pin, workers = device.type == "cuda", loader_workers(config.loader_workers, rank)
    return train_ds, Loader(train_ds, workers, pin=pin), Loader(val_ds, workers, pin=pin)


def _train_one_epoch(r: _Run) -> tuple[float | None, dict]:
    """One epoch of steps; (its mean loss, its images/s and data_wait). Step lines logged."""
    c = r.config
    r.train_ds.set_epoch(r.epoch)
    r.read_log[r.epoch] = [Path(u).name for u in r.train_ds.shards_for()]
    tally = r.consumed.setdefault(r.epoch, [0, 0]) if r.world > 1 else None
    limit = None
    if r.world > 1:  # all ranks take the same number of steps (see training/loader/dataset.py)
        per_rank = [sum(r.counts[u] for u in r.train_ds.shards_for(rank=k)) for k in range(r.world)]
        limit = min(per_rank) // r.train_ds.batch_size  # this replica's batch
    r.model_ddp.train()
    images = sum(r.counts[u] for u in r.train_ds.shards_for(rank=r.rank))
    if limit is not None:
        images = limit * r.train_ds.batch_size
    r.show.reset(f"epoch {r.epoch + 1}/{c.epochs}", images)
    whole, window, shown = Meter(), Meter(), time.perf_counter()
    for batch, wait in timed(device_batches(first_batches(r.train_loader, limit), r.device)):
        x = prepare_batch(batch, r.mean, c.input_scale, r.device)
        if c.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(r.device.type, dtype=torch.bfloat16, enabled=c.bf16):
            logits = r.forward(x)
        loss = nn.functional.cross_entropy(logits.float(), batch.labels.to(logits.device))
        r.opt.zero_grad(set_to_none=True)
        loss.backward()
        r.opt.step()
        batch.release()  # on the CPU the labels were read until here, by backward
        r.step += 1
        if tally is not None:  # what this rank really trained on (see ranks/)
            tally[0] += len(batch)
            tally[1] = (tally[1] + keys_digest(batch.keys)) % 2**64
        whole.add(loss, len(batch), wait)
        window.add(loss, len(batch), wait)
        lr = r.opt.param_groups[0]["lr"]
        if r.step % c.log_every == 0:
            entry = {"step": r.step, "epoch": r.epoch + 1, "loss": _read_loss(r, window), "lr": lr}
            _log(r, {**entry, **window.rates()})
            window.reset()
        r.show.update(len(batch))
        if r.show.live and time.perf_counter() - shown >= 1.0:  # one sync a second
            shown, rates = time.perf_counter(), whole.rates()
            r.show.update(
                0,
                f"loss {_read_loss(r, whole):.4f} lr {lr:g} wait {rates['data_wait']:.0%}",
            )
    return _read_loss(r, whole), whole.rates()


def _read_loss(r: _Run, meter: Meter) -> float | None:
    """The meter's mean loss (a device sync); a non-finite one stops training."""
    value = meter.loss()
    if value is not None and not math.isfinite(value):
        last = r.ckpt_dir / "last.pt"
        raise TrainingDiverged(
            f"loss is {value} at step {r.step} (epoch {r.epoch + 1}; read every "
            f"{r.config.log_every} steps); the last good "
            f"checkpoint is {last if last.exists() else 'none (no epoch completed)'}"
        )
    return value


def _log(r: _Run, entry: dict) -> None:
    if r.rank == 0:
        append_metrics(r.run_dir, entry)
    if r.events is not None:
        r.events.log(entry)


def _save_checkpoints(r: _Run, entry: dict, top1: float) -> None:
    """last.pt every epoch, best.pt when this epoch's error is the lowest, epoch-NNN.pt
    every `checkpoint_every` epochs."""
    c = r.config
    payload = {
        "model": r.model.state_dict(),
        "optimizer": r.opt.state_dict(),
        "schedule": r.schedule.state_dict(),
        "epoch": r.epoch,
        "step": r.step,
        "torch_rng": torch.get_rng_state(),
        "config": c.to_dict(),
        "model_config": c.model.to_dict(),
        "form": "one-gpu" if c.model.columns == 1 else "two-column",
        "metrics": entry,
        "classes": r.wnids,  # the output order: evaluate, predict and --resume check it
    }
    save_checkpoint(r.ckpt_dir / "last.pt", payload)
    if top1 <= r.schedule.lowest:
        save_checkpoint(r.ckpt_dir / "best.pt", payload)
    if r.epoch % c.checkpoint_every == 0:
        save_checkpoint(r.ckpt_dir / f"epoch-{r.epoch:03d}.pt", payload)


def _write_rank_record(r: _Run) -> None:
    """ranks/rank-R.json: what this process read and trained on, and its weights' hash."""
    consumed = {
        str(k): {"samples": n, "keys_digest": f"{d:016x}"} for k, (n, d) in r.consumed.items()
    }
    write_json(
        r.run_dir / "ranks" / f"rank-{r.rank}.json",
        {
            "rank": r.rank,
            "world_size": r.world,
            "shards_read": {str(k): v for k, v in r.read_log.items()},
            "consumed": consumed,
            "weights_sha256": weights_sha256(r.model),
            "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),  # the last to run
        },
    )
    if r.rank == 0:
        write_report(r.run_dir)  # once more: with the command that ran it
