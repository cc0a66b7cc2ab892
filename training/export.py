"""`alexnet export OUT --run NAME`: a trained run as one self-contained model file.

    python: probs = session.run(None, {"images": batch})[0]     # onnxruntime

The file takes a batch of centre-cropped RGB images, (B, 3, 227, 227) float32 on
the 0-255 scale (the image's shorter side resized to 256, its central 256x256,
then the central 227x227: what `alexnet predict --crops 1` does), and returns
each image's class probabilities, (B, classes). Everything else is inside it:
the run's mean image (its centre crop), the input scale, the net (its two columns
as one grouped net: the same function), the softmax. Beside it:

    classes.json   [{"index", "wnid", "name"}] in output order
    model.json     what the input is, where the model came from (run, checkpoint
                   sha256, settings), and the preprocessing to give it

Formats: `onnx` (torch.onnx with the dynamo exporter; run it with onnxruntime, or
anything that reads ONNX opset 18), `torchscript` (`torch.jit.load`, no project
code needed).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from shards.atomic import write_bytes, write_json
from shards.format import sha256_file
from shards.manifest import read_manifest
from shards.pixels import center_offset
from shards.stats import read_stats
from training.checkpoint import check_classes, load_checkpoint, load_model
from training.model import GroupedAlexNet, OneGpuAlexNet, to_grouped

FORMATS = {"onnx": "alexnet.onnx", "torchscript": "alexnet.torchscript.pt"}


class Deployable(nn.Module):
    """(B, 3, crop, crop) float32 RGB on 0-255 -> (B, classes) softmax probabilities."""

    def __init__(self, net: nn.Module, mean_crop: torch.Tensor, input_scale: float) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", mean_crop)  # (3, crop, crop)
        self.scale = float(input_scale)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net((images - self.mean) * self.scale), dim=1)


@dataclass
class Exported:
    model: Path
    classes: Path
    info: Path


def deployable(out: Path, checkpoint: Path) -> tuple[Deployable, dict]:
    """The run's model as one module on the CPU, and what model.json says of it."""
    payload = load_checkpoint(checkpoint)
    loaded = load_model(checkpoint, ["cpu", "cpu"])
    manifest = read_manifest(out)
    check_classes(checkpoint, loaded.wnids, loaded.config.model.num_classes, manifest)
    config = loaded.config
    if payload.get("form", "two-column") == "one-gpu":
        net: nn.Module = OneGpuAlexNet(config.model, ["cpu"])
        net.load_state_dict(payload["model"])
    elif payload.get("form") == "grouped":
        net = GroupedAlexNet(config.model, "cpu")
        net.load_state_dict(payload["model"])
    else:  # the two columns as one grouped net on one device: the same function
        net = GroupedAlexNet(config.model, "cpu")
        net.load_state_dict(to_grouped(payload["model"]))
    mean = read_stats(out, manifest).mean  # (256, 256, 3) float32, 0-255
    c, size = config.crop, mean.shape[0]
    top = center_offset(size, c)
    mean_crop = torch.from_numpy(np.ascontiguousarray(mean[top : top + c, top : top + c]))
    model = Deployable(net.eval(), mean_crop.permute(2, 0, 1).contiguous(), config.input_scale)
    info = {
        "input": {
            "name": "images",
            "shape": ["batch", 3, c, c],
            "dtype": "float32",
            "layout": "NCHW, RGB, values 0-255 (not normalised: the mean is subtracted inside)",
            "preprocessing": (
                f"resize the shorter side to {size} (Lanczos), keep the central {size}x{size}, "
                f"then its central {c}x{c}"
            ),
        },
        "output": {"name": "probabilities", "shape": ["batch", len(manifest.classes)]},
        "classes": "classes.json",
        "checkpoint": {"path": str(checkpoint), "sha256": sha256_file(checkpoint)},
        "settings": config.to_dict(),
    }
    return model, info


def export(
    out: Path, run_dir: Path, checkpoint: Path, fmt: str = "onnx", dest: Path | None = None
) -> Exported:
    """Write the run's model in `fmt` with classes.json and model.json into `dest`
    (default: RUN/export/); each file atomically."""
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    model, info = deployable(out, checkpoint)
    dest = dest or run_dir / "export"
    dest.mkdir(parents=True, exist_ok=True)
    crop = info["input"]["shape"][2]
    example = torch.zeros(2, 3, crop, crop)
    target = dest / FORMATS[fmt]
    tmp = target.with_name(target.name + ".writing")
    try:
        with torch.no_grad():
            if fmt == "onnx":
                _onnx(model, example, tmp)
            else:
                torch.jit.save(torch.jit.trace(model, example), str(tmp))
        write_bytes(target, tmp.read_bytes())
    finally:
        tmp.unlink(missing_ok=True)
        tmp.with_name(tmp.name + ".data").unlink(missing_ok=True)
    classes = [
        {"index": c.index, "wnid": c.wnid, "name": c.name} for c in read_manifest(out).classes
    ]
    write_json(dest / "classes.json", classes)
    info["format"], info["file"] = fmt, target.name
    write_json(dest / "model.json", info)
    return Exported(target, dest / "classes.json", dest / "model.json")


def _onnx(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """ONNX with a dynamic batch, every weight inside the one file."""
    missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        raise RuntimeError(
            f"ONNX export needs {' and '.join(missing)}: pip install "
            "'alexnet-pipeline[export]' (or --format torchscript, which needs nothing more)"
        )
    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(
        model,
        (example,),
        dynamo=True,
        input_names=["images"],
        output_names=["probabilities"],
        dynamic_shapes={"images": {0: batch}},
        external_data=False,
        verbose=False,
    )
    program.save(str(path), external_data=False)
