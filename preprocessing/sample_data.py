"""A small, synthetic ImageNet: the real ILSVRC-2012 layout, learnable classes.

`alexnet sample-data DIR` writes a tree that the preprocessing stage reads
exactly as it reads the real ImageNet:

    DIR/train/<wnid>/<wnid>_<n>.JPEG      class folders
    DIR/val/ILSVRC2012_val_<8 digits>.JPEG flat, classes shuffled
    DIR/LOC_val_solution.csv               Kaggle: ImageId,PredictionString
    DIR/LOC_synset_mapping.txt             "wnid name", in class order
    DIR/sample-data.json                   what was made (for tests and people)

Each class is a combination of an object shape, an object colour and a
background texture, and no two of the first eight classes share any of the
three, so a small CNN learns them in a few epochs. Position, scale, rotation,
aspect ratio, background tones, noise and JPEG quality vary per image.

The real set's quirks are planted too, a few of each: CMYK JPEGs, grayscale
JPEGs, a PNG named `.JPEG`, and files that cannot be decoded (truncated,
empty, not an image). `sample-data.json` lists every one of them by path.

Determinism: every image is drawn from its own RNG seeded by
`(seed, split, class, index)`, so the same `--seed` gives byte-identical files
(whatever `--workers`), and adding images per class leaves existing ones as
they were.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from preprocessing.cluster import bounded_workers
from preprocessing.sample_images import (
    MAX_CLASSES,
    Drawn,
    SampleClass,
    draw_image,
    sample_class,
)
from shards.atomic import read_json
from shards.progress import Progress
from shards.settings import check_fields, option, rule

GENERATOR_VERSION = 1


# Quirks of the real training set, planted on purpose. The first three decode
# (to be converted to RGB); the last three cannot be decoded (to be rejected).
DECODABLE_QUIRKS = ("cmyk", "grayscale", "png-named-jpeg")
UNDECODABLE_QUIRKS = ("truncated", "empty", "not-an-image")
TRAIN_QUIRKS = DECODABLE_QUIRKS + UNDECODABLE_QUIRKS
VAL_QUIRKS = ("cmyk", "grayscale")  # the real val set has both, and no broken files

_SPLIT_CODE = {"train": 1, "val": 2}
LAYOUTS = ("tree", "kaggle", "official")
KAGGLE_IMAGES = "ILSVRC/Data/CLS-LOC"  # as preprocessing.source finds it


@dataclass(frozen=True)
class SampleSpec:
    """What to generate. Everything that changes a byte of the output is here."""

    classes: int = option(
        10, f"number of classes (at most {MAX_CLASSES})", minimum=1, maximum=MAX_CLASSES
    )
    train_per_class: int = option(100, "training images per class", minimum=1)
    val_per_class: int = option(20, "validation images per class", minimum=0)
    quirks: int = option(2, "how many of each quirk to plant in train/ (0 for none)", minimum=0)
    seed: int = option(0, "random seed")
    min_side: int = option(100, "smallest image side, px", minimum=16)
    max_side: int = option(600, "largest image side, px", minimum=16)
    # how the files are laid out: "tree" (train/, val/ and the labels in DIR), "kaggle"
    # (the Kaggle download: ILSVRC/Data/CLS-LOC/{train,val,test}/, the labels in DIR) or
    # "official" (ILSVRC-2012's train and val tars and devkit, as downloaded)
    layout: str = rule("tree", choices=LAYOUTS)

    def __post_init__(self) -> None:
        check_fields(self)
        n_train = self.classes * self.train_per_class
        if self.quirks * len(TRAIN_QUIRKS) > n_train:
            raise ValueError(
                f"{self.quirks} quirks of each of {len(TRAIN_QUIRKS)} kinds need "
                f"{self.quirks * len(TRAIN_QUIRKS)} training images, only {n_train} requested"
            )
        if self.min_side > self.max_side:
            raise ValueError(f"need --min-side <= --max-side, got {self.min_side}, {self.max_side}")


def _encode(img: Image.Image, quirk: str | None, rng: np.random.Generator) -> bytes:
    """Encode as the file on disk should hold it, planting `quirk` if given."""
    buf = io.BytesIO()
    quality = int(rng.integers(70, 96))
    if quirk == "png-named-jpeg":
        img.save(buf, "PNG")
    elif quirk == "cmyk":
        img.convert("CMYK").save(buf, "JPEG", quality=quality)
    elif quirk == "grayscale":
        img.convert("L").save(buf, "JPEG", quality=quality)
    elif quirk == "empty":
        return b""
    elif quirk == "not-an-image":
        return b"<html><head><title>404 Not Found</title></head><body>Not Found</body></html>\n"
    else:
        img.save(buf, "JPEG", quality=quality)
    data = buf.getvalue()
    if quirk == "truncated":  # a download cut off half way: valid header, half the scan
        return data[: len(data) // 2]
    return data


@dataclass(frozen=True)
class _Job:
    split: str
    class_index: int
    index: int
    relpath: str
    quirk: str | None


def _make(job: _Job, spec: SampleSpec) -> tuple[_Job, Drawn]:
    rng = np.random.default_rng([spec.seed, _SPLIT_CODE[job.split], job.class_index, job.index])
    img, bbox = draw_image(sample_class(job.class_index), rng, spec)
    data = _encode(img, job.quirk, rng)
    return job, Drawn(data, img.width, img.height, bbox, job.quirk)


def _make_chunk(jobs: list[_Job], spec: SampleSpec) -> list[tuple[_Job, Drawn]]:
    return [_make(job, spec) for job in jobs]


def plan(spec: SampleSpec) -> tuple[list[SampleClass], list[_Job]]:
    """Every file to write, in a fixed order, with the quirk planted in it (if any)."""
    classes = [sample_class(k) for k in range(spec.classes)]
    jobs: list[_Job] = []

    train = [(c, i) for c in range(spec.classes) for i in range(spec.train_per_class)]
    quirk_of: dict[tuple[int, int], str] = {}
    slots = np.random.default_rng([spec.seed, 101]).permutation(len(train))
    kinds = [k for k in TRAIN_QUIRKS for _ in range(spec.quirks)]
    for kind, slot in zip(kinds, slots, strict=False):
        quirk_of[train[slot]] = kind
    for c, i in train:
        wnid = classes[c].wnid
        jobs.append(_Job("train", c, i, f"train/{wnid}/{wnid}_{i + 1}.JPEG", quirk_of.get((c, i))))

    # val: flat and numbered in a seeded random class order, like the real set.
    val = [(c, i) for c in range(spec.classes) for i in range(spec.val_per_class)]
    order = np.random.default_rng([spec.seed, 102]).permutation(len(val))
    n_val_quirks = min(max(1, spec.quirks // 2) if spec.quirks else 0, len(val) // len(VAL_QUIRKS))
    val_kinds = [k for k in VAL_QUIRKS for _ in range(n_val_quirks)]
    for pos, v in enumerate(order):
        c, i = val[v]
        quirk = val_kinds[pos] if pos < len(val_kinds) else None
        jobs.append(_Job("val", c, i, f"val/ILSVRC2012_val_{pos + 1:08d}.JPEG", quirk))
    return classes, jobs


def _chunks(items: list[_Job], size: int) -> Iterator[list[_Job]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass
class SampleReport:
    """What `generate` wrote, also saved as DIR/sample-data.json."""

    spec: dict
    generator_version: int
    n_train: int
    n_val: int
    classes: list[dict]
    quirks: list[dict] = field(default_factory=list)  # {"path", "kind", "decodable"}
    seconds: float = 0.0

    @property
    def n_undecodable(self) -> int:
        return sum(not q["decodable"] for q in self.quirks)


def _write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _already_there(out: Path, spec: SampleSpec) -> SampleReport | None:
    """The report of an identical earlier run in `out`, if there is one."""
    old = read_json(out / "sample-data.json")
    if not isinstance(old, dict):
        return None
    written = {"layout": "tree", **(old.get("spec") or {})}  # (before layouts: a tree)
    if written != asdict(spec) or old.get("generator_version") != GENERATOR_VERSION:
        return None
    old.pop("seconds", None)
    return SampleReport(**old, seconds=0.0)


def _check_out(out: Path, spec: SampleSpec) -> SampleReport | None:
    """None when `out` may be written (absent or empty); the earlier report when it holds
    this very tree; otherwise a clear error."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory")
    if not any(out.iterdir()):
        return None
    earlier = _already_there(out, spec)
    if earlier is None:
        raise FileExistsError(
            f"{out} is not empty and does not hold a sample tree of these settings; "
            "choose a new folder or remove it first"
        )
    return earlier


