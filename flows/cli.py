"""The `alexnet` command: one subcommand per stage.

Each subcommand imports its stage only when it runs, so `alexnet --help` and the
data stages start without paying for torch or Prefect.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
from collections.abc import Callable, Iterator, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import flows
from shards.settings import add_options, from_options
from training.config import PIPELINE_PRESET, PRESETS
from training.runlog import check_run_name, run_folder

Handler = Callable[[argparse.Namespace], int]


def _run_name(value: str) -> str:
    """argparse's type for a run's name (`training.runlog.check_run_name`)."""
    try:
        return check_run_name(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults in every option's help and keep descriptions as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if "(default:" in (action.help or "") or action.required:
            return action.help  # it says its default in words, or must be given
        return super()._get_help_string(action)


def _package_version() -> str:
    try:
        return version("alexnet-pipeline")
    except PackageNotFoundError:  # running from a source tree that was not installed
        return "unknown"


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _add_run(p: argparse.ArgumentParser, what: str, default: str | None = None) -> None:
    """--run (or --name: torchrun's own parser takes --run for its --run-path), checked by
    `training.runlog.check_run_name`; required unless it has a default."""
    extra = {"default": default} if default is not None else {"required": True}
    p.add_argument("--run", "--name", dest="run", type=_run_name, help=what, **extra)


def _add_model_options(p: argparse.ArgumentParser) -> None:
    """--crops, --checkpoint and --devices: how a trained run is applied (evaluate, predict)."""
    p.add_argument("--crops", type=int, choices=[1, 10], default=10, help="patches per image")
    p.add_argument("--checkpoint", default="best", help="best, last, or a checkpoint's path")
    _add_devices(p)


def _add_devices(p: argparse.ArgumentParser, default_help: str = "") -> None:
    p.add_argument(
        "--devices",
        type=lambda text: text.split(","),
        default=None,
        help="the two columns' devices, comma-separated" + default_help,
    )


def _add_cluster_options(p: argparse.ArgumentParser) -> None:
    """--workers / --dask-address: how every Dask stage chooses its cluster."""
    from preprocessing.cluster import default_workers

    workers_help = "local Dask worker processes"
    address_help = "use the Dask scheduler running at this address (tcp://host:port)"
    p.add_argument("--workers", type=_positive_int, default=default_workers(), help=workers_help)
    p.add_argument("--dask-address", default=None, help=address_help)


def _add_shard_options(p: argparse.ArgumentParser, inherit: bool = False) -> None:
    """--shard-size and --quality, as the preprocess stage declares them, and --rewrite."""
    from preprocessing.image import ImageSettings
    from preprocessing.plan import PrepareSettings

    add_options(p, PrepareSettings, only=("shard_size",), inherit=inherit)
    add_options(p, ImageSettings, only=("quality",), inherit=inherit)
    _add_rewrite(p)


def _add_rewrite(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--rewrite",
        action="store_true",
        help="allow settings other than those OUT's shards were made with, which rewrites "
        "every shard (without it, such a run is refused before anything is written)",
    )


# --- alexnet sample-data -------------------------------------------------------


def _add_sample_data(sub: argparse._SubParsersAction) -> None:
    from preprocessing.sample_data import SampleSpec

    p = sub.add_parser(
        "sample-data",
        formatter_class=_Formatter,
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
        "--workers",
        type=_positive_int,
        default=os.cpu_count() or 1,
        help="processes drawing images (the output does not depend on it)",
    )
    p.set_defaults(handler=_run_sample_data)


def _run_sample_data(args: argparse.Namespace) -> int:
    from preprocessing.sample_data import SampleSpec, generate

    spec = from_options(SampleSpec, args)
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


# --- alexnet preprocess --------------------------------------------------------


def _add_preprocess(sub: argparse._SubParsersAction) -> None:
    from preprocessing.image import ImageSettings
    from preprocessing.plan import PrepareSettings

    p = sub.add_parser(
        "preprocess",
        formatter_class=_Formatter,
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
    p.add_argument("src", metavar="SRC", help="the ImageNet tree (train/<wnid>/..., val/...)")
    p.add_argument(
        "out", metavar="OUT", help="the data root to write (new, empty, or an earlier OUT)"
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
    _add_rewrite(p)
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="list what would be written (shards per split; what OUT keeps, adds, rewrites, "
        "removes) without doing any image work or writing anything, and exit",
    )
    _add_cluster_options(p)
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
    for split, entry in m["splits"].items():
        print(
            f"{split}: {entry['count']} images in {len(entry['shards'])} shards, "
            f"{entry['rejected']} rejected"
        )
    if report.shards_written == 0:
        print(f"{args.out}: every shard was already complete; nothing to do")
    else:
        print(f"wrote {report.shards_written} shards, kept {report.shards_reused} complete ones")
    print(
        f"manifest: {Path(args.out) / 'manifest.json'}; rejects: {Path(args.out) / 'rejects.jsonl'}"
    )
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


# --- alexnet stats -------------------------------------------------------------


def _add_stats(sub: argparse._SubParsersAction) -> None:
    from shards.stats import SCALES

    p = sub.add_parser(
        "stats",
        formatter_class=_Formatter,
        help="mean image and RGB PCA eigenpairs of the training shards, with Dask",
        description=(
            "Reduce the train shards' partial sums (written by `alexnet preprocess`; computed\n"
            "from the decoded pixels for shards without them) into OUT/stats/mean.npy (the\n"
            "per-pixel mean image, float32 256x256x3 on the 0-255 scale) and OUT/stats/pca.json\n"
            "(eigenvalues and eigenvectors of the 3x3 RGB covariance). Exact integer sums:\n"
            "the result does not depend on workers or shard order."
        ),
    )
    p.add_argument("out", metavar="OUT", help="a data root written by `alexnet preprocess`")
    p.add_argument(
        "--scale",
        choices=sorted(SCALES),
        default="pixel/255",
        help="values the covariance is taken on (the spec's default: pixel/255)",
    )
    p.add_argument(
        "--from-pixels",
        action="store_true",
        default=False,
        help="ignore stored partial sums and decode every training image",
    )
    _add_cluster_options(p)
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
    print(
        f"wrote {Path(args.out) / 'stats' / 'mean.npy'} and {Path(args.out) / 'stats' / 'pca.json'}"
    )
    return 0


# --- alexnet verify ------------------------------------------------------------


def _add_verify(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify",
        formatter_class=_Formatter,
        help="check a data root's shards and statistics against its manifest",
        description=(
            "Check that every shard the manifest lists is there with its recorded size and\n"
            "sha256 (and its partial-statistics file), and that OUT/stats/ covers the\n"
            "current train shards. With --deep, also parse every tar and check each sample\n"
            "and each shard's count. Reads only. Exit status 1 when anything is wrong."
        ),
    )
    p.add_argument("out", metavar="OUT", help="the data root to check")
    p.add_argument("--deep", action="store_true", help="also parse every sample of every shard")
    p.set_defaults(handler=_run_verify)


def _run_verify(args: argparse.Namespace) -> int:
    from shards.verify import verify

    result = verify(args.out, deep=args.deep)
    for problem in result.problems:
        print(f"problem: {problem}")
    checked = f"{result.shards} shards, {result.bytes / 2**20:,.1f} MiB"
    if args.deep:
        checked += f", {result.samples} samples"
    if result.problems:
        print(f"{args.out}: {len(result.problems)} problems in {checked}")
        return 1
    print(f"{args.out}: ok ({checked} as the manifest lists them)")
    return 0


# --- alexnet train -------------------------------------------------------------


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        formatter_class=_Formatter,
        help="train the two-column AlexNet on OUT's shards (paper or smoke preset)",
        description=(
            "Train AlexNet as the paper does (section 5 of the spec) on OUT's shards and\n"
            "statistics, writing OUT/runs/RUN/: config.json, metrics.jsonl, checkpoints/.\n"
            "Settings: --preset, then --config FILE.toml, then --set key=value (for example\n"
            "--set epochs=5 --set model.width=0.5). Under torchrun, each process is one\n"
            "two-column replica and ranks read disjoint shards."
        ),
    )
    p.add_argument("out", metavar="OUT", help="a data root with shards and stats")
    _add_run(p, "the run's name (its folder under OUT/runs/); under torchrun write --name")
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="starting settings (default: paper)",
    )
    p.add_argument(
        "--config", default=None, help="a TOML (or JSON) file of settings over the preset"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting (repeatable)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        default=False,
        help="continue the run from its last checkpoint, with its saved settings (--set may "
        "change only epochs, checkpoint_every, log_every and loader_workers)",
    )
    p.add_argument(
        "--stop-after",
        type=_positive_int,
        default=None,
        help="end this invocation after N epochs (resume later with --resume)",
    )
    _add_devices(p, " (default: two GPUs, one GPU, or cpu)")
    p.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from training.config import resolve
    from training.train import train

    if args.resume and (args.preset is not None or args.config is not None):
        raise ValueError(
            "--resume continues the run with its saved settings: --preset and --config do "
            "not apply (--set epochs=N and the like can: see training.config.RESUMABLE)"
        )
    config = None if args.resume else resolve(args.preset or "paper", args.config, args.overrides)
    devices = args.devices
    result = train(
        args.out,
        args.run,
        config,
        resume=args.resume,
        stop_after=args.stop_after,
        devices=devices,
        resume_overrides=args.overrides if args.resume else None,
    )
    last = result.last
    if last:
        print(f"run {args.run}: {result.epochs_done} epochs, {result.step} steps; {result.stopped}")
        print(
            f"last epoch: val top-1 error {last['val_top1_error']:.2%}, "
            f"top-5 {last['val_top5_error']:.2%}; best top-1 {result.best_top1_error:.2%}"
        )
    print(f"run folder: {result.run_dir}")
    return 0


# --- alexnet evaluate ----------------------------------------------------------


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        formatter_class=_Formatter,
        help="10-crop top-1/top-5 error on the val shards, ensembles, the paper's figures",
        description=(
            "Evaluate a trained run as the paper reports it: the softmax outputs of ten\n"
            "227x227 patches (four corners, centre, and their reflections) averaged per image;\n"
            "top-1 and top-5 error. Writes OUT/runs/RUN/eval.json, per_class_error.json and\n"
            "figures/*.png (conv1 kernels, top-5 predictions, fc7 nearest neighbours, curves)."
        ),
    )
    p.add_argument("out", metavar="OUT", help="the data root")
    _add_run(p, "the run to evaluate")
    _add_model_options(p)
    p.add_argument(
        "--ensemble",
        nargs="+",
        type=_run_name,
        default=[],
        metavar="RUN",
        help="more runs whose softmax outputs are averaged with RUN's",
    )
    p.add_argument(
        "--batch-size", type=_positive_int, default=32, help="images per batch (x crops)"
    )
    p.add_argument(
        "--no-figures",
        dest="figures",
        action="store_false",
        default=True,
        help="skip drawing the figures",
    )
    p.add_argument(
        "--neighbours-from",
        type=_positive_int,
        default=None,
        metavar="N",
        help="search Figure 4's nearest neighbours among the first N training images only, "
        "for a quick look (default: the whole train split, as the paper)",
    )
    p.set_defaults(handler=_run_evaluate)


def _print_made(result: dict) -> None:
    """The files an evaluation made: its figures and the run's report."""
    for fig in result.get("figures", []):
        print(f"figure: {fig}")
    if result.get("report"):
        print(f"report: {result['report']}  (open it in a browser)")


def _run_evaluate(args: argparse.Namespace) -> int:
    from training.evaluate import evaluate

    devices = args.devices
    result = evaluate(
        args.out,
        args.run,
        crops=args.crops,
        ensemble=args.ensemble,
        checkpoint=args.checkpoint,
        devices=devices,
        batch_size=args.batch_size,
        figures=args.figures,
        neighbours_from=args.neighbours_from,
    )
    print(
        f"{'model':<24} {'top-1 error':>12} {'top-5 error':>12}   ({result['n']} val images, "
        f"{result['crops']} crops)"
    )
    for entry in result["checkpoints"]:
        print(f"{entry['run']:<24} {entry['top1_error']:>12.2%} {entry['top5_error']:>12.2%}")
    if "ensemble" in result:
        print(f"{'ensemble':<24} {result['top1_error']:>12.2%} {result['top5_error']:>12.2%}")
    run_dir = run_folder(args.out, args.run)
    print(f"wrote {run_dir / 'eval.json'} and {run_dir / 'per_class_error.json'}")
    _print_made(result)
    return 0


# --- alexnet pipeline ----------------------------------------------------------


def _add_pipeline(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pipeline",
        formatter_class=_Formatter,
        help="the whole pipeline as one Prefect flow, with caching (no server needed)",
        description=(
            "Run the alexnet-pipeline Prefect flow: preprocess -> stats -> train -> evaluate as\n"
            "dependent, cached tasks. Without PREFECT_API_URL, Prefect runs it on a temporary\n"
            "local server; its state lives in PREFECT_HOME (default: OUT/.prefect). A re-run on\n"
            "an unchanged source with unchanged settings is all cache hits."
        ),
    )
    p.add_argument("src", metavar="SRC", help="the ImageNet tree")
    p.add_argument("out", metavar="OUT", help="the data root")
    _add_run(p, "the training run's name", default="pipeline")
    p.add_argument(
        "--preset", choices=sorted(PRESETS), default=PIPELINE_PRESET, help="training preset"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one training setting (repeatable)",
    )
    _add_shard_options(p, inherit=True)
    p.add_argument("--crops", type=int, choices=[1, 10], default=10, help="evaluation patches")
    p.add_argument(
        "--launcher",
        default=None,
        help="start training with this command prefix instead of in-process, for example "
        "'torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29400' "
        "(see docs/multi-node.md)",
    )
    _add_cluster_options(p)
    p.set_defaults(handler=_run_pipeline)


@contextlib.contextmanager
def _prefect(src: str, out: str) -> Iterator[None]:
    """Prefect's settings for a flow run from this command, unless set already, for the
    block. With PREFECT_API_URL set, the flow runs on that server, which must answer;
    without it, on a temporary one of this command's, which dies with it however the
    command ends (`flows.server`). The source is checked first: a wrong SRC is one line
    at once, not a server start and then a traceback."""
    if os.environ.get("PREFECT_API_URL"):
        _check_server(os.environ["PREFECT_API_URL"])
    if not Path(src).is_dir():
        raise FileNotFoundError(f"source folder {src} does not exist")
    os.environ.setdefault("PREFECT_HOME", str(Path(out).resolve() / ".prefect"))
    home = Path(os.environ["PREFECT_HOME"])
    home.mkdir(parents=True, exist_ok=True)  # its SQLite file goes here
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if os.environ.get("PREFECT_API_URL"):
        yield
        return
    from flows.server import temporary_server

    with temporary_server(home):
        yield


def _launcher(text: str | None) -> list[str] | None:
    return shlex.split(text) if text else None


def _run_pipeline(args: argparse.Namespace) -> int:
    with _prefect(args.src, args.out):
        return _pipeline(args)


def _pipeline(args: argparse.Namespace) -> int:
    from flows.pipeline import alexnet_pipeline

    result = alexnet_pipeline(
        args.src,
        args.out,
        run=args.run,
        preset=args.preset,
        overrides=args.overrides,
        shard_size=args.shard_size,
        quality=args.quality,
        crops=args.crops,
        workers=args.workers,
        dask_address=args.dask_address,
        launcher=_launcher(args.launcher),
        rewrite=args.rewrite,
    )
    print(
        f"pipeline {args.run}: top-1 error {result['top1_error']:.2%}, "
        f"top-5 {result['top5_error']:.2%} ({result['crops']} crops, {result['n']} images)"
    )
    _print_made(result)
    return 0


# --- alexnet reprocess ---------------------------------------------------------


def _add_reprocess(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reprocess",
        formatter_class=_Formatter,
        help="bring OUT up to date with a changed source (the alexnet-reprocess flow)",
        description=(
            "Run the alexnet-reprocess Prefect flow once: find the inputs added, changed and\n"
            "deleted since OUT's manifest, rewrite only the shards that held changed or\n"
            "deleted inputs, append new shards for new ones, update the statistics, and\n"
            "report what changed (also in OUT/history.jsonl, a line per run). Settings are\n"
            "OUT's own unless given. `alexnet serve` runs the same flow nightly."
        ),
    )
    p.add_argument("src", metavar="SRC", help="the ImageNet tree")
    p.add_argument("out", metavar="OUT", help="the data root to bring up to date")
    _add_shard_options(p, inherit=True)
    p.add_argument(
        "--train", action="store_true", help="then train and evaluate, as alexnet pipeline does"
    )
    _add_run(p, "the run (--train)", default="pipeline")
    p.add_argument("--preset", choices=sorted(PRESETS), default=PIPELINE_PRESET, help="(--train)")
    _add_cluster_options(p)
    p.set_defaults(handler=_run_reprocess)


def _run_reprocess(args: argparse.Namespace) -> int:
    with _prefect(args.src, args.out):
        return _reprocess(args)


def _reprocess(args: argparse.Namespace) -> int:
    from flows.reprocess import alexnet_reprocess, changes_table

    summary = alexnet_reprocess(
        args.src,
        args.out,
        shard_size=args.shard_size,
        quality=args.quality,
        workers=args.workers,
        dask_address=args.dask_address,
        train=args.train,
        run=args.run,
        preset=args.preset,
        rewrite=args.rewrite,
    )
    print(changes_table(summary["changes"]), end="")
    print(
        f"{summary['shards_written']} shards written; statistics over "
        f"{summary['n_images']} training images"
    )
    return 0


# --- alexnet serve -------------------------------------------------------------


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        formatter_class=_Formatter,
        help="serve the alexnet-pipeline and alexnet-reprocess deployments to a Prefect server",
        description=(
            "Register and serve two deployments on the Prefect server at PREFECT_API_URL:\n"
            "  alexnet-pipeline/default    run with: prefect deployment run\n"
            "                              'alexnet-pipeline/default' --param src=S --param out=O\n"
            "  alexnet-reprocess/nightly   on --cron over --src and --out (when both are given)\n"
            "Runs until interrupted; each flow run executes in a subprocess of this one."
        ),
    )
    p.add_argument("--src", default=None, help="the source the deployments default to")
    p.add_argument("--out", default=None, help="the data root the deployments default to")
    p.add_argument("--cron", default=flows.NIGHTLY, help="the reprocess schedule (cron syntax)")
    p.add_argument(
        "--no-schedule", action="store_true", help="deploy the reprocess flow without a schedule"
    )
    p.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        help="Dask workers of the flows' local clusters (default: all cores)",
    )
    p.add_argument("--dask-address", default=None, help="an existing Dask scheduler to use")
    p.set_defaults(handler=_run_serve)


