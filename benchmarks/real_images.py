"""Small sets of real images in the ImageNet layout, to check a small-data recipe.

The sample generator draws its own classes; a recipe that learns them may still
sit at chance on real pictures. This script writes six real 10-class sets in
the layout `alexnet preprocess` reads (train/<wnid>/, a flat val/,
LOC_val_solution.csv, LOC_synset_mapping.txt), from data that ships inside two
PyPI wheels (nothing else can be downloaded on this machine):

  digits         scikit-learn's 1,797 scanned handwritten digits (UCI), 8x8
                 pixels, 17 grey levels: 1,500 for training, 297 for validation.
  digits-colour  the same digits drawn in a random colour on a random
                 background, 120-420 px a side, with Gaussian noise
                 (sigma 10-40 grey levels): the kind of set of one's own that
                 once sat at chance for six epochs.
  photos         scikit-image's bundled photographs (astronaut, coffee, a cat, a
                 rocket, bricks, grass, ...): one class per photograph, each
                 image a 32x32 view of a random place and scale of it, 150
                 training and 30 validation views a class.
  photos-low-contrast  the same, every view squeezed towards its mean grey (to
                 0.3 of its spread; `--low-contrast`).
  photos-varied  the same photographs, views 32-400 px a side, each channel
                 scaled by 0.7-1.3 and Gaussian noise (sigma 0-25) added.
  others-varied  ten other pictures, grey and colour (a camera man, coins, the
                 moon, a page of text, cells, a retina, a Chinese temple, a
                 flower, ...), views as in photos-varied.

The wheels are read as zip files (`pip download --no-deps` fetches them when
`--wheels` holds none), never installed: scikit-image would pull in stock
Pillow over pillow-simd.

With `--train`, it then runs preprocess, stats, and `alexnet train` on each set
for each seed given, prints the validation error per epoch as JSON lines, and
ends with a table of the worst error over the seeds after epochs 1, 3 and the
last:

    python benchmarks/real_images.py /tmp/real --train --epochs 10 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import subprocess
import sys
import zipfile
from dataclasses import dataclass
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
# (wheel, file in it): pictures none of the photos set uses, grey and colour.
OTHERS = [
    *(("scikit-image", f"skimage/data/{n}") for n in ("camera.png", "coins.png", "moon.png")),
    *(("scikit-image", f"skimage/data/{n}") for n in ("page.png", "text.png", "cell.png")),
    *(("scikit-image", f"skimage/data/{n}") for n in ("clock_motion.png", "retina.jpg")),
    ("scikit-learn", "sklearn/datasets/images/china.jpg"),
    ("scikit-learn", "sklearn/datasets/images/flower.jpg"),
]


@dataclass(frozen=True)
class Look:
    """How a view of a picture is drawn: its side in pixels (a range), its contrast,
    how far each channel's gain may stray from 1, and the noise's sigma (a range)."""

    sides: tuple[int, int] = (32, 32)
    contrast: float = 1.0
    gain: float = 0.0
    noise: tuple[float, float] = (0.0, 0.0)


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


def _digits(wheels: Path) -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 digits as 8x8 values in 0..1 and their labels, in a fixed shuffled order."""
    with wheel(wheels, "scikit-learn") as z:
        raw = gzip.decompress(z.read("sklearn/datasets/data/digits.csv.gz"))
    table = np.loadtxt(io.BytesIO(raw), delimiter=",", dtype=np.float64)
    order = np.random.default_rng(0).permutation(len(table))
    return table[order, :64].reshape(-1, 8, 8) / 16, table[order, 64].astype(int)


def digits(root: Path, wheels: Path) -> None:
    images, labels = _digits(wheels)
    grey = (images * 255).round().astype(np.uint8)
    rgb = np.repeat(grey[:, :, :, None], 3, axis=3)
    items = [(x, int(c)) for x, c in zip(rgb, labels, strict=True)]
    write_tree(root, items[:1500], items[1500:], [f"digit_{d}" for d in range(10)])


