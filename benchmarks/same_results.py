"""Does a change keep every output the same? Shards, statistics, weights, evaluation.

    .venv/bin/python benchmarks/same_results.py WORKDIR > after.json
    PYTHONPATH=OLD_CHECKOUT .venv/bin/python benchmarks/same_results.py WORKDIR2 > before.json
    diff before.json after.json            # nothing: the change preserved behaviour

Runs the real stages through `python -m flows.cli` (so PYTHONPATH picks whose
code runs: an old checkout's packages come before the editable install's):
sample-data, preprocess, stats, train (smoke preset, a fixed seed, the plateau
schedule made to drop the rate at every epoch, two loader workers) and
evaluate (10 crops). Prints the digests of everything they wrote that should
not change: each shard's sha256, the mean image and eigenpairs, the weights
after training, each epoch's learning rate, loss and validation error, and the
evaluation's numbers. Used for issue 24's replacements (simplejpeg for
training/_jpeg.c, webdataset's shuffle buffer, torch's ReduceLROnPlateau, a
jinja2 report); benchmarks/README.md records the result.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import training as tools  # whose code runs (PYTHONPATH first)

SETTINGS = [  # small, quick, and every schedule decision exercised: a drop each epoch
    "epochs=6",  # the schedule stops it after 4
    "seed=7",
    "loader_workers=2",
    "lr_patience=1",
    "lr_threshold=0.9",
    "max_lr_drops=2",
]


def alexnet(workdir: Path, *args: str) -> None:
    """`python -m flows.cli ARGS` from `workdir` (a checkout's root as the current folder
    would come first on sys.path, before PYTHONPATH)."""
    cmd = [sys.executable, "-m", "flows.cli", *args]
    subprocess.run(cmd, check=True, stdout=sys.stderr, cwd=workdir)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("workdir", type=Path, help="an empty or missing folder to write into")
    args = ap.parse_args()
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    src, out = work / "src", work / "out"
    alexnet(work, "sample-data", str(src), "--classes", "4", "--train-per-class", "24")
    alexnet(work, "preprocess", str(src), str(out), "--shard-size", "20")
    alexnet(work, "stats", str(out))
    sets = [f"--set={s}" for s in SETTINGS]
    alexnet(
        work, "train", str(out), "--run", "same", "--preset", "smoke", *sets, "--devices", "cpu,cpu"
    )
    alexnet(work, "evaluate", str(out), "--run", "same")
    run = out / "runs" / "same"
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    epochs = [e for e in epochs if "val_top1_error" in e]
    evaluation = json.loads((run / "eval.json").read_text())
    rank0 = json.loads((run / "ranks" / "rank-0.json").read_text())
    result = {
        "code": str(Path(tools.__file__).parents[1]),
        "shards": {p.name: sha256(p) for p in sorted(out.glob("shards/**/*.tar"))},
        "stats": {p.name: sha256(p) for p in sorted((out / "stats").iterdir())},
        "weights_sha256": rank0["weights_sha256"],
        "epochs": [
            {k: e[k] for k in ("epoch", "lr", "loss", "val_top1_error", "val_top5_error")}
            for e in epochs
        ],
        "evaluate": {k: v for k, v in evaluation.items() if "error" in k},
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
