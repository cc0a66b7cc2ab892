"""The `alexnet` command: one subcommand per stage (options, data, model, prefect).

Each subcommand imports its stage only when it runs, so `alexnet --help` and the
data stages start without paying for torch or Prefect.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from flows.cli.data import add_preprocess, add_sample_data, add_stats, add_verify
from flows.cli.model import add_config, add_evaluate, add_export, add_predict, add_train
from flows.cli.options import Formatter, package_version
from flows.cli.prefect import add_pipeline, add_reprocess, add_serve

Handler = Callable[[argparse.Namespace], int]


# --- the command ---------------------------------------------------------------

SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_sample_data,
    add_preprocess,
    add_stats,
    add_verify,
    add_train,
    add_config,
    add_evaluate,
    add_predict,
    add_export,
    add_pipeline,
    add_reprocess,
    add_serve,
]


def build_parser() -> argparse.ArgumentParser:
    """The `alexnet` argument parser with every stage's subcommand."""
    parser = argparse.ArgumentParser(
        prog="alexnet",
        formatter_class=Formatter,
        description=(
            "AlexNet (Krizhevsky, Sutskever, Hinton 2012) as a data-preprocessing-first\n"
            "pipeline. Each subcommand runs one stage; `alexnet SUBCOMMAND --help` says more."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
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
        hint = getattr(args, "interrupted", None)
        print(f"alexnet: interrupted{'; ' + hint(args) if hint else ''}", file=sys.stderr)
        return 130
