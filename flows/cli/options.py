"""What the subcommands share: the help formatter, option types and option groups
(each declared once), and printing what a stage made."""

from __future__ import annotations

import argparse
from importlib.metadata import PackageNotFoundError, version

from shards.settings import add_options
from training.runlog import check_run_name


def run_name(value: str) -> str:
    """argparse's type for a run's name (`training.runlog.check_run_name`)."""
    try:
        return check_run_name(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults in every option's help and keep descriptions as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if "(default:" in (action.help or "") or action.required:
            return action.help  # it says its default in words, or must be given
        if isinstance(action, argparse._StoreFalseAction):
            return action.help  # --no-figures "(default: True)" read as "skipped by default"
        return super()._get_help_string(action)


def package_version() -> str:
    try:
        return version("alexnet-pipeline")
    except PackageNotFoundError:  # running from a source tree that was not installed
        return "unknown"


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_run(p: argparse.ArgumentParser, what: str, default: str | None = None) -> None:
    """--run (or --name: torchrun's own parser takes --run for its --run-path), checked by
    `training.runlog.check_run_name`; required unless it has a default."""
    extra = {"default": default} if default is not None else {"required": True}
    p.add_argument("--run", "--name", dest="run", type=run_name, help=what, **extra)


def add_model_options(p: argparse.ArgumentParser) -> None:
    """--crops, --checkpoint and --devices: how a trained run is applied (evaluate, predict)."""
    p.add_argument("--crops", type=int, choices=[1, 10], default=10, help="patches per image")
    p.add_argument("--checkpoint", default="best", help="best, last, or a checkpoint's path")
    add_devices(p)


def add_devices(p: argparse.ArgumentParser, default_help: str = "") -> None:
    p.add_argument(
        "--devices",
        type=lambda text: text.split(","),
        default=None,
        help="the two columns' devices, comma-separated" + default_help,
    )


def add_cluster_options(p: argparse.ArgumentParser) -> None:
    """--workers / --dask-address: how every Dask stage chooses its cluster."""
    from preprocessing.cluster import default_workers

    workers_help = "local Dask worker processes"
    address_help = "use the Dask scheduler running at this address (tcp://host:port)"
    p.add_argument("--workers", type=positive_int, default=default_workers(), help=workers_help)
    p.add_argument("--dask-address", default=None, help=address_help)


def add_shard_options(p: argparse.ArgumentParser, inherit: bool = False) -> None:
    """--shard-size and --quality, as the preprocess stage declares them, and --rewrite."""
    from preprocessing.image import ImageSettings
    from preprocessing.plan import PrepareSettings

    add_options(p, PrepareSettings, only=("shard_size",), inherit=inherit)
    add_options(p, ImageSettings, only=("quality",), inherit=inherit)
    add_rewrite(p)


def add_rewrite(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--rewrite",
        action="store_true",
        help="allow settings other than those OUT's shards were made with, which rewrites "
        "every shard (without it, such a run is refused before anything is written)",
    )


def print_made(result: dict) -> None:
    """The files an evaluation made: its figures and the run's report."""
    for fig in result.get("figures", []):
        print(f"figure: {fig}")
    if result.get("report"):
        print(f"report: {result['report']}  (open it in a browser)")
