"""`alexnet predict OUT --run NAME IMAGE...`: classify image files with a trained run.

Each file goes through exactly the path its data root's shards were made with:
the preprocess stage's own `ImageProcessor`, built from the settings the
manifest records (decode any format the stage accepts, quirky ones included;
shorter side to 256; the central 256x256; stored as JPEG or PNG and decoded
back, so the pixels are those a shard would hold), then evaluation's own
`view_probs` (the run's mean image, 10 patches or the centre one, softmax
averaged). It lives on the top floor because it joins the two stages.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from preprocessing.image import ImageProcessor, Processed, read_image_file
from preprocessing.plan import PrepareSettings
from shards.bucket import resolve as resolve_root
from shards.manifest import read_manifest
from shards.progress import Progress
from shards.stats import read_stats
from training.checkpoint import check_classes, load_model
from training.evaluate import check_finite, checkpoint_of
from training.inference import view_probs
from training.runlog import check_run_name


@dataclass
class Prediction:
    path: str
    top: list[dict] = field(default_factory=list)  # [{"index", "wnid", "name", "probability"}]
    error: str | None = None  # why this file could not be classified


def expand(paths: list[str]) -> list[Prediction]:
    """One Prediction per file to classify: a file as given, a folder as every visible
    file under it (in name order; an empty one: a line saying so)."""
    found = []
    for given in map(str, paths):
        if not os.path.isdir(given):
            found.append(Prediction(given))
            continue
        inside = sorted(
            os.path.join(root, name)
            for root, dirs, names in os.walk(given)
            for name in names
            if not name.startswith(".") and not any(d.startswith(".") for d in Path(root).parts)
        )
        found += [Prediction(f) for f in inside] or [
            Prediction(given, error="a folder with no file in it")
        ]
    return found


@torch.no_grad()
def predict_files(
    out: str | os.PathLike,
    run: str,
    paths: list[str],
    crops: int = 10,
    top: int = 5,
    checkpoint: str = "best",
    devices: list[str] | None = None,
    batch_size: int = 32,
    progress: bool | None = None,
) -> list[Prediction]:
    """The `top` classes of each file (a folder: of each file in it), in the order given; a
    file that cannot be read or decoded gets its reason in `error`, and the others are
    still classified. Read, decoded and classified a batch at a time (memory stays flat
    over a folder of any size), with progress on many files."""
    check_run_name(run)
    out = resolve_root(out, runs=[run])  # a URL: its local view (shards.bucket)
    manifest = read_manifest(out)
    process = ImageProcessor(PrepareSettings.from_dict(manifest.settings).image)
    loaded = load_model(checkpoint_of(out, run, checkpoint), devices)
    check_classes(loaded.path, loaded.wnids, loaded.config.model.num_classes, manifest)
    device = next(loaded.model.parameters()).device
    mean = torch.from_numpy(read_stats(out, manifest).mean).to(device)  # current ones only
    classes = manifest.classes
    results = expand(paths)
    show = Progress("predict", len(results), enabled=progress, quiet=len(results) < 2 * batch_size)
    for start in range(0, len(results), batch_size):
        ready: list[tuple[Prediction, np.ndarray]] = []
        for result in results[start : start + batch_size]:
            if result.error:
                continue
            try:
                processed = process(read_image_file(result.path))
            except OSError as err:
                result.error = f"cannot read the file: {err.strerror or err}"
                continue
            if isinstance(processed, Processed):
                ready.append((result, processed.pixels))
            else:
                result.error = processed.reason
        if ready:
            images = torch.from_numpy(np.stack([pixels for _, pixels in ready]))
            probs, _ = view_probs(loaded, images, mean, crops)
            check_finite(probs, loaded.path, "images")
            best = torch.topk(probs.cpu(), min(top, probs.shape[1]))
            for (result, _), values, indices in zip(ready, best.values, best.indices, strict=True):
                for v, i in zip(values.tolist(), indices.tolist(), strict=True):
                    c = classes[i]
                    result.top.append(
                        {"index": i, "wnid": c.wnid, "name": c.name, "probability": v}
                    )
        show.update(min(batch_size, len(results) - start))
    show.close()
    return results
