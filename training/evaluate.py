"""The evaluation stage: `alexnet evaluate OUT --run NAME`, the way the paper reports.

10-crop test: the four corner 227x227 (or 224x224) patches and the centre patch of each
256x256 val image, and their horizontal reflections; the softmax outputs of
the ten are averaged. The ten crops of a batch of images go through the model
as one batch. `--crops 1` uses the centre patch only.

Ensembles (`--ensemble RUN ...`) average the members' softmax outputs (not
their logits), as the paper's "5 CNNs" row.

Writes to OUT/runs/NAME/: eval.json, per_class_error.json, figures/*.png.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from shards.atomic import read_json, write_json
from shards.bucket import Publisher
from shards.bucket import resolve as resolve_root
from shards.dataroot import reading
from shards.format import sha256_file
from shards.manifest import ClassEntry, read_manifest
from shards.pixels import decode_rgb
from shards.progress import Progress, plural
from shards.reader import iter_samples, shard_paths
from shards.stats import read_stats
from training.checkpoint import Loaded, check_classes, load_model
from training.inference import model_device, view_probs
from training.metrics import non_finite_rows, topk_errors
from training.report import write_report
from training.runlog import check_run_name, read_metrics, run_folder

FIGURE_EXAMPLES = 8  # val images shown in Figure 4 (their fc7 kept from the evaluation pass)


def average_members(member_probs: list[torch.Tensor]) -> torch.Tensor:
    """An ensemble's (N, C) output: the arithmetic mean of its members' softmax outputs, as
    the paper's "5 CNNs" row averages predictions (not logits: each member's are the
    softmax `view_probs` returns)."""
    return member_probs[0] if len(member_probs) == 1 else torch.stack(member_probs).mean(0)


@dataclass
class Predictions:
    """What `predict` returns: per member the (N, C) view-averaged softmax over the val
    set, the labels and samples' meta, and, of the first `keep` images, the first
    member's fc7 features of their centre crop and the images (the figures use them)."""

    probs: list[torch.Tensor]
    labels: torch.Tensor
    metas: list[dict]
    features: torch.Tensor  # (keep, 4096) float32
    images: list[np.ndarray]  # (256, 256, 3) uint8


@torch.no_grad()
def predict(
    members: list[Loaded],
    out: Path,
    crops: int,
    batch_size: int,
    limit: int | None = None,
    keep: int = 0,
) -> Predictions:
    """Run every member on the val set (or its first `limit` images); see Predictions."""
    stats = read_stats(out, read_manifest(out))
    crop = members[0].config.crop  # 227, or 224 (the paper's text): the net's own input
    if any(m.config.crop != crop for m in members):
        raise ValueError("an ensemble's members must take crops of one size (227 or 224)")
    means = {id(m): torch.from_numpy(stats.mean).to(model_device(m.model)) for m in members}
    probs: list[list[torch.Tensor]] = [[] for _ in members]
    labels, metas, batch, kept, features = [], [], [], [], []

    def flush() -> None:
        images = torch.from_numpy(np.stack([b[0] for b in batch]))  # (B, 256, 256, 3) uint8
        for k, m in enumerate(members):
            p, fc7 = view_probs(m, images, means[id(m)], crops)
            probs[k].append(p.cpu())
            wanted = min(keep - len(kept), len(batch)) if k == 0 else 0
            if wanted > 0:
                features.append(fc7[:wanted].float().cpu())
                kept.extend(b[0] for b in batch[:wanted])
        labels.extend(b[1] for b in batch)
        metas.extend(b[2] for b in batch)
        batch.clear()

    split = read_manifest(out).splits.get("val")
    total = split.count if split is not None else 0
    total = min(total, limit) if limit is not None else total
    show = Progress(f"evaluate ({plural(crops, 'view')} an image)", total, every_s=30.0)
    for n, sample in enumerate(iter_samples(shard_paths(out, "val"))):
        if limit is not None and n >= limit:
            break
        batch.append((decode_rgb(sample.image), sample.cls, {"key": sample.key, **sample.meta}))
        if len(batch) == batch_size:
            show.update(len(batch))
            flush()
    if batch:
        show.update(len(batch))
        flush()
    show.close()
    fc7s = torch.cat(features) if features else torch.zeros(0, 0)
    return Predictions([torch.cat(p) for p in probs], torch.tensor(labels), metas, fc7s, kept)


class NonFiniteOutputs(ValueError):
    """A model whose outputs hold NaN or infinity: an error, never a score."""


def check_finite(probs: torch.Tensor, checkpoint: Path, what: str = "val images") -> None:
    """Refuse outputs that hold NaN or infinity, naming the checkpoint that gave them."""
    bad = int(non_finite_rows(probs))
    if bad:
        raise NonFiniteOutputs(
            f"{checkpoint}: the model's outputs are not finite (NaN or inf) on {bad} of "
            f"{len(probs)} {what}: its weights diverged or are damaged, or the data root's "
            "statistics are (check them with `alexnet verify OUT`); no error rate is reported"
        )


def _errors(probs: torch.Tensor, labels: torch.Tensor) -> dict:
    e = topk_errors(probs, labels)
    n = len(labels)
    return {"top1_error": e[1] / n, "top5_error": e[5] / n, "n": n}


