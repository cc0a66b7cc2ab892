"""The paper's figures, drawn with Pillow (matplotlib would pull stock Pillow over pillow-simd).

- conv1_kernels.png      the 96 conv1 kernels, 11x11x3, one row block per column (Figure 3)
- top5_predictions.png   val images with their top-5 labels and probabilities (Figure 4, left)
- nearest_neighbours.png val queries and the training images nearest in fc7 space (Figure 4, right)

(The training curves are report.html's charts: training/report.py.)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from shards.atomic import atomic_writer
from shards.manifest import read_manifest
from shards.pixels import center_crop, decode_rgb
from shards.progress import Progress
from shards.reader import iter_samples, shard_paths
from shards.stats import read_stats
from training.architecture import AlexNetConfig
from training.checkpoint import Loaded
from training.inference import model_device, view_probs
from training.runlog import run_folder

KERNEL_ZOOM, GAP, PER_ROW = 5, 2, 12
THUMB = 96
TRUE_LINE = 20  # the top-5 figure's row: the image, or five bars and the true label


def _save(img: Image.Image, path: Path) -> Path:
    with atomic_writer(path) as f:
        img.save(f, "PNG")
    return path


def conv1_kernels(weights: list[torch.Tensor]) -> Image.Image:
    """One block of rows per column; each kernel scaled to 0-255 on its own, zoomed 5x."""
    k = weights[0].shape[-1]
    cell = k * KERNEL_ZOOM + GAP
    rows = [int(np.ceil(w.shape[0] / PER_ROW)) for w in weights]
    img = Image.new(
        "RGB",
        (PER_ROW * cell + GAP, sum(rows) * cell + GAP * (1 + 3 * (len(weights) - 1))),
        "white",
    )
    y0 = GAP
    for w, n_rows in zip(weights, rows, strict=True):
        for i, kernel in enumerate(w.detach().float().cpu().numpy()):
            a = kernel.transpose(1, 2, 0)  # (k, k, 3)
            a = (a - a.min()) / max(float(a.max() - a.min()), 1e-12) * 255
            tile = Image.fromarray(a.astype(np.uint8)).resize((k * KERNEL_ZOOM,) * 2, Image.NEAREST)
            img.paste(tile, (GAP + (i % PER_ROW) * cell, y0 + (i // PER_ROW) * cell))
        y0 += n_rows * cell + 3 * GAP  # a wider gap between the columns' blocks
    return img


def conv1_weights(model: torch.nn.Module, config: AlexNetConfig) -> list[torch.Tensor]:
    """conv1's kernels, one tensor per column (the blocks `conv1_kernels` draws)."""
    if hasattr(model, "columns"):  # two-column: one block of kernels per column
        return [c.conv1[0].weight for c in model.columns]
    if config.columns == 1:  # the one-GPU net: one block
        return [model.conv1[0].weight]
    return list(model.conv1[0].weight.chunk(2))  # grouped: its two groups are the columns


def top5_panel(
    images: list[np.ndarray], probs: torch.Tensor, labels: list[int], names: list[str]
) -> Image.Image:
    """Each image with its five most probable classes as bars; the true class in green."""
    font = ImageFont.load_default()
    width, row_h = THUMB + 260, THUMB + TRUE_LINE
    img = Image.new("RGB", (width, row_h * len(images)), "white")
    draw = ImageDraw.Draw(img)
    for r, (pixels, p, y) in enumerate(zip(images, probs, labels, strict=True)):
        img.paste(Image.fromarray(pixels).resize((THUMB, THUMB)), (0, r * row_h))
        top = torch.topk(p, min(5, len(p)))
        for j, (v, c) in enumerate(zip(top.values.tolist(), top.indices.tolist(), strict=True)):
            y0 = r * row_h + 4 + j * 18
            colour = (40, 160, 60) if c == y else (200, 80, 60)
            draw.rectangle((THUMB + 8, y0, THUMB + 8 + int(100 * v), y0 + 12), fill=colour)
            draw.text((THUMB + 114, y0), f"{v:.2f} {short(names[c], 24)}", fill="black", font=font)
        below = r * row_h + 4 + 5 * 18  # under the bars, beside the image: never over it
        draw.text((THUMB + 8, below), f"true: {short(names[y], 40)}", fill=(40, 160, 60), font=font)
    return img


def short(name: str, n: int) -> str:
    """`name` in at most n characters, cut between words ("great white shark, white
    shark, ..." -> "great white shark..."), never in the middle of one."""
    if len(name) <= n:
        return name
    cut = name[: n - 3].rstrip(" ,;")
    if " " in cut:
        cut = cut[: cut.rfind(" ")].rstrip(" ,;")
    return cut + "..."


