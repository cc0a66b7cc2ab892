"""Forward+backward cost of the two-column AlexNet against the grouped and a plain net.

    .venv/bin/python benchmarks/model.py [--batch 128] [--width 1.0] [--repeats 3] [--device cpu]
    .venv/bin/python benchmarks/model.py --device cuda --bf16 --channels-last

Times one training step (forward, cross-entropy, backward) of three models, in
the same run, interleaved, after a warm-up step each:

  two-column  training.model.AlexNet with both columns on one device
  grouped     training.model.GroupedAlexNet (groups=2 in conv2, conv4, conv5)
  plain       GroupedAlexNet(columns=1): one column, no groups, same layer sizes

Reports the median seconds per step, images/s, the two-column/grouped ratio
(target: at most 1.1) and, on a GPU, the fraction of the card's dense bf16 (or
tf32) matrix rate that the achieved FLOP rate implies (3x the forward FLOPs
per image for a training step).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
from torch import nn

from training.architecture import AlexNetConfig
from training.model import AlexNet, GroupedAlexNet, flops_per_image

# Dense peak matrix rates (FLOP/s) by device name, for the "fraction of peak" figure.
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def build(kind: str, width: float, device: torch.device) -> nn.Module:
    if kind == "two-column":
        return AlexNet(AlexNetConfig(width=width), devices=[device, device])
    return GroupedAlexNet(
        AlexNetConfig(width=width, columns=1 if kind == "plain" else 2), device=device
    )


def step_time(model: nn.Module, x: torch.Tensor, y: torch.Tensor, bf16: bool) -> float:
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    sync()
    t0 = time.perf_counter()
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    sync()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast")
    ap.add_argument("--channels-last", action="store_true")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    kinds = ("two-column", "grouped", "plain")
    models = {k: build(k, args.width, device).train() for k in kinds}
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    if args.channels_last:
        for m in models.values():
            m.to(memory_format=torch.channels_last)
    x = torch.randn(args.batch, 3, 227, 227, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 1000, (args.batch,), device=device)
    for m in models.values():
        step_time(m, x, y, args.bf16)  # warm-up (cuDNN autotuning, allocator)
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(args.repeats):
        for k in kinds:
            times[k].append(step_time(models[k], x, y, args.bf16))
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "batch": args.batch,
        "width": args.width,
        "bf16": args.bf16,
        "channels_last": args.channels_last,
        "seconds_per_step": {k: round(v, 4) for k, v in med.items()},
        "images_per_s": {k: round(args.batch / v, 1) for k, v in med.items()},
        "ratio_two_column_over_grouped": round(med["two-column"] / med["grouped"], 3),
        "ratio_plain_over_grouped": round(med["plain"] / med["grouped"], 3),
        "raw_seconds": {k: [round(t, 4) for t in v] for k, v in times.items()},
    }
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
        flops = 3 * flops_per_image(models["two-column"].config) * args.batch / med["two-column"]
        result["two_column_tflops"] = round(flops / 1e12, 1)
        if peak:
            result["fraction_of_bf16_peak"] = round(flops / peak, 3)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
