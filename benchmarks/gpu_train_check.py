"""The GPU check of training: full training steps, and whether the loader keeps up.

    .venv/bin/python benchmarks/gpu_train_check.py     # needs CUDA; about 4 minutes on an H100

1. Full training steps of the two-column AlexNet (forward, loss, backward,
   PaperSGD step) on cuda:0 at batch 128 and 256, with bf16 autocast,
   channels_last and torch.compile, timed after warm-up: images/s.
2. The loader on this machine's cores (one worker per core) over a synthetic
   set of 256x256 shards written here: images/s, and whether that exceeds
   the training steps' images/s ("keeps up").

Prints one JSON object; record it in benchmarks/README.md. `--cpu-dry-run`
runs every path on the CPU at a tiny size (the test suite does).
"""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from shards.format import ShardWriter
from shards.stats import Stats
from training.data import Augment, ShardSamples, lighting_basis, loader
from training.model import AlexNet
from training.optim import PaperSGD


def training_steps(device: str, batch: int, width: float, steps: int, compiled: bool) -> float:
    model = AlexNet(width=width, devices=[device, device])
    model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if compiled else model
    opt = PaperSGD(model.parameters(), lr=0.01)
    x = torch.randn(batch, 3, 227, 227, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=device)
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


def loader_rate(n_images: int, workers: int) -> float:
    folder = Path(tempfile.mkdtemp(prefix="alexnet-gpu-check-"))
    rng = np.random.default_rng(0)
    shards = []
    for s in range(max(workers, 1) * 2):
        path = folder / f"train-{s:06d}.tar"
        with ShardWriter(path) as w:
            for i in range(n_images // (max(workers, 1) * 2)):
                small = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
                img = Image.fromarray(small).resize((256, 256), Image.BICUBIC)
                buf = io.BytesIO()
                img.save(buf, "JPEG", quality=95)
                w.write(f"k{s}_{i}", buf.getvalue(), "jpg", i % 1000, b"{}")
        shards.append(path)
    stats = Stats(np.full((256, 256, 3), 120, np.float32), np.array([0.2, 0.02, 0.005]), np.eye(3),
                  np.eye(3), "pixel/255", np.zeros(3), 1, 1, [])  # fmt: skip
    ds = ShardSamples(shards, True, Augment(), lighting_basis(stats, "paper"), batch_size=128)
    t0, seen = time.perf_counter(), 0
    for batch in loader(ds, workers):  # the per-batch work runs on the GPU, not here
        seen += len(batch.labels)
    return seen / (time.perf_counter() - t0)


def main() -> None:
    dry = "--cpu-dry-run" in sys.argv
    if not dry and not torch.cuda.is_available():
        sys.exit("gpu_train_check: no CUDA device here; run it where a GPU is at hand")
    device = "cpu" if dry else "cuda:0"
    width, steps, batches = (0.0625, 1, (4,)) if dry else (1.0, 20, (128, 256))
    result: dict = {
        "device": "cpu (dry run)" if dry else torch.cuda.get_device_name(0),
        "steps": {},
    }
    for b in batches:
        result["steps"][f"batch {b}, bf16, channels_last, compiled"] = round(
            training_steps(device, b, width, steps, compiled=not dry), 1
        )
    cores = len(os.sched_getaffinity(0))
    rate = loader_rate(64 if dry else 12800, 0 if dry else cores)
    best_step = max(result["steps"].values())
    result["loader"] = {
        "workers": cores,
        "images_per_s": round(rate, 1),
        "keeps_up": rate >= best_step,
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
