"""The sample classes are learnable: a tiny CNN trained for a few seconds on
the training images beats chance by far on the held-out val images."""

from __future__ import annotations

import csv

import numpy as np
import torch
from PIL import Image
from torch import nn

from preprocessing.sample_data import SampleSpec, generate

SIDE = 64


def load(path) -> np.ndarray:
    """Shorter side to SIDE, central SIDExSIDE crop (the paper's rule, scaled down)."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        s = SIDE / min(im.size)
        im = im.resize(
            (max(SIDE, round(im.width * s)), max(SIDE, round(im.height * s))), Image.BILINEAR
        )
        left, top = (im.width - SIDE) // 2, (im.height - SIDE) // 2
        return np.asarray(im.crop((left, top, left + SIDE, top + SIDE)))


def test_tiny_cnn_learns_the_classes(tmp_path):
    spec = SampleSpec(
        classes=8, train_per_class=40, val_per_class=10, quirks=0, seed=3, max_side=320
    )
    root = tmp_path / "tree"
    generate(root, spec, workers=2)
    wnids = [line.split()[0] for line in (root / "LOC_synset_mapping.txt").read_text().splitlines()]
    train = [
        (load(p), wnids.index(p.parent.name)) for p in sorted((root / "train").rglob("*.JPEG"))
    ]
    with open(root / "LOC_val_solution.csv") as f:
        rows = list(csv.reader(f))[1:]
    val = [(load(root / "val" / f"{i}.JPEG"), wnids.index(p.split()[0])) for i, p in rows]

    def tensors(items):
        x = torch.from_numpy(np.stack([a for a, _ in items])).permute(0, 3, 1, 2).float()
        return (x / 255 - 0.5) / 0.25, torch.tensor([c for _, c in items])

    xt, yt = tensors(train)
    xv, yv = tensors(val)
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 5, stride=2, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),  # (B, 16, 16, 16)
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),  # (B, 32, 8, 8)
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, spec.classes),
    )
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(20):
        perm = torch.randperm(len(xt))
        for start in range(0, len(xt), 32):
            idx = perm[start : start + 32]
            xb = xt[idx]
            flip = torch.rand(len(idx)) < 0.5
            xb[flip] = xb[flip].flip(-1)
            loss = nn.functional.cross_entropy(net(xb), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        accuracy = (net(xv).argmax(1) == yv).float().mean().item()
    assert accuracy >= 0.7, f"val accuracy {accuracy:.2f} (chance {1 / spec.classes:.2f})"
