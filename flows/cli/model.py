"""The stages that train or apply a model: `alexnet train`, `evaluate` and `predict`."""

from __future__ import annotations

import argparse
import sys

from flows.cli.options import (
    Formatter,
    add_devices,
    add_model_options,
    add_run,
    positive_int,
    print_made,
    run_name,
)
from shards import storage
from shards.progress import error_text, plural
from training.config import PRESETS
from training.runlog import run_folder


def add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        formatter_class=Formatter,
        help="train the two-column AlexNet on OUT's shards (paper or smoke preset)",
        description=(
            "Train AlexNet as the paper does (docs/alexnet-spec.md, section 4) on OUT's\n"
            "shards and statistics, writing OUT/runs/RUN/: config.json, metrics.jsonl,\n"
            "checkpoints/, report.html.\n"
            "Settings: --preset, then --config FILE.toml, then --set key=value (for example\n"
            "--set epochs=5 --set model.width=0.5). Under torchrun, each process is one\n"
            "two-column replica and ranks read disjoint shards."
        ),
    )
    p.add_argument(
        "out",
        metavar="OUT",
        help="a data root with shards and stats: a folder, or s3://bucket/prefix (gs://)",
    )
    add_run(p, "the run's name (its folder under OUT/runs/); under torchrun write --name")
    _add_settings(p)
    p.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved settings (as a TOML file --config reads) and exit",
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
        type=positive_int,
        default=None,
        help="end this invocation after N epochs (resume later with --resume)",
    )
    add_devices(p, " (default: two GPUs, one GPU, or cpu)")
    p.set_defaults(handler=_run_train, interrupted=_train_interrupted)


def _train_interrupted(args: argparse.Namespace) -> str:
    """What goes on from here: --resume where the run has a folder (from its last saved
    epoch, or from the start if none was saved), the same command where it has none."""
    resume = f"`alexnet train {args.out} --run {args.run} --resume`"
    run_dir = None if storage.is_url(args.out) else run_folder(args.out, args.run)
    if run_dir is None or (run_dir / "checkpoints" / "last.pt").is_file():
        return f"{resume} continues from the last completed epoch"
    if run_dir.is_dir():
        return f"no epoch's checkpoint was kept yet: {resume} starts it again"
    return "no epoch's checkpoint was kept yet, nor its folder: the same command starts it again"


def _add_settings(p: argparse.ArgumentParser) -> None:
    """--preset, --config and --set: a training run's settings, in that order."""
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="starting settings: paper (the paper's, for GPUs: 90 epochs at most) or smoke "
        "(a small net that learns on a CPU in minutes) (default: paper)",
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
        help="override one setting (repeatable; `alexnet config` lists them)",
    )


def add_config(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "config",
        formatter_class=Formatter,
        help="list the training settings with their values (a preset's, or resolved)",
        description=(
            "Print every training setting with its value: the preset's, then --config's,\n"
            "then --set's, as `alexnet train` would resolve them. The output is a TOML file\n"
            "that --config reads back (`alexnet config --preset smoke > my.toml`). What each\n"
            "setting means: docs/alexnet-spec.md."
        ),
    )
    _add_settings(p)
    p.set_defaults(handler=_run_config)


def _run_config(args: argparse.Namespace) -> int:
    from training.config import resolve, to_toml

    preset = args.preset or "paper"
    print(
        f"# alexnet train settings: preset {preset}"
        + "".join(f", --set {o}" for o in args.overrides)
    )
    print(to_toml(resolve(preset, args.config, args.overrides)), end="")
    return 0


def _run_train(args: argparse.Namespace) -> int:
    from training.config import resolve, to_toml
    from training.train import train

    if args.print_config:
        if args.resume:
            raise ValueError(
                "--print-config shows a new run's settings; a resumed run's are in its config.json"
            )
        print(to_toml(resolve(args.preset or "paper", args.config, args.overrides)), end="")
        return 0
    if args.resume and (args.preset is not None or args.config is not None):
        raise ValueError(
            "--resume continues the run with its saved settings: --preset and --config do "
            "not apply (--set epochs=N and the like can: see training.config.RESUMABLE)"
        )
    config = None if args.resume else resolve(args.preset or "paper", args.config, args.overrides)
    if not args.resume and args.preset is None and args.config is None and not args.devices:
        import torch

        if not torch.cuda.is_available():
            print(
                "warning: no GPU here, and the paper preset (full width, up to 90 epochs) "
                "would take hours even on the demo data; --preset smoke trains a small net "
                "in minutes (--preset paper to mean it)",
                file=sys.stderr,
            )
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
        done = f"{plural(result.epochs_done, 'epoch')}, {plural(result.step, 'step')}"
        print(f"run {args.run}: {done}; {result.stopped}")
        print(
            f"last epoch: val {error_text(last['val_top1_error'], last['val_top5_error'])}; "
            f"best top-1 error {result.best_top1_error:.2%}"
        )
    print(f"run folder: {result.run_dir}")
    if (result.run_dir / "report.html").is_file():
        print(f"report: {result.run_dir / 'report.html'}")
    print(f"next: alexnet evaluate {args.out} --run {args.run}  (10-crop error, figures)")
    return 0