def _check_server(api: str) -> None:
    """A clear error, not a traceback, when the server at `api` does not answer."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{api.rstrip('/')}/health", timeout=10) as response:
            response.read()
    except urllib.error.HTTPError:
        return  # it answered (Prefect Cloud wants a key for /health): Prefect takes it from here
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise RuntimeError(
            f"no Prefect server answers at PREFECT_API_URL={api} ({err}); start one with "
            "`prefect server start --host 127.0.0.1` (see the README)"
        ) from None


def _run_serve(args: argparse.Namespace) -> int:
    if not os.environ.get("PREFECT_API_URL"):
        raise ValueError(
            "alexnet serve needs a running Prefect server: start one with "
            "`prefect server start --host 127.0.0.1` and set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api (see the README)"
        )
    _check_server(os.environ["PREFECT_API_URL"])
    os.environ.setdefault("DO_NOT_TRACK", "1")
    from flows.deploy import serve

    serve(
        src=args.src,
        out=args.out,
        cron=None if args.no_schedule else args.cron,
        workers=args.workers,
        dask_address=args.dask_address,
    )
    return 0


# --- alexnet predict -----------------------------------------------------------


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        formatter_class=_Formatter,
        help="classify image files with a trained run",
        description=(
            "Classify image files (any format the preprocess stage accepts) with a run's\n"
            "checkpoint, through exactly the path OUT's shards were made with: the shorter\n"
            "side to 256, the central 256x256, the run's mean image, then 10 patches (or\n"
            "the centre one) averaged. Prints the top classes with their names and\n"
            "probabilities; a file that cannot be read gets a line saying why (exit 1)."
        ),
    )
    p.add_argument("out", metavar="OUT", help="the data root the run was trained on")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files to classify")
    _add_run(p, "the trained run")
    _add_model_options(p)
    p.add_argument("--top", type=_positive_int, default=5, help="classes shown per image")
    p.add_argument("--json", action="store_true", help="one JSON object per image, for scripts")
    p.set_defaults(handler=_run_predict)


def _run_predict(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    from flows.predict import predict_files

    devices = args.devices
    results = predict_files(
        args.out, args.run, args.images, args.crops, args.top, args.checkpoint, devices
    )
    for r in results:
        if args.json:
            print(json.dumps(asdict(r)))
        elif r.error:
            print(f"{r.path}: cannot classify: {r.error}", file=sys.stderr)
        else:
            print(r.path)
            for c in r.top:
                print(f"  {c['probability']:6.2%}  {c['wnid']}  {c['name']}")
    return 1 if any(r.error for r in results) else 0


# --- the command ---------------------------------------------------------------

SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_sample_data,
    _add_preprocess,
    _add_stats,
    _add_verify,
    _add_train,
    _add_evaluate,
    _add_predict,
    _add_pipeline,
    _add_reprocess,
    _add_serve,
]


def build_parser() -> argparse.ArgumentParser:
    """The `alexnet` argument parser with every stage's subcommand."""
    parser = argparse.ArgumentParser(
        prog="alexnet",
        formatter_class=_Formatter,
        description=(
            "AlexNet (Krizhevsky, Sutskever, Hinton 2012) as a data-preprocessing-first\n"
            "pipeline. Each subcommand runs one stage; `alexnet SUBCOMMAND --help` says more."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_package_version()}")
    sub = parser.add_subparsers(title="stages", metavar="SUBCOMMAND", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `alexnet` command; returns the process exit code."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except BrokenPipeError:  # `alexnet ... | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, RuntimeError, OSError) as err:  # OSError: a full disk, a lost file...
        print(f"alexnet: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("alexnet: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
