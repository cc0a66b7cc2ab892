"""The GPU check of training: is the GPU fed, and how fast does `train()` run end to end?

    python3 benchmarks/gpu_train_check.py              # on a GPU host: about 4-5 minutes
    python3 benchmarks/gpu_train_check.py --cpu-dry-run   # every path, tiny, on the CPU

On a CUDA host (one GPU, all its cores), in one run, each printed in one JSON:

1. data: about 25,000 photograph-like 256x256 JPEGs (benchmarks/synthetic.py)
   in shards of 250, plus 1,000 for validation; the training shards are listed
   4 times (hard links), so an epoch is 100,000 samples.
2. bare_decode: decode + 227 crop copy of those JPEGs on all cores
   (multiprocessing, no loader): what the cores can feed at most.
3. ceiling: the main process's intake with workers replaying one prebuilt
   batch, the way before (tensors through the DataLoader, pin_memory=True) and
   the project's (shared slots, page-locked, copied to the GPU on a side stream).
4. loader: the project's loader on all cores, every batch copied to the GPU.
5. steps: the compiled two-column step (bf16, channels_last) at batch 128 and
   256 on synthetic inputs already on the GPU.
6. train: `training.train.train()` itself (paper preset, bf16, channels_last,
   compiled, a loader worker per core) for 3 epochs (about 2,300 steps):
   images/s and data_wait from its own metrics, after the first log window
   (compilation); and the target ratio train / min(step at 128, bare_decode).

On a host without the project's venv, install the wheel folder that
scripts/gpu_wheels.py builds (what the host's own Python lacks) and run it
from the repository root, as docs/gpu.md shows:

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
    PYTHONPATH=.:/tmp/site python3 benchmarks/gpu_train_check.py
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from feed import absorb, bare_parallel, run_loader
from synthetic import write_data_root
from torch import nn

from shards.reader import shard_paths
from shards.stats import read_stats
from training.architecture import AlexNetConfig
from training.config import resolve
from training.loader.augment import lighting_basis
from training.model import AlexNet
from training.optim import PaperSGD
from training.runlog import epoch_lines, read_metrics, step_lines
from training.train import train


def training_steps(device: str, batch: int, width: float, steps: int, compiled: bool) -> float:
    """Images/s of full training steps on inputs already on the device."""
    model = AlexNet(AlexNetConfig(width=width), devices=[device, device])
    model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if compiled else model
    opt = PaperSGD(model.parameters(), lr=0.01)
    x = torch.randn(batch, 3, 227, 227, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, model.config.num_classes, (batch,), device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def step() -> None:
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(forward(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):  # warm-up: compilation, cuDNN autotuning
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return batch * steps / (time.perf_counter() - t0)


def run_train(out: Path, dry: bool, workers: int) -> dict:
    """`train()` end to end; images/s and data_wait from its metrics after the first window."""
    tiny = ["model.width=0.0625", "batch_size=16", "epochs=2", "log_every=2"]
    full = ["bf16=true", "channels_last=true", "compile=true", "epochs=3", "log_every=50"]
    overrides = [*(tiny if dry else full), f"loader_workers={workers}", "checkpoint_every=100"]
    config = resolve("paper", overrides=overrides)
    t0 = time.perf_counter()
    result = train(out, "gpu-check", config, progress=False)
    wall = time.perf_counter() - t0
    lines = read_metrics(result.run_dir)
    steps = step_lines(lines)[1:]  # the first window compiles
    epochs = epoch_lines(lines)
    return {
        "steps": result.step,
        "wall_s": round(wall, 1),
        "images_per_s": round(statistics.median(m["images_per_s"] for m in steps), 1),
        "data_wait": round(statistics.median(m["data_wait"] for m in steps), 3),
        "epochs": [
            {k: round(m[k], 3) for k in ("images_per_s", "data_wait", "loss")} for m in epochs
        ],
    }


def main() -> None:
    dry = "--cpu-dry-run" in sys.argv
    if not dry and not torch.cuda.is_available():
        sys.exit("gpu_train_check: no CUDA device here; run it where a GPU is at hand")
    device = "cpu" if dry else "cuda:0"
    cores = len(os.sched_getaffinity(0))
    workers = 2 if dry else cores
    work = Path(tempfile.mkdtemp(prefix="alexnet-gpu-check-"))
    t0 = time.perf_counter()
    if dry:
        out = write_data_root(work / "data", 240, 40, classes=10, per_shard=40, repeat=2)
    else:
        out = write_data_root(work / "data", 25_000, 1_000, per_shard=250, repeat=4)
    # (copies below must match `repeat` here)
    result: dict = {
        "device": "cpu (dry run)" if dry else torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "cores": cores,
        "data_s": round(time.perf_counter() - t0, 1),
    }
    listed = json.loads((out / "manifest.json").read_text())["splits"]["train"]["shards"]
    copies = 2 if dry else 4  # the `repeat` above
    unique = shard_paths(out, "train")[: len(listed) // copies]  # each image once
    images = sum(s["count"] for s in listed[: len(unique)])
    rate = images / bare_parallel(unique, cores)
    result["bare_decode"] = {"processes": cores, "images_per_s": round(rate, 1)}
    replay = 8 if dry else 1600
    result["ceiling"] = {
        way: round(absorb(way, workers, replay, device=device)["images_per_s"], 1)
        for way in ("tensors", "slots")
    }
    basis = lighting_basis(read_stats(out), "paper")
    seconds, steady, after = run_loader(unique, basis, workers, device)
    result["loader"] = {
        "workers": workers,
        "images_per_s": round(images / seconds, 1),
        "steady_images_per_s": round(after / steady, 1),
    }
    width, steps = (0.0625, 1) if dry else (1.0, 30)
    result["steps"] = {
        f"batch {b}": round(training_steps(device, b, width, steps, compiled=not dry), 1)
        for b in ((4,) if dry else (128, 256))
    }
    result["train"] = run_train(out, dry, workers)
    limit = min(next(iter(result["steps"].values())), result["bare_decode"]["images_per_s"])
    result["train"]["over_min_step_bare"] = round(result["train"]["images_per_s"] / limit, 3)
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