def neighbour_panel(queries: list[np.ndarray], rows: list[list[np.ndarray]]) -> Image.Image:
    cols = 1 + max(len(r) for r in rows)
    img = Image.new("RGB", (cols * (THUMB + 4) + 8, len(queries) * (THUMB + 4)), "white")
    for i, (q, neigh) in enumerate(zip(queries, rows, strict=True)):
        img.paste(Image.fromarray(q).resize((THUMB, THUMB)), (0, i * (THUMB + 4)))
        for j, n in enumerate(neigh):
            img.paste(
                Image.fromarray(n).resize((THUMB, THUMB)),
                (8 + (j + 1) * (THUMB + 4), i * (THUMB + 4)),
            )
    return img


@torch.no_grad()
def _feature_batches(
    loaded: Loaded, out: Path, split: str, limit: int | None, size: int = 64
) -> Iterator[tuple[torch.Tensor, list[np.ndarray]]]:
    """(fc7 features, images) of the centre crops of a split, `size` images at a time:
    all of them, or the first `limit`."""
    mean = torch.from_numpy(read_stats(out).mean).to(model_device(loaded.model))
    batch: list[np.ndarray] = []

    def features() -> torch.Tensor:  # the centre patch's fc7, as evaluation computes it
        _, fc7 = view_probs(loaded, torch.from_numpy(np.stack(batch)), mean, crops=1)
        return fc7.float().cpu()

    for n, s in enumerate(iter_samples(shard_paths(out, split))):
        if limit is not None and n >= limit:
            break
        batch.append(decode_rgb(s.image))
        if len(batch) == size:
            yield features(), batch
            batch = []
    if batch:
        yield features(), batch


def nearest_in_split(
    loaded: Loaded,
    out: Path,
    queries: torch.Tensor,
    k: int,
    limit: int | None = None,
    batch: int = 64,
) -> list[list[np.ndarray]]:
    """For each query (fc7 rows), the images of its k nearest training images (Euclidean in
    fc7, nearest first), searched over the whole train split (or its first `limit`
    images) in one streaming pass: memory holds one batch and k candidates per query,
    whatever the split's size."""
    best_d = torch.full((len(queries), 0), 0.0, dtype=torch.float64)
    best_img: list[list[np.ndarray]] = [[] for _ in range(len(queries))]
    split = read_manifest(out).splits.get("train")
    total = split.count if split is not None else 0
    show = Progress(
        "Figure 4's neighbours (fc7 of the train split)",
        min(total, limit) if limit is not None else total,
        every_s=30.0,
    )
    for feats, images in _feature_batches(loaded, out, "train", limit, batch):
        show.update(len(images))
        d = torch.cat([best_d, torch.cdist(queries.double(), feats.double())], 1)
        pool = [[*mine, *images] for mine in best_img]  # candidates: kept ones, then this batch
        keep = torch.topk(d, min(k, d.shape[1]), largest=False).indices  # nearest first
        best_d = torch.gather(d, 1, keep)
        best_img = [[pool[q][j] for j in row.tolist()] for q, row in enumerate(keep)]
    show.close()
    return best_img


def draw_all(
    out: Path,
    run: str,
    loaded: Loaded,
    probs: torch.Tensor,
    labels: torch.Tensor,
    val_images: list[np.ndarray],
    val_feats: torch.Tensor,
    n_queries: int = 5,
    n_neighbours: int = 6,
    train_limit: int | None = None,
) -> list[Path]:
    """Draw every figure into OUT/runs/RUN/figures/; return their paths.

    `probs`, `labels`: the (ensemble's) val softmax and the labels; `val_images`,
    `val_feats`: the first val images and their fc7 features, as evaluation's pass
    kept them (`Predictions`), which Figure 4 shows and searches from. Figure 4's
    neighbours are searched over the whole train split, as the paper's (`train_limit`:
    only its first images, for a quick look)."""
    folder = run_folder(out, run) / "figures"
    names = [c.name or c.wnid for c in read_manifest(out).classes]
    weights = conv1_weights(loaded.model, loaded.config.model)
    paths = [_save(conv1_kernels(weights), folder / "conv1_kernels.png")]

    crop = loaded.config.crop
    shown = [center_crop(v, crop) for v in val_images]
    top5 = top5_panel(shown, probs[: len(shown)], labels[: len(shown)].tolist(), names)
    paths.append(_save(top5, folder / "top5_predictions.png"))

    found = nearest_in_split(loaded, out, val_feats[:n_queries], n_neighbours, train_limit)
    rows = [[center_crop(image, crop) for image in row] for row in found]
    queries = [center_crop(v, crop) for v in val_images[:n_queries]]
    paths.append(_save(neighbour_panel(queries, rows), folder / "nearest_neighbours.png"))
    return paths