def generate(
    out: str | os.PathLike,
    spec: SampleSpec | None = None,
    workers: int = 1,
    progress: bool | None = None,
) -> SampleReport:
    """Write the sample tree to `out` and return what was written.

    The tree is built in a hidden sibling folder and renamed into place, so
    `out` either does not exist, or holds a complete tree. `out` must not
    exist or be empty; if it already holds the tree of the same spec, nothing
    is written and the earlier report is returned.
    """
    spec = spec or SampleSpec()
    classes, jobs = plan(spec)
    out = Path(out)
    earlier = _check_out(out, spec)
    if earlier is not None:
        return earlier
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)

    started = time.perf_counter()
    show = Progress("sample-data", len(jobs), enabled=progress, every_s=5.0)
    report = SampleReport(asdict(spec), GENERATOR_VERSION, 0, 0, [asdict(c) for c in classes])
    solution: list[tuple[str, str]] = []
    try:
        chunks = list(_chunks(jobs, 32))
        workers = bounded_workers(workers, len(chunks))
        if workers > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                results = pool.map(_make_chunk, chunks, [spec] * len(chunks))
                _collect(results, tmp, classes, report, solution, show)
        else:
            _collect(
                map(_make_chunk, chunks, [spec] * len(chunks)), tmp, classes, report, solution, show
            )

        (tmp / "LOC_synset_mapping.txt").write_text(
            "".join(f"{c.wnid} {c.name}\n" for c in classes)
        )
        rows = "".join(f"{image_id},{pred}\n" for image_id, pred in sorted(solution))
        (tmp / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + rows)
        (tmp / "val").mkdir(exist_ok=True)
        if spec.layout == "kaggle":
            _as_kaggle(tmp, classes, sorted(solution))
        elif spec.layout == "official":
            _as_official(tmp, classes, sorted(solution))
        report.seconds = round(time.perf_counter() - started, 3)
        (tmp / "sample-data.json").write_text(json.dumps(asdict(report), indent=1) + "\n")
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        show.close()
    return report


