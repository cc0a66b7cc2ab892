"""The Prefect-backed subcommands: `alexnet pipeline`, `reprocess` and `serve`."""

from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path

import flows
from flows.cli.options import (
    Formatter,
    add_cluster_options,
    add_run,
    add_shard_options,
    positive_int,
    print_made,
)
from shards.progress import error_text, plural
from training.config import PIPELINE_PRESET, PRESETS


def add_pipeline(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pipeline",
        formatter_class=Formatter,
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
    add_run(p, "the training run's name", default="pipeline")
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
    add_shard_options(p, inherit=True)
    p.add_argument("--crops", type=int, choices=[1, 10], default=10, help="evaluation patches")
    p.add_argument(
        "--launcher",
        default=None,
        help="start training with this command prefix instead of in-process, for example "
        "'torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29400' "
        "(see docs/multi-node.md)",
    )
    add_cluster_options(p)
    p.set_defaults(handler=_run_pipeline)


def _prefect(src: str, out: str) -> None:
    """Prefect's settings for a flow run from this command, unless set already, before
    Prefect is imported. With PREFECT_API_URL set, the flow runs on that server, which
    must answer; without it, on a temporary one of this command's, which dies with it
    however the command ends (`flows.server`). The source is checked first: a wrong SRC is one line
    at once, not a server start and then a traceback."""
    if os.environ.get("PREFECT_API_URL"):
        _check_server(os.environ["PREFECT_API_URL"])
    from shards import storage
    from shards.bucket import view_of

    if storage.is_url(src):
        if not storage.sizes(storage.check_url(src)):
            raise FileNotFoundError(f"source {src} holds no object")
    else:
        from preprocessing.source import check_layout

        check_layout(src)  # one line now, not a server start and a traceback later
    # beside OUT's own files: in the folder, or in a bucket's local view
    where = view_of(out) if storage.is_url(out) else Path(out).resolve()
    os.environ.setdefault("PREFECT_HOME", str(where / ".prefect"))
    home = Path(os.environ["PREFECT_HOME"])
    home.mkdir(parents=True, exist_ok=True)  # its SQLite file goes here
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if not os.environ.get("PREFECT_API_URL"):
        from flows.server import start_temporary_server

        start_temporary_server(home)  # stopped at exit, or killed with this process


def _launcher(text: str | None) -> list[str] | None:
    return shlex.split(text) if text else None


def _data_options(args: argparse.Namespace) -> dict:
    """What the pipeline and reprocess flows both take from the command line."""
    names = ("shard_size", "quality", "workers", "dask_address", "rewrite", "run", "preset")
    return {n: getattr(args, n) for n in names}


def _refuse_a_rewrite_first(args: argparse.Namespace) -> None:
    """The flows refuse settings that would rewrite OUT's shards (unless --rewrite); say so
    before a Prefect server is started for nothing."""
    from preprocessing.plan import PrepareSettings, refuse_other_settings
    from shards.bucket import resolve
    from shards.manifest import find_manifest

    try:
        here = resolve(args.out)  # a bucket's: its local view, refreshed
    except FileNotFoundError:  # a bucket with no data root yet
        return
    manifest = find_manifest(here)
    if manifest is None or args.rewrite:
        return
    given = {k: v for k in ("shard_size", "quality") if (v := getattr(args, k)) is not None}
    settings = dict(manifest.settings)
    settings.update({"shard_size": given["shard_size"]} if "shard_size" in given else {})
    settings.update({"quality": given["quality"]} if "quality" in given else {})
    refuse_other_settings(here, manifest, PrepareSettings.from_dict(settings))


def _run_pipeline(args: argparse.Namespace) -> int:
    _refuse_a_rewrite_first(args)
    _prefect(args.src, args.out)
    from flows.pipeline import alexnet_pipeline

    result = alexnet_pipeline(
        args.src,
        args.out,
        overrides=args.overrides,
        crops=args.crops,
        launcher=_launcher(args.launcher),
        **_data_options(args),
    )
    print(
        f"pipeline {args.run}: {error_text(result['top1_error'], result['top5_error'])} "
        f"({plural(result['crops'], 'crop')}, {result['n']} images)"
    )
    print_made(result)
    return 0


def add_reprocess(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reprocess",
        formatter_class=Formatter,
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
    add_shard_options(p, inherit=True)
    p.add_argument(
        "--train", action="store_true", help="then train and evaluate, as alexnet pipeline does"
    )
    add_run(p, "the run (--train)", default="pipeline")
    p.add_argument("--preset", choices=sorted(PRESETS), default=PIPELINE_PRESET, help="(--train)")
    add_cluster_options(p)
    p.set_defaults(handler=_run_reprocess)


def _run_reprocess(args: argparse.Namespace) -> int:
    _refuse_a_rewrite_first(args)
    _prefect(args.src, args.out)
    from flows.reprocess import alexnet_reprocess, changes_table

    summary = alexnet_reprocess(args.src, args.out, train=args.train, **_data_options(args))
    print(changes_table(summary["changes"]), end="")
    print(
        f"{summary['shards_written']} shards written; statistics over "
        f"{summary['n_images']} training images"
    )
    return 0


def add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        formatter_class=Formatter,
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
        type=positive_int,
        default=None,
        help="Dask workers of the flows' local clusters (default: all cores)",
    )
    p.add_argument("--dask-address", default=None, help="an existing Dask scheduler to use")
    p.add_argument(
        "--reports-port",
        type=int,
        default=4201,
        help="serve the runs' reports read-only over HTTP on this port, so the Prefect UI's "
        "links to them open (0: any free port; -1: do not serve them)",
    )
    p.add_argument(
        "--reports-host",
        default="127.0.0.1",
        help="the address the reports are served on (0.0.0.0: every interface)",
    )
    p.add_argument(
        "--reports-name",
        default=None,
        help="the host name browsers reach the reports by (default: --reports-host)",
    )
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

    if args.reports_port >= 0:
        from flows import reports

        reports.start(args.reports_host, args.reports_port, args.reports_name)
        print(f"reports: {os.environ[reports.REPORTS_URL]} (run folders, read-only)", flush=True)

    serve(
        src=args.src,
        out=args.out,
        cron=None if args.no_schedule else args.cron,
        workers=args.workers,
        dask_address=args.dask_address,
    )
    return 0
