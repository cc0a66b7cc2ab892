"""Small sets of real images in the ImageNet layout, to check a small-data recipe.

The sample generator draws its own classes; a recipe that learns them may still
sit at chance on real pictures. This script writes two real, low-resolution
10-class sets in the layout `alexnet preprocess` reads (train/<wnid>/, a flat
val/, LOC_val_solution.csv, LOC_synset_mapping.txt), from data that ships
inside two PyPI wheels (nothing else can be downloaded on this machine):

  digits   scikit-learn's 1,797 scanned handwritten digits (UCI), 8x8 pixels,
           17 grey levels: 1,500 for training, 297 for validation.
  photos   scikit-image's bundled photographs (astronaut, coffee, a cat, a
           rocket, bricks, grass, ...): one class per photograph, each image a
           32x32 view of a random place and scale of it, 150 training and 30
           validation views a class. `photos-low-contrast` squeezes every view
           towards its mean grey (to 0.3 of its spread; `--low-contrast`).

The wheels are read as zip files (`pip download --no-deps` fetches them when
`--wheels` holds none), never installed: scikit-image would pull in stock
Pillow over pillow-simd.

With `--train`, it then runs preprocess, stats, and `alexnet train` on each set
for each preset given, and prints the validation error per epoch:

    python benchmarks/real_images.py /tmp/real --train --epochs 10
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

PHOTOS = [
    "astronaut.png",
    "brick.png",
    "chelsea.png",
    "coffee.png",
    "grass.png",
    "gravel.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "motorcycle_left.png",
    "rocket.jpg",
]


def wheel(wheels: Path, name: str) -> zipfile.ZipFile:
    pattern = name.replace("-", "_") + "-*.whl"
    found = sorted(wheels.glob(pattern))
    if not found:
        wheels.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(wheels), name]
        subprocess.run(cmd, check=True)
        found = sorted(wheels.glob(pattern))
    if not found:
        raise SystemExit(f"no {name} wheel in {wheels}")
    return zipfile.ZipFile(found[-1])


def write_tree(root: Path, train: list[tuple[np.ndarray, int]], val: list, names: list[str]):
    """Writes PNGs (lossless) in the ILSVRC-2012 layout."""
    wnids = [f"n{9000000 + i:08d}" for i in range(len(names))]
    for i, (pixels, c) in enumerate(train):
        folder = root / "train" / wnids[c]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / f"{wnids[c]}_{i}.png")
    (root / "val").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (pixels, c) in enumerate(val):
        image_id = f"ILSVRC2012_val_{i + 1:08d}"
        Image.fromarray(pixels).save(root / "val" / f"{image_id}.png")
        rows.append(f"{image_id},{wnids[c]} 0 0 1 1\n")
    (root / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "".join(rows))
    (root / "LOC_synset_mapping.txt").write_text(
        "".join(f"{w} {n}\n" for w, n in zip(wnids, names, strict=True))
    )


def digits(root: Path, wheels: Path) -> None:
    with wheel(wheels, "scikit-learn") as z:
        raw = gzip.decompress(z.read("sklearn/datasets/data/digits.csv.gz"))
    table = np.loadtxt(io.BytesIO(raw), delimiter=",", dtype=np.float64)
    images = (table[:, :64] * (255 / 16)).round().astype(np.uint8).reshape(-1, 8, 8)
    labels = table[:, 64].astype(int)
    order = np.random.default_rng(0).permutation(len(labels))
    items = [(np.repeat(images[i][:, :, None], 3, axis=2), int(labels[i])) for i in order]
    write_tree(root, items[:1500], items[1500:], [f"digit_{d}" for d in range(10)])


def _view(photo: np.ndarray, rng: np.random.Generator, contrast: float) -> np.ndarray:
    h, w = photo.shape[:2]
    side = int(rng.uniform(0.15, 0.5) * min(h, w))
    top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    view = Image.fromarray(photo[top : top + side, left : left + side]).resize((32, 32))
    x = np.asarray(view).astype(np.float64)
    x = x.mean() + contrast * (x - x.mean())
    return x.round().clip(0, 255).astype(np.uint8)


def photos(root: Path, wheels: Path, contrast: float) -> None:
    with wheel(wheels, "scikit-image") as z:
        pictures = []
        for name in PHOTOS:
            with Image.open(io.BytesIO(z.read(f"skimage/data/{name}"))) as im:
                pictures.append(np.asarray(im.convert("RGB")))
    rng = np.random.default_rng(1)
    train = [(_view(p, rng, contrast), c) for c, p in enumerate(pictures) for _ in range(150)]
    val = [(_view(p, rng, contrast), c) for c, p in enumerate(pictures) for _ in range(30)]
    order = rng.permutation(len(val))
    write_tree(root, train, [val[i] for i in order], [n.split(".")[0] for n in PHOTOS])


def alexnet(*args: str) -> None:
    subprocess.run([str(Path(sys.executable).with_name("alexnet")), *args], check=True)


def errors(run: Path) -> list[float]:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [round(x["val_top1_error"], 3) for x in lines if "val_top1_error" in x]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root", type=Path, help="where to write the sets (one folder each)")
    p.add_argument("--wheels", type=Path, help="a folder with the two wheels (default ROOT/wheels)")
    p.add_argument("--sets", nargs="+", default=["digits", "photos", "photos-low-contrast"])
    p.add_argument("--low-contrast", type=float, default=0.3, help="photos-low-contrast's factor")
    p.add_argument("--train", action="store_true", help="then preprocess and train on each set")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--preset", default="smoke")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    p.add_argument("--run", default="real", help="the run's name in each set's OUT/runs/")
    a = p.parse_args()
    wheels = a.wheels or a.root / "wheels"
    makers = {
        "digits": lambda src: digits(src, wheels),
        "photos": lambda src: photos(src, wheels, 1.0),
        "photos-low-contrast": lambda src: photos(src, wheels, a.low_contrast),
    }
    for name in a.sets:
        src, out = a.root / name / "src", a.root / name / "out"
        if not (src / "LOC_synset_mapping.txt").exists():
            makers[name](src)
        if not a.train:
            print(f"{name}: {src}")
            continue
        if not (out / "stats" / "pca.json").exists():
            alexnet("preprocess", str(src), str(out), "--format", "png")
            alexnet("stats", str(out))
        sets = [f"epochs={a.epochs}", *a.overrides]
        settings = [x for s in sets for x in ("--set", s)]
        result = {"set": name, "preset": a.preset, "overrides": a.overrides}
        try:
            alexnet("train", str(out), "--run", a.run, "--preset", a.preset, *settings)
        except subprocess.CalledProcessError as err:  # e.g. a diverged loss: its line is above
            result["failed"] = f"alexnet train exited with {err.returncode}"
        if (out / "runs" / a.run / "metrics.jsonl").exists():
            result["val_top1_error"] = errors(out / "runs" / a.run)
        print(json.dumps(result))


if __name__ == "__main__":
    main()
