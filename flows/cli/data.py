"""The data stages: `alexnet sample-data`, `preprocess`, `stats` and `verify` (no torch,
no Prefect)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from flows.cli.options import Formatter, add_cluster_options, add_rewrite, positive_int
from shards.settings import add_options, from_options


def add_sample_data(sub: argparse._SubParsersAction) -> None:
    from preprocessing.sample_data import LAYOUTS, SampleSpec

    p = sub.add_parser(
        "sample-data",
        formatter_class=Formatter,
        help="write a small synthetic ImageNet tree (ILSVRC-2012 layout)",
        description=(
            "Write a small dataset in the real ILSVRC-2012 layout to DIR: train/<wnid>/ class\n"
            "folders, a flat val/ with LOC_val_solution.csv, LOC_synset_mapping.txt, and\n"
            "DIR/sample-data.json describing it. Classes are learnable (shape, colour and\n"
            "texture per class) and the real set's quirks are planted: CMYK and grayscale\n"
            "JPEGs, a PNG named .JPEG, truncated, empty and non-image files.\n"
            "The same --seed gives byte-identical files."
        ),
    )
    p.add_argument(
        "dir", metavar="DIR", help="where to write the tree (must not exist, or be empty)"
    )
    add_options(p, SampleSpec)
    p.add_argument(
        "--as",
        dest="layout",
        choices=LAYOUTS,
        default="tree",
        help="the layout: tree (train/, val/ and the labels in DIR), kaggle (the Kaggle "
        "download as unpacked: ILSVRC/Data/CLS-LOC/{train,val,test}/, the labels in DIR) or "
        "official (ILSVRC-2012's files as downloaded: the train tar of class tars, the val "
        "tar, the devkit)",
    )
    p.add_argument(
        "--workers",
        type=positive_int,
        default=os.cpu_count() or 1,
        help="processes drawing images (the output does not depend on it)",
    )
    p.set_defaults(handler=_run_sample_data)


def _run_sample_data(args: argparse.Namespace) -> int:
    from preprocessing.sample_data import SampleSpec, generate

    spec = from_options(SampleSpec, args, layout=args.layout)
    report = generate(args.dir, spec, workers=args.workers)
    if report.seconds == 0.0:
        print(f"{args.dir}: already holds this sample tree (seed {spec.seed}); nothing to do")
    else:
        print(
            f"wrote {args.dir}: {len(report.classes)} classes, {report.n_train} train and "
            f"{report.n_val} val images ({len(report.quirks)} quirks, {report.n_undecodable} "
            f"undecodable on purpose) in {report.seconds:.1f}s"
        )
    return 0


def add_preprocess(sub: argparse._SubParsersAction) -> None:
    from preprocessing.image import ImageSettings
    from preprocessing.plan import PrepareSettings

    p = sub.add_parser(
        "preprocess",
        formatter_class=Formatter,
        help="ImageNet tree -> 256x256 WebDataset shards, manifest and rejects",
        description=(
            "Resize every image's shorter side to 256 and keep the central 256x256 crop\n"
            "(the paper's rule), writing WebDataset shards OUT/shards/{train,val}/*.tar,\n"
            "OUT/manifest.json and OUT/rejects.jsonl (undecodable inputs, with reasons),\n"
            "plus per-shard partial statistics for `alexnet stats`. One Dask task per shard.\n"
            "Deterministic: the same source and settings give the same bytes. Safe to kill:\n"
            "running the same command again keeps completed shards and finishes the job."
        ),
    )
    p.add_argument(
        "src",
        metavar="SRC",
        help="the ImageNet tree (train/<wnid>/..., val/...), the official archives, or "
        "the tree in a bucket: s3://bucket/prefix (credentials from the environment)",
    )
    p.add_argument(
        "out",
        metavar="OUT",
        help="the data root to write (new, empty, or an earlier OUT): a folder, or "
        "s3://bucket/prefix (written under a lease; see docs/multi-node.md)",
    )
    p.add_argument("--splits", default="train,val", help="comma-separated splits to process")
    p.add_argument(
        "--val-labels",
        default=None,
        help="labels of a flat val/ (LOC_val_solution.csv or 'file wnid|index' lines); "
        "found under SRC when not given",
    )
    add_options(p, PrepareSettings)
    add_options(p, ImageSettings)
    add_rewrite(p)
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="list what would be written (shards per split; what OUT keeps, adds, rewrites, "
        "removes) without doing any image work or writing anything, and exit",
    )
    add_cluster_options(p)
    p.set_defaults(handler=_run_preprocess)


def _run_preprocess(args: argparse.Namespace) -> int:
    from preprocessing.image import ImageSettings
    from preprocessing.prepare import PrepareSettings, preprocess

    settings = from_options(PrepareSettings, args, image=from_options(ImageSettings, args))
    splits = tuple(s.strip() for s in args.splits.split(",") if s.strip())
    if args.dry_run:
        return _print_dry_run(args, settings, splits)
    report = preprocess(
        args.src,
        args.out,
        settings,
        splits=splits,
        val_labels=args.val_labels,
        workers=args.workers,
        dask_address=args.dask_address,
        rewrite=args.rewrite,
    )
    m = report.manifest
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for split, entry in m.splits.items():
        print(
            f"{split}: {entry.count} images in {len(entry.shards)} shards, "
            f"{entry.rejected} rejected"
        )
    if report.shards_written == 0:
        print(f"{args.out}: every shard was already complete; nothing to do")
    else:
        print(f"wrote {report.shards_written} shards, kept {report.shards_reused} complete ones")
    print(f"manifest: {_in(args.out, 'manifest.json')}; rejects: {_in(args.out, 'rejects.jsonl')}")
    return 0


def _print_dry_run(args: argparse.Namespace, settings: object, splits: tuple[str, ...]) -> int:
    from preprocessing.prepare import dry_run

    plan = dry_run(args.src, args.out, settings, splits=splits, val_labels=args.val_labels)
    columns = ["inputs", "shards", "keep", "write", "rewrite", "remove"]
    columns += ["added", "changed", "deleted"]
    print(f"dry run, nothing written: {plan.layout}")
    print(f"{'split':<6}" + "".join(f"{c:>9}" for c in columns))
    for split, counts in plan.splits.items():
        print(f"{split:<6}" + "".join(f"{counts[c]:>9}" for c in columns))
    if plan.unlisted:
        print(f"{plan.unlisted} inputs the listing refuses (they go to rejects.jsonl)")
    return 0


def add_stats(sub: argparse._SubParsersAction) -> None:
    from shards.stats import SCALES

    p = sub.add_parser(
        "stats",
        formatter_class=Formatter,
        help="mean image and RGB PCA eigenpairs of the training shards, with Dask",
        description=(
            "Reduce the train shards' partial sums (written by `alexnet preprocess`; computed\n"
            "from the decoded pixels for shards without them) into OUT/stats/mean.npy (the\n"
            "per-pixel mean image, float32 256x256x3 on the 0-255 scale) and OUT/stats/pca.json\n"
            "(eigenvalues and eigenvectors of the 3x3 RGB covariance). Exact integer sums:\n"
            "the result does not depend on workers or shard order."
        ),
    )
    p.add_argument(
        "out",
        metavar="OUT",
        help="a data root written by `alexnet preprocess` (a folder, or s3://bucket/prefix)",
    )
    p.add_argument(
        "--scale",
        choices=sorted(SCALES),
        default="pixel/255",
        help="values the covariance is taken on (pixel/255 by default: docs/alexnet-spec.md, "
        "section 3)",
    )
    p.add_argument(
        "--from-pixels",
        action="store_true",
        default=False,
        help="ignore stored partial sums and decode every training image",
    )
    add_cluster_options(p)
    p.set_defaults(handler=_run_stats)


def _run_stats(args: argparse.Namespace) -> int:
    from preprocessing.stats import compute_stats

    report = compute_stats(
        args.out,
        scale=args.scale,
        from_pixels=args.from_pixels,
        workers=args.workers,
        dask_address=args.dask_address,
    )
    s = report.stats
    sources = ", ".join(f"{n} from {k}" for k, n in sorted(report.sources.items()))
    print(
        f"{s.n_images} training images ({s.n_pixels:,} pixels), {len(s.shards)} shards: {sources}"
    )
    print("mean RGB (0-255): " + " ".join(f"{v:.2f}" for v in s.mean_rgb))
    print(f"eigenvalues ({s.scale}): " + " ".join(f"{v:.6g}" for v in s.eigenvalues))
    for i, v in enumerate(s.eigenvectors):
        print(f"eigenvector {i}: " + " ".join(f"{x:+.4f}" for x in v))
    print(f"wrote {_in(args.out, 'stats', 'mean.npy')} and {_in(args.out, 'stats', 'pca.json')}")
    return 0


def add_verify(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify",
        formatter_class=Formatter,
        help="check a data root's shards and statistics against its manifest",
        description=(
            "Check that every shard the manifest lists is there with its recorded size and\n"
            "sha256 (and its partial-statistics file), and that OUT/stats/ covers the\n"
            "current train shards. With --deep, also parse every tar and check each sample\n"
            "and each shard's count. Reads only. Exit status 1 when anything is wrong."
        ),
    )
    p.add_argument(
        "out",
        metavar="OUT",
        help="the data root to check: a folder, or s3://bucket/prefix (every object fetched)",
    )
    p.add_argument("--deep", action="store_true", help="also parse every sample of every shard")
    p.set_defaults(handler=_run_verify)


def _run_verify(args: argparse.Namespace) -> int:
    from shards.verify import verify

    result = verify(args.out, deep=args.deep)
    for problem in result.problems:
        print(f"problem: {problem}")
    for note in result.notes:
        print(f"note: {note}")
    checked = f"{result.shards} shards, {result.bytes / 2**20:,.1f} MiB"
    if args.deep:
        checked += f", {result.samples} samples"
    if result.problems:
        print(f"{args.out}: {len(result.problems)} problems in {checked}")
        return 1
    print(f"{args.out}: ok ({checked} as the manifest lists them)")
    return 0


def _in(out: str, *names: str) -> str:
    """The file `names` of the data root OUT, as the user would name it."""
    from shards import storage

    return storage.join(out, *names) if storage.is_url(out) else str(Path(out, *names))