def _coloured(ink: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One digit in a random colour on a random background, 120-420 px, with noise."""
    side = int(rng.integers(120, 421))
    a = np.asarray(Image.fromarray((ink * 255).astype(np.uint8)).resize((side, side)))
    fg, bg = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    while np.abs(fg - bg).sum() < 150:  # a digit one can see
        fg, bg = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    alpha = a[:, :, None] / 255
    x = bg * (1 - alpha) + fg * alpha + rng.normal(0, rng.uniform(10, 40), (side, side, 3))
    return x.round().clip(0, 255).astype(np.uint8)


def digits_colour(root: Path, wheels: Path) -> None:
    images, labels = _digits(wheels)
    rng = np.random.default_rng(2)
    items = [(_coloured(g, rng), int(c)) for g, c in zip(images, labels, strict=True)]
    write_tree(root, items[:1500], items[1500:], [f"digit_{d}" for d in range(10)])


def _view(photo: np.ndarray, rng: np.random.Generator, look: Look) -> np.ndarray:
    h, w = photo.shape[:2]
    side = int(rng.uniform(0.15, 0.5) * min(h, w))
    top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    out = int(rng.integers(look.sides[0], look.sides[1] + 1))
    view = Image.fromarray(photo[top : top + side, left : left + side]).resize((out, out))
    x = np.asarray(view).astype(np.float64)
    x = x.mean() + look.contrast * (x - x.mean())
    x = x * rng.uniform(1 - look.gain, 1 + look.gain, 3)
    x = x + rng.normal(0, rng.uniform(*look.noise), x.shape)
    return x.round().clip(0, 255).astype(np.uint8)


def pictures(wheels: Path, files: list[tuple[str, str]]) -> list[np.ndarray]:
    out = []
    for package, name in files:
        with wheel(wheels, package) as z, Image.open(io.BytesIO(z.read(name))) as im:
            out.append(np.asarray(im.convert("RGB")))
    return out


def photos(root: Path, wheels: Path, files: list[tuple[str, str]], look: Look) -> None:
    """One class per picture: 150 training and 30 validation views of each."""
    rng = np.random.default_rng(1)
    shown = pictures(wheels, files)
    train = [(_view(p, rng, look), c) for c, p in enumerate(shown) for _ in range(150)]
    val = [(_view(p, rng, look), c) for c, p in enumerate(shown) for _ in range(30)]
    order = rng.permutation(len(val))
    names = [Path(n).stem for _, n in files]
    write_tree(root, train, [val[i] for i in order], names)


def alexnet(*args: str) -> None:
    subprocess.run([str(Path(sys.executable).with_name("alexnet")), *args], check=True)


def errors(run: Path) -> list[float]:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [round(x["val_top1_error"], 3) for x in lines if "val_top1_error" in x]


SETS = ["digits", "digits-colour", "photos", "photos-low-contrast"]
SETS += ["photos-varied", "others-varied"]


def makers(wheels: Path, low_contrast: float) -> dict:
    """Each set's name -> a function writing it into a folder."""
    shots = [("scikit-image", f"skimage/data/{n}") for n in PHOTOS]
    varied = Look(sides=(32, 400), gain=0.3, noise=(0.0, 25.0))
    return {
        "digits": lambda src: digits(src, wheels),
        "digits-colour": lambda src: digits_colour(src, wheels),
        "photos": lambda src: photos(src, wheels, shots, Look()),
        "photos-low-contrast": lambda src: photos(src, wheels, shots, Look(contrast=low_contrast)),
        "photos-varied": lambda src: photos(src, wheels, shots, varied),
        "others-varied": lambda src: photos(src, wheels, OTHERS, varied),
    }


def train(out: Path, run: str, a: argparse.Namespace, seed: int) -> dict:
    """One training run (kept if OUT/runs/RUN already holds its epochs); its errors."""
    result = {"set": out.parent.name, "preset": a.preset, "seed": seed, "overrides": a.overrides}
    done = out / "runs" / run / "metrics.jsonl"
    if not (done.exists() and len(errors(out / "runs" / run)) >= a.epochs):
        sets = [f"epochs={a.epochs}", f"seed={seed}", *a.overrides]
        settings = [x for s in sets for x in ("--set", s)]
        try:
            alexnet("train", str(out), "--run", run, "--preset", a.preset, *settings)
        except subprocess.CalledProcessError as err:  # e.g. a diverged loss: its line is above
            result["failed"] = f"alexnet train exited with {err.returncode}"
    if done.exists():
        result["val_top1_error"] = errors(out / "runs" / run)
    print(json.dumps(result), flush=True)
    return result


def table(results: list[dict], epochs: int) -> str:
    """Markdown: per set, the worst (highest) val top-1 error over the seeds after
    epochs 1, 3 and the last, and the seeds' last errors."""
    at = sorted({1, min(3, epochs), epochs})
    rows = ["| set | seeds | " + " | ".join(f"worst after {e}" for e in at) + " | last, each |"]
    rows.append("|---" * (len(at) + 3) + "|")
    for name in dict.fromkeys(r["set"] for r in results):
        mine = [r for r in results if r["set"] == name]
        curves = [r.get("val_top1_error", []) for r in mine]
        worst = [
            max(c[e - 1] for c in curves) if all(len(c) >= e for c in curves) else None for e in at
        ]
        cells = ["failed" if w is None else f"{w:.1%}" for w in worst]
        last = ", ".join(f"{c[-1]:.1%}" if c else "-" for c in curves)
        rows.append(f"| {name} | {len(mine)} | " + " | ".join(cells) + f" | {last} |")
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root", type=Path, help="where to write the sets (one folder each)")
    p.add_argument("--wheels", type=Path, help="a folder with the two wheels (default ROOT/wheels)")
    p.add_argument("--sets", nargs="+", default=SETS, choices=SETS, metavar="SET")
    p.add_argument("--low-contrast", type=float, default=0.3, help="photos-low-contrast's factor")
    p.add_argument("--train", action="store_true", help="then preprocess and train on each set")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per seed")
    p.add_argument("--preset", default="smoke")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    p.add_argument(
        "--run", default="real", help="runs are OUT/runs/RUN-seedN (kept when already trained)"
    )
    a = p.parse_args()
    make = makers(a.wheels or a.root / "wheels", a.low_contrast)
    results = []
    for name in a.sets:
        src, out = a.root / name / "src", a.root / name / "out"
        if not (src / "LOC_synset_mapping.txt").exists():
            make[name](src)
        if not a.train:
            print(f"{name}: {src}")
            continue
        if not (out / "stats" / "pca.json").exists():
            alexnet("preprocess", str(src), str(out), "--format", "png")
            alexnet("stats", str(out))
        results += [train(out, f"{a.run}-seed{seed}", a, seed) for seed in a.seeds]
    if results:
        print(table(results, a.epochs))


if __name__ == "__main__":
    main()
