"""The GPU check of the model: placement-independent results, and training-step speed.

    .venv/bin/python benchmarks/gpu_check.py          # needs CUDA; about 2 minutes on an H100

1. The two-column AlexNet with its columns on (cuda:0, cpu) and on (cuda:0,
   cuda:0) gives the same logits and gradients as with both on the CPU (same
   weights, dropout off, TF32 off so that float32 means float32).
2. Training-step speed at batch 128 on cuda:0 for the two-column, grouped and
   plain nets: float32, then bf16 autocast with channels_last
   (benchmarks/model.py's measurement).

Prints one JSON object; record it in benchmarks/README.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

from training.architecture import AlexNetConfig
from training.model import AlexNet


def grads_and_logits(model: AlexNet, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict]:
    model.eval()  # dropout off: the comparison is deterministic
    model.zero_grad()
    logits = model(x)
    nn.functional.cross_entropy(logits, y.to(logits.device)).backward()  # labels where logits are
    return logits.detach().cpu(), {k: p.grad.detach().cpu() for k, p in model.named_parameters()}


def main() -> None:
    # --cpu-dry-run: every code path on the CPU at a tiny size, to check the script
    # itself where no GPU is at hand (the test suite does this).
    dry = "--cpu-dry-run" in sys.argv
    gpu = "cpu" if dry else "cuda:0"
    if not dry and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device here; run it where a GPU is at hand")
    size = {"width": 0.125, "num_classes": 10} if dry else {}
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    reference = AlexNet(AlexNetConfig(**size), devices=["cpu", "cpu"])
    with torch.no_grad():  # weights of a scale that gives logits of order 1
        for p in reference.parameters():
            if p.ndim > 1:
                p.normal_(0, (2 / p[0].numel()) ** 0.5)
    state = reference.state_dict()
    x, y = torch.randn(8, 3, 227, 227), torch.randint(0, reference.config.num_classes, (8,))
    ref_logits, ref_grads = grads_and_logits(reference, x, y)
    name = "cpu (dry run)" if dry else torch.cuda.get_device_name(0)
    result: dict = {"device": name, "torch": torch.__version__, "placement": {}}
    for devices in ([gpu, "cpu"], [gpu, gpu]):
        model = AlexNet(AlexNetConfig(**size), devices=devices)
        model.load_state_dict(state)
        logits, grads = grads_and_logits(model, x, y)
        result["placement"][" + ".join(devices)] = {
            "max_abs_logit_diff": float((logits - ref_logits).abs().max()),
            "max_logit": float(ref_logits.abs().max()),
            "max_rel_grad_diff": max(
                float((grads[k] - g).abs().max() / (g.abs().max() + 1e-12))
                for k, g in ref_grads.items()
            ),
        }
    bench = Path(__file__).with_name("model.py")
    result["speed"] = {}
    small = ["--batch", "4", "--width", "0.125", "--repeats", "1"] if dry else ["--repeats", "10"]
    for flags in ([], ["--bf16", "--channels-last"]):
        out = subprocess.run(
            [sys.executable, str(bench), "--device", gpu.split(":")[0], *small, *flags],
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        )
        result["speed"]["bf16+channels_last" if flags else "fp32"] = json.loads(out.stdout)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