def add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        formatter_class=Formatter,
        help="10-crop top-1/top-5 error on the val shards, ensembles, the paper's figures",
        description=(
            "Evaluate a trained run as the paper reports it: the softmax outputs of ten\n"
            "227x227 patches (four corners, centre, and their reflections) averaged per image;\n"
            "top-1 and top-5 error. Writes OUT/runs/RUN/eval.json, per_class_error.json and\n"
            "figures/*.png (conv1 kernels, top-5 predictions, fc7 nearest neighbours, curves)."
        ),
    )
    p.add_argument("out", metavar="OUT", help="the data root: a folder or a bucket's URL")
    add_run(p, "the run to evaluate")
    add_model_options(p)
    p.add_argument(
        "--ensemble",
        nargs="+",
        type=run_name,
        default=[],
        metavar="RUN",
        help="more runs whose softmax outputs are averaged with RUN's",
    )
    p.add_argument("--batch-size", type=positive_int, default=32, help="images per batch (x crops)")
    p.add_argument(
        "--no-figures",
        dest="figures",
        action="store_false",
        default=True,
        help="skip drawing the figures (they are drawn unless this is given)",
    )
    p.add_argument(
        "--neighbours-from",
        type=positive_int,
        default=None,
        metavar="N",
        help="search Figure 4's nearest neighbours among the first N training images only, "
        "for a quick look (default: the whole train split, as the paper)",
    )
    p.set_defaults(handler=_run_evaluate)


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
        f"{plural(result['crops'], 'crop')})"
    )
    for entry in result["checkpoints"]:
        print(f"{entry['run']:<24} {entry['top1_error']:>12.2%} {entry['top5_error']:>12.2%}")
    if "ensemble" in result:
        print(f"{'ensemble':<24} {result['top1_error']:>12.2%} {result['top5_error']:>12.2%}")
    run_dir = storage.join(args.out, "runs", args.run) if storage.is_url(args.out) else None
    run_dir = run_dir or str(run_folder(args.out, args.run))
    print(f"wrote {run_dir}/eval.json and {run_dir}/per_class_error.json")
    print_made(result)
    return 0


def add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        formatter_class=Formatter,
        help="a trained run as one model file (ONNX or TorchScript) with its class list",
        description=(
            "Write the run's model as one self-contained file that takes a batch of\n"
            "centre-cropped RGB images, (B, 3, 227, 227) float32 on 0-255, and returns the\n"
            "class probabilities: the mean image, the input scale and the softmax are inside.\n"
            "Beside it: classes.json (the output order) and model.json (the input, the\n"
            "preprocessing, where it came from). README: 'Using the model elsewhere'."
        ),
    )
    p.add_argument("out", metavar="OUT", help="the data root the run was trained on")
    add_run(p, "the trained run")
    formats = ["onnx", "torchscript"]  # training.export.FORMATS (not imported here: torch)
    p.add_argument("--format", choices=formats, default="onnx", help="the file's format")
    p.add_argument("--checkpoint", default="best", help="best, last, or a checkpoint file's path")
    p.add_argument("--to", default=None, help="the folder to write (default: OUT/runs/RUN/export)")
    p.set_defaults(handler=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from shards.bucket import resolve as resolve_root
    from training.evaluate import checkpoint_of
    from training.export import export
    from training.runlog import check_run_name

    check_run_name(args.run)
    out = resolve_root(args.out, runs=[args.run])
    made = export(
        out,
        run_folder(out, args.run),
        checkpoint_of(out, args.run, args.checkpoint),
        args.format,
        Path(args.to) if args.to else None,
    )
    print(f"wrote {made.model} ({made.model.stat().st_size / 2**20:.1f} MiB)")
    print(f"classes: {made.classes}; input and origin: {made.info}")
    return 0


def add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        formatter_class=Formatter,
        help="classify image files with a trained run",
        description=(
            "Classify image files (any format the preprocess stage accepts) with a run's\n"
            "checkpoint, through exactly the path OUT's shards were made with: the shorter\n"
            "side to 256, the central 256x256, the run's mean image, then 10 patches (or\n"
            "the centre one) averaged. Prints the top classes with their names and\n"
            "probabilities; a file that cannot be read gets a line saying why (exit 1)."
        ),
    )
    p.add_argument(
        "out", metavar="OUT", help="the data root the run was trained on (a folder or a URL)"
    )
    p.add_argument(
        "images",
        metavar="IMAGE",
        nargs="+",
        help="image files to classify, or folders (every file in them)",
    )
    add_run(p, "the trained run")
    add_model_options(p)
    p.add_argument("--top", type=positive_int, default=5, help="classes shown per image")
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
                print(f"  {c['probability']:7.2%}  {c['wnid']}  {c['name']}")
    return 1 if any(r.error for r in results) else 0