def _as_kaggle(tmp: Path, classes: list[SampleClass], solution: list[tuple[str, str]]) -> None:
    """The tree in `tmp` rearranged as the Kaggle download unpacks: the split folders
    under ILSVRC/Data/CLS-LOC/, with a test/ folder of unlabelled images, and
    LOC_sample_submission.csv beside the other labels files."""
    images = tmp / KAGGLE_IMAGES
    images.mkdir(parents=True)
    for split in ("train", "val"):
        os.replace(tmp / split, images / split)
    (images / "test").mkdir()
    for i, (image_id, _) in enumerate(solution[:2]):  # a few unlabelled test images
        (image,) = (images / "val").glob(f"{image_id}.*")
        shutil.copyfile(image, images / "test" / f"test_{i}{image.suffix}")
    guess = " ".join(c.wnid for c in classes[:5])
    rows = "".join(f"{image_id},{guess}\n" for image_id, _ in solution)
    (tmp / "LOC_sample_submission.csv").write_text("ImageId,PredictionString\n" + rows)


def _as_official(tmp: Path, classes: list[SampleClass], solution: list[tuple[str, str]]) -> None:
    """The tree in `tmp` as ILSVRC-2012's downloads: a train tar of one tar per class, a
    flat val tar, and a devkit whose IDs are not in sorted-wnid order (reversed here)
    and which lists two internal synsets; the labels files go (the devkit has them)."""
    from preprocessing.archives import write_archives
    from preprocessing.devkit import DEVKIT, write_devkit

    write_archives(tmp, tmp)
    ids = {c.wnid: len(classes) - i for i, c in enumerate(sorted(classes, key=lambda c: c.wnid))}
    synsets = [(ids[c.wnid], c.wnid, c.name, 0) for c in classes]
    synsets += [
        (len(classes) + 1, "n00001740", "entity", 2),
        (len(classes) + 2, "n00002137", "abstraction", 1),
    ]
    val_ids = [ids[prediction.split()[0]] for _, prediction in solution]
    write_devkit(tmp / DEVKIT, synsets, val_ids)
    for gone in ("train", "val"):
        shutil.rmtree(tmp / gone)
    for gone in ("LOC_synset_mapping.txt", "LOC_val_solution.csv"):
        (tmp / gone).unlink()


def _collect(
    results: Iterator[list[tuple[_Job, Drawn]]],
    tmp: Path,
    classes: list[SampleClass],
    report: SampleReport,
    solution: list[tuple[str, str]],
    show: Progress,
) -> None:
    for chunk in results:
        for job, drawn in chunk:
            _write_bytes(tmp / job.relpath, drawn.data)
            if job.split == "train":
                report.n_train += 1
            else:
                report.n_val += 1
                image_id = Path(job.relpath).stem
                x0, y0, x1, y1 = drawn.bbox
                solution.append((image_id, f"{classes[job.class_index].wnid} {x0} {y0} {x1} {y1}"))
            if job.quirk:
                decodable = job.quirk in DECODABLE_QUIRKS
                report.quirks.append(
                    {"path": job.relpath, "kind": job.quirk, "decodable": decodable}
                )
            show.update()
