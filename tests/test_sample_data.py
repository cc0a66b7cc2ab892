"""The sample ImageNet tree: layout, counts, quirks, determinism, learnability."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError

from preprocessing import sample_data
from preprocessing.sample_data import (
    DECODABLE_QUIRKS,
    MAX_CLASSES,
    TRAIN_QUIRKS,
    UNDECODABLE_QUIRKS,
    VAL_QUIRKS,
    SampleSpec,
    generate,
    sample_class,
)

from .conftest import SMALL


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under root, by relative path (timing left out)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            if p.name == "sample-data.json":
                meta = json.loads(data)
                meta.pop("seconds")
                data = json.dumps(meta, sort_keys=True).encode()
            out[str(p.relative_to(root))] = hashlib.sha256(data).hexdigest()
    return out


def test_layout_and_counts(small_tree):
    root, report = small_tree
    mapping = (root / "LOC_synset_mapping.txt").read_text().splitlines()
    assert len(mapping) == SMALL.classes
    wnids = [line.split(" ", 1)[0] for line in mapping]
    assert all(re.fullmatch(r"n\d{8}", w) for w in wnids)
    assert wnids == sorted(wnids) and len(set(wnids)) == len(wnids)
    assert all(len(line.split(" ", 1)[1]) > 0 for line in mapping)

    assert sorted(p.name for p in (root / "train").iterdir()) == wnids
    for wnid in wnids:
        files = sorted((root / "train" / wnid).iterdir())
        assert len(files) == SMALL.train_per_class
        assert all(re.fullmatch(rf"{wnid}_\d+\.JPEG", f.name) for f in files)

    val = sorted(p.name for p in (root / "val").iterdir())
    n_val = SMALL.classes * SMALL.val_per_class
    assert val == [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, n_val + 1)]
    assert (report.n_train, report.n_val) == (SMALL.classes * SMALL.train_per_class, n_val)
    assert json.loads((root / "sample-data.json").read_text())["n_train"] == report.n_train
    assert not list(root.parent.glob(".*tmp*")), "temporary build folder left behind"


def test_val_solution_is_kaggle_format(small_tree):
    root, _ = small_tree
    wnids = [line.split()[0] for line in (root / "LOC_synset_mapping.txt").read_text().splitlines()]
    with open(root / "LOC_val_solution.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["ImageId", "PredictionString"]
    ids = {r[0] for r in rows[1:]}
    assert ids == {p.stem for p in (root / "val").iterdir()}
    per_class = {w: 0 for w in wnids}
    for image_id, pred in rows[1:]:
        wnid, *box = pred.split()
        per_class[wnid] += 1
        x0, y0, x1, y1 = map(int, box)
        with Image.open(root / "val" / f"{image_id}.JPEG") as im:
            assert 0 <= x0 < x1 < im.width and 0 <= y0 < y1 < im.height
    assert set(per_class.values()) == {SMALL.val_per_class}
    # classes are shuffled across the numbering, as in the real val set
    first = [r[1].split()[0] for r in sorted(rows[1:])][: SMALL.classes]
    assert len(set(first)) > 1


def test_quirks_are_what_they_claim(small_tree):
    root, report = small_tree
    train_kinds = [q["kind"] for q in report.quirks if q["path"].startswith("train/")]
    assert sorted(train_kinds) == sorted(TRAIN_QUIRKS * SMALL.quirks)
    assert {q["kind"] for q in report.quirks if q["path"].startswith("val/")} == set(VAL_QUIRKS)
    assert report.n_undecodable == len(UNDECODABLE_QUIRKS) * SMALL.quirks

    quirk_paths = {q["path"]: q["kind"] for q in report.quirks}
    for path in sorted(root.glob("*/**/*.JPEG")):
        rel = str(path.relative_to(root))
        kind = quirk_paths.get(rel)
        if kind in UNDECODABLE_QUIRKS:
            if kind == "empty":
                assert path.stat().st_size == 0
            with pytest.raises((OSError, UnidentifiedImageError)), Image.open(path) as im:
                im.load()
            continue
        with Image.open(path) as im:
            im.load()
            expected = {
                None: ("JPEG", "RGB"),
                "cmyk": ("JPEG", "CMYK"),
                "grayscale": ("JPEG", "L"),
                "png-named-jpeg": ("PNG", "RGB"),
            }[kind]
            assert (im.format, im.mode) == expected, rel
    assert set(DECODABLE_QUIRKS) <= set(quirk_paths.values())


def test_sizes_vary_in_both_orientations():
    spec = SampleSpec(classes=3, train_per_class=20, val_per_class=0, quirks=0)
    _, jobs = sample_data.plan(spec)
    sizes = []
    for job in jobs:
        rng = np.random.default_rng([spec.seed, 1, job.class_index, job.index])
        img, _ = sample_data.draw_image(sample_class(job.class_index), rng, spec)
        sizes.append(img.size)
    w, h = np.array(sizes).T
    assert w.min() >= spec.min_side and h.min() >= spec.min_side
    assert w.max() <= spec.max_side and h.max() <= spec.max_side
    assert (w > h).sum() >= 5 and (h > w).sum() >= 5, "want landscape and portrait images"
    assert np.minimum(w, h).min() < 200 and np.maximum(w, h).max() > 400


def test_same_seed_same_bytes_whatever_the_workers(tmp_path, small_tree):
    root, _ = small_tree
    again = tmp_path / "again"
    generate(again, SMALL, workers=2)
    assert tree_digest(again) == tree_digest(root)

    other = tmp_path / "other"
    generate(other, SampleSpec(**{**SMALL.__dict__, "seed": SMALL.seed + 1}))
    a, b = tree_digest(root), tree_digest(other)
    same = [k for k in a if k.endswith(".JPEG") and a[k] == b.get(k)]
    assert len(same) <= 2, same  # at most the planted empty / not-an-image files coincide


def test_more_images_per_class_keep_existing_ones(tmp_path):
    small = SampleSpec(classes=2, train_per_class=3, val_per_class=0, quirks=0)
    big = SampleSpec(classes=2, train_per_class=5, val_per_class=0, quirks=0)
    a = tree_digest(generate(tmp_path / "a", small) and tmp_path / "a")
    b = tree_digest(generate(tmp_path / "b", big) and tmp_path / "b")
    train = {k: v for k, v in a.items() if k.startswith("train/")}
    assert train and all(b[k] == v for k, v in train.items())


def test_rerun_is_a_no_op_and_foreign_folders_are_never_touched(tmp_path, small_tree):
    root, _ = small_tree
    before = tree_digest(root)
    report = generate(root, SMALL)
    assert report.seconds == 0.0 and tree_digest(root) == before

    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="not empty"):
        generate(foreign, SMALL)
    assert [p.name for p in foreign.iterdir()] == ["holiday.jpg"]
    assert (foreign / "holiday.jpg").read_bytes() == b"precious"


def test_failure_midway_leaves_nothing(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = sample_data._encode

    def failing(img, quirk, rng):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("disk on fire")
        return real(img, quirk, rng)

    monkeypatch.setattr(sample_data, "_encode", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        generate(
            tmp_path / "tree", SampleSpec(classes=2, train_per_class=4, val_per_class=1, quirks=0)
        )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"classes": 0}, "classes is out of range: 0"),
        ({"classes": MAX_CLASSES + 1}, f"classes is out of range: {MAX_CLASSES + 1}"),
        ({"classes": 1, "train_per_class": 5, "quirks": 1}, "quirks"),
        ({"min_side": 300, "max_side": 200}, "--min-side"),
    ],
)
def test_impossible_settings_are_clear_errors(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):  # when the settings are made
        generate(tmp_path / "x", SampleSpec(**kwargs))
    assert not (tmp_path / "x").exists()


def test_classes_differ_in_shape_colour_and_texture():
    classes = [sample_class(k) for k in range(MAX_CLASSES)]
    assert len({(c.shape, c.colour, c.texture) for c in classes}) == MAX_CLASSES
    first = classes[:8]
    for attr in ("shape", "colour", "texture"):
        assert len({getattr(c, attr) for c in first}) == 8
    with pytest.raises(ValueError):
        sample_class(MAX_CLASSES)


def test_the_command_writes_the_kaggle_layout_and_preprocess_plans_it(tmp_path):
    """`alexnet sample-data DIR --as kaggle`: the Kaggle download's layout, which
    `alexnet preprocess --dry-run` then lists like the tree (issue 25)."""
    import subprocess
    import sys

    src = tmp_path / "kaggle"
    cmd = [sys.executable, "-m", "flows.cli", "sample-data", str(src), "--as", "kaggle"]
    small = ["--classes", "3", "--train-per-class", "8", "--val-per-class", "2", "--quirks", "1"]
    done = subprocess.run([*cmd, *small, "--workers", "1"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    images = src / "ILSVRC" / "Data" / "CLS-LOC"
    assert sorted(p.name for p in images.iterdir()) == ["test", "train", "val"]
    assert len(list((images / "val").iterdir())) == 6 and len(list((images / "test").iterdir()))
    assert {p.name for p in src.glob("LOC_*")} == {
        "LOC_sample_submission.csv",
        "LOC_synset_mapping.txt",
        "LOC_val_solution.csv",
    }
    plan = [sys.executable, "-m", "flows.cli", "preprocess", str(src), str(tmp_path / "out")]
    done = subprocess.run([*plan, "--dry-run"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line.split()[1] for line in done.stdout.splitlines()[2:]}
    assert rows == {"train": "24", "val": "6"}  # inputs of each split; test/ is not read