def checkpoint_of(out: Path, run: str, which: str) -> Path:
    path = (
        Path(which)
        if which not in ("best", "last")
        else run_folder(out, run) / "checkpoints" / f"{which}.pt"
    )
    if which in ("best", "last") and not run_folder(out, run).is_dir():
        runs = Path(out) / "runs"
        there = (
            sorted(p.name for p in runs.iterdir() if p.is_dir() and p.name[0] != ".")
            if (runs.is_dir())
            else []
        )
        close = difflib.get_close_matches(run, there, n=1)
        raise FileNotFoundError(
            f"{out} has no run {run!r}"
            + (f" (did you mean {close[0]!r}?)" if close else "")
            + f"; its runs: {', '.join(there) or 'none yet'}. To train one: alexnet train "
            f"{out} --run {run} --preset smoke (a CPU demo in minutes; the paper preset is "
            "for GPUs)"
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: run {run!r} has no checkpoint yet (training it: alexnet train "
            f"{out} --run {run} --resume)"
        )
    return path


def evaluate(
    out: str | os.PathLike,
    run: str,
    crops: int = 10,
    ensemble: list[str] | None = None,
    checkpoint: str = "best",
    devices: list[str] | None = None,
    batch_size: int = 32,
    figures: bool = True,
    neighbours_from: int | None = None,
) -> dict:
    """Evaluate run `run` (and an ensemble with it); write eval.json and the rest; return it."""
    runs = [check_run_name(r) for r in [run, *(ensemble or [])]]  # before anything is read
    url, out = out, resolve_root(out, runs=runs)  # a URL: its local view (shards.bucket)
    publish = Publisher.of_run(url, run_folder(out, run))
    if publish is not None:
        publish.baseline()  # what evaluation writes goes up, not the checkpoints again
    # shared: no preprocess or stats may rewrite the shards or statistics meanwhile
    with reading(out):
        result = _evaluate(
            out, runs, crops, checkpoint, devices, batch_size, figures, neighbours_from
        )
    if publish is not None:  # the results beside the run in the bucket
        publish()
    return result


def _evaluate(
    out: Path,
    runs: list[str],
    crops: int,
    checkpoint: str,
    devices: list[str] | None,
    batch_size: int,
    figures: bool,
    neighbours_from: int | None,
) -> dict:
    run = runs[0]
    if figures:  # the curves' input: a damaged line is an error before any work
        read_metrics(run_folder(out, run))
    manifest = read_manifest(out)  # a clear error before any checkpoint is read
    members = [load_model(checkpoint_of(out, r, checkpoint), devices) for r in runs]
    for m in members:  # each member's outputs are read as this root's classes
        check_classes(m.path, m.wnids, m.config.model.num_classes, manifest)
    predicted = predict(members, out, crops, batch_size, keep=FIGURE_EXAMPLES if figures else 0)
    probs, labels = predicted.probs, predicted.labels
    for m, p in zip(members, probs, strict=True):
        check_finite(p, m.path)
    result: dict = {"crops": crops, "n": len(labels)}
    entries = [
        {"run": r, "checkpoint": str(m.path.resolve()), "sha256": m.sha256, **_errors(p, labels)}
        for r, m, p in zip(runs, members, probs, strict=True)
    ]
    final = average_members(probs)
    result |= _errors(final, labels)
    result["checkpoints"] = entries
    if len(members) > 1:
        result["ensemble"] = runs
    run_dir = run_folder(out, run)
    result["by_crops"] = _by_crops(run_dir, result)
    # One set: eval.json is its marker, removed first and written last, listing every
    # file of the set with its sha256. A killed or failed evaluation leaves no eval.json,
    # never an old one beside new files.
    (run_dir / "eval.json").unlink(missing_ok=True)
    written = [run_dir / "per_class_error.json"]
    write_json(written[0], per_class(final, labels, manifest.classes))
    if figures:
        from training.figures import draw_all

        drawn = draw_all(
            out,
            run,
            members[0],
            final,
            labels,
            predicted.images,
            predicted.features,
            train_limit=neighbours_from,
        )
        result["figures"] = [str(p.resolve()) for p in drawn]  # whatever the cwd
        written += drawn
    result["files"] = {str(p.relative_to(run_dir)): sha256_file(p) for p in written}
    write_json(run_dir / "eval.json", result)
    result["report"] = str(write_report(run_dir))  # a view of the set, written after it
    return result


def _by_crops(run_dir: Path, result: dict) -> dict:
    """The errors of every crop count evaluated for these checkpoints, this one's updated:
    `--crops 1` after `--crops 10` keeps the 10-crop numbers beside the 1-crop ones (an
    earlier checkpoint's are dropped: they measured another model)."""
    models = [c["sha256"] for c in result["checkpoints"]]
    earlier = read_json(run_dir / "eval.json")
    kept = earlier.get("by_crops", {}) if isinstance(earlier, dict) else {}
    kept = {k: v for k, v in kept.items() if isinstance(v, dict) and v.get("models") == models}
    kept[str(result["crops"])] = {
        "top1_error": result["top1_error"],
        "top5_error": result["top5_error"],
        "n": result["n"],
        "models": models,
    }
    return dict(sorted(kept.items(), key=lambda kv: int(kv[0])))


def per_class(probs: torch.Tensor, labels: torch.Tensor, classes: Sequence[ClassEntry]) -> dict:
    """Top-1 and top-5 error of each class present in the val set, by wnid."""
    out = {}
    for c in sorted(set(labels.tolist())):
        rows = labels == c
        e = topk_errors(probs[rows], labels[rows])
        n = int(rows.sum())
        out[classes[c].wnid] = {
            "index": c,
            "name": classes[c].name,
            "n": n,
            "top1_error": e[1] / n,
            "top5_error": e[5] / n,
        }
    return out
