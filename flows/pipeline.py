"""The pipeline flow: preprocess -> stats -> train -> evaluate, as dependent Prefect tasks.

Each task calls the same stage function as its CLI command; the flow only
wires them, caches them and reports. Each task receives the previous one's
result, so Prefect records the edges (the UI draws the graph from them).

Caching means something: a task's cache key is what its output depends on,
never object identity:
    preprocess  the source fingerprint (every input's path, size, mtime, label)
                and the preprocessing settings
    stats       the train shards' sha256s and the scale
    train       the statistics' key, the resolved training config and the run name
    evaluate    the checkpoint's sha256 and the number of crops
so an unchanged re-run is all cache hits, and a changed setting re-runs
exactly the tasks downstream of it. A training run whose inputs changed starts
afresh; the earlier run folder is kept, renamed `RUN.superseded-N`.

A cache entry only says what a task returned, not that its files are still
there: before each task the flow checks that OUT holds the outputs the cached
result describes (the manifest of this source and settings; statistics that
cover the current shards; the run trained with this key; an eval.json of this
checkpoint), and re-runs the task (refreshing its cache) when they are not.

Dask stays inside the stage functions (`--workers`, `--dask-address`); Prefect
runs the tasks in order in the flow's process. Beyond one machine, two
parameters reach out: `dask_address` (an existing Dask cluster for preprocess
and stats) and `launcher` (a command that starts training elsewhere, such as
`torchrun --nnodes 2 ...` or `srun ... torchrun ...`; see docs/multi-node.md).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.context import TaskRunContext

from flows.results import Computed, Preprocessed, Trained
from flows.runs import fresh_run_dir, here, launch_training, where
from shards import storage
from shards.atomic import read_json
from shards.format import sha256_file
from shards.manifest import find_manifest, train_shard_digests
from shards.progress import duration, error_text, plural
from training.config import PIPELINE_PRESET
from training.runlog import check_run_name, run_folder


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def prepare_settings(
    shard_size: int | None = None, quality: int | None = None, base: dict | None = None
) -> dict:
    """The full preprocessing settings (as a manifest records them), as a plain dict:
    `base`'s (default: the stage's defaults) with `shard_size` and `quality` where given."""
    from preprocessing.prepare import PrepareSettings

    s = dict(base or PrepareSettings().as_dict())
    if shard_size is not None:
        s["shard_size"] = shard_size
    if quality is not None:
        s["quality"] = quality
    return PrepareSettings.from_dict(s).as_dict()  # checked when made


class LogStream(io.TextIOBase):
    """A text stream whose lines go to a Prefect logger (training's progress lines)."""

    def __init__(self, logger: Any) -> None:
        self.logger = logger

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if line.strip():
                self.logger.info("%s", line)
        return len(text)

    def isatty(self) -> bool:
        return False


class _ProgressArtifact:
    """A Prefect progress artifact, updated at most every `every_s` seconds."""

    def __init__(self, key: str, description: str, every_s: float = 2.0) -> None:
        self.id = create_progress_artifact(0.0, key=key, description=description)
        self.every_s, self.last = every_s, 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last >= self.every_s or done >= total:
            self.last = now
            update_progress_artifact(self.id, 100.0 * done / max(total, 1))


def source_fingerprint(
    src: str, out: str, workers: int | None = 1, dask_address: str | None = None
) -> str:
    """What the preprocess stage's manifest records of the source (SourceTree.fingerprint);
    official archives listed into OUT/.index (OUT checked first), where the stage finds them."""
    from preprocessing.cluster import StageCluster
    from preprocessing.index import INDEX, Indexer
    from preprocessing.prepare import scan_checked
    from shards.format import SPLITS
    from shards.writing import view

    with StageCluster(workers, dask_address) as cluster:
        indexer = Indexer(view(out) / INDEX, True, cluster, progress=None)
        return scan_checked(src, out, SPLITS, None, indexer).fingerprint()


def _preprocess_key(context: TaskRunContext, p: dict[str, Any]) -> str:
    fingerprint = p.get("fingerprint") or source_fingerprint(p["src"], p["out"])
    return _key("preprocess", fingerprint, p["settings"], where(p["out"]))


def when_missing(t: Any, present: bool) -> Any:
    """`t` as it is when its outputs are on disk; else `t` forced to run and re-cache."""
    return t if present else t.with_options(refresh_cache=True)


@task(
    name="preprocess",
    retries=2,
    retry_delay_seconds=[2, 10],
    cache_key_fn=_preprocess_key,
    persist_result=True,
)
def preprocess_task(
    src: str,
    out: str,
    settings: dict,
    workers: int | None,
    dask_address: str | None,
    fingerprint: str | None = None,  # the source's, when the caller has it (the cache key)
    rewrite: bool = False,
) -> Preprocessed:
    """ImageNet tree -> shards, manifest, rejects (alexnet preprocess)."""
    from preprocessing.prepare import PrepareSettings, preprocess

    prepare = PrepareSettings.from_dict(settings)
    progress = _ProgressArtifact("alexnet-preprocess-progress", f"preprocessing {src}")
    report = preprocess(
        src,
        out,
        prepare,
        workers=workers,
        dask_address=dask_address,
        progress=False,
        on_progress=progress,
        rewrite=rewrite,
    )
    progress(1, 1)
    m = report.manifest
    get_run_logger().info(
        "preprocess: %d written, %d rejected; %d shards written, %d kept (%s)",
        report.written,
        report.rejected,
        report.shards_written,
        report.shards_reused,
        report.layout,
    )
    return {
        "counts": m.counts,
        "train_shards": train_shard_digests(m),
        "fingerprint": m.source["fingerprint"],
        "changes": report.changes,
        "shards_written": report.shards_written,
    }


def _stats_key(context: TaskRunContext, p: dict[str, Any]) -> str:
    return _key("stats", p["manifest"]["train_shards"], p["scale"], where(p["out"]))


@task(
    name="stats",
    retries=2,
    retry_delay_seconds=[2, 10],
    cache_key_fn=_stats_key,
    persist_result=True,
)
def stats_task(
    out: str, manifest: Preprocessed, scale: str, workers: int | None, dask_address: str | None
) -> Computed:
    """Train shards -> mean image and RGB PCA (alexnet stats)."""
    from preprocessing.stats import compute_stats

    report = compute_stats(out, scale=scale, workers=workers, dask_address=dask_address)
    s = report.stats
    get_run_logger().info("stats: %d images; eigenvalues %s", s.n_images, s.eigenvalues.tolist())
    return {
        "key": _key(manifest["train_shards"], scale),
        "n_images": s.n_images,
        "eigenvalues": s.eigenvalues.tolist(),
    }


TRAIN_KEY = "pipeline-cache-key"  # in the run folder: which train task made it


def _train_key(context: TaskRunContext | None, p: dict[str, Any]) -> str:
    return _key("train", p["stats"]["key"], p["config"], p["run"], where(p["out"]))


@task(name="train", cache_key_fn=_train_key, persist_result=True)
def train_task(
    out: str, run: str, config: dict, stats: Computed, launcher: list[str] | None = None
) -> Trained:
    """Shards + stats -> a trained run (alexnet train), here or under `launcher`."""
    from training.config import TrainConfig
    from training.train import train

    key = _train_key(None, {"out": out, "run": run, "config": config, "stats": stats})
    if _trained_with(out, run, key):  # e.g. by a run whose Prefect cache is in another home
        get_run_logger().info("run %r is already trained with these inputs; reused", run)
        run_dir = run_folder(here(out, run), run)
        return _train_result(run_dir, _last_epoch(run_dir))
    marker = run_folder(here(out, run), run) / TRAIN_KEY
    why = (
        "was trained with other settings or data"
        if marker.is_file()
        else "was not made by this pipeline (no cache key in it)"
    )
    moved = fresh_run_dir(out, run)
    if moved:
        get_run_logger().info("an earlier run %r %s; kept as %s", run, why, moved)
    if launcher:
        launch_training(out, run, config, launcher)
        run_dir = run_folder(here(out, run), run)
        last = _last_epoch(run_dir)
    else:
        epochs = _ProgressArtifact("alexnet-train-progress", f"training run {run}", every_s=0)
        result = train(
            out,
            run,
            TrainConfig.from_dict(config),
            progress=LogStream(get_run_logger()),  # a progress line every 30 s, each epoch's
            on_epoch=lambda m: epochs(m["epoch"], m["epochs"]),
        )
        get_run_logger().info("train: %d epochs, %s", result.epochs_done, result.stopped)
        run_dir, last = result.run_dir, result.last
    made = _train_result(run_dir, last)
    (run_dir / TRAIN_KEY).write_text(key)
    if storage.is_url(out):  # beside the run in the bucket, for the next pipeline anywhere
        storage.upload(run_dir / TRAIN_KEY, storage.join(out, "runs", run, TRAIN_KEY))
    return made


def _trained_with(out: str, run: str, key: str) -> bool:
    """Whether the run folder holds a best checkpoint that a pipeline trained with the
    inputs of `key` (its marker)."""
    run_dir = run_folder(here(out, run), run)
    marker = run_dir / TRAIN_KEY
    ckpt = run_dir / "checkpoints" / "best.pt"
    return marker.is_file() and marker.read_text() == key and ckpt.is_file()


def _last_epoch(run_dir: Path) -> dict:
    from training.runlog import epoch_lines, read_metrics

    return [{}, *epoch_lines(read_metrics(run_dir))][-1]


def _train_result(run_dir: Path, last: dict) -> Trained:
    """What train_task returns: the run folder, its best checkpoint's sha256, the last epoch."""
    ckpt = run_dir / "checkpoints" / "best.pt"
    if not ckpt.is_file():
        raise RuntimeError(f"training ended without a checkpoint: {ckpt} is missing")
    return {"run_dir": str(run_dir), "checkpoint_sha256": sha256_file(ckpt), "last": last}


def _evaluate_key(context: TaskRunContext, p: dict[str, Any]) -> str:
    return _key("evaluate", p["trained"]["checkpoint_sha256"], p["crops"], p["run"])


@task(name="evaluate", cache_key_fn=_evaluate_key, persist_result=True)
def evaluate_task(out: str, run: str, crops: int, trained: Trained) -> dict:
    """A trained run -> eval.json, per-class errors, figures (alexnet evaluate)."""
    from training.evaluate import evaluate

    earlier = _evaluated_on_disk(out, run, crops, trained["checkpoint_sha256"])
    if earlier is not None:  # e.g. evaluated by a run whose Prefect cache is elsewhere
        get_run_logger().info("run %r is already evaluated for this checkpoint; reused", run)
        return earlier
    result = evaluate(out, run, crops=crops)
    get_run_logger().info(
        "evaluate: %s (%s)",
        error_text(result["top1_error"], result["top5_error"]),
        plural(result["crops"], "crop"),
    )
    return result


@flow(name="alexnet-pipeline")
def alexnet_pipeline(
    src: str,
    out: str,
    run: str = "pipeline",
    preset: str = PIPELINE_PRESET,
    overrides: list[str] | None = None,
    shard_size: int | None = None,  # None: OUT's own (for a new OUT, the stage's default)
    quality: int | None = None,
    scale: str = "pixel/255",
    crops: int = 10,
    workers: int | None = None,
    dask_address: str | None = None,
    launcher: list[str] | None = None,
    rewrite: bool = False,
) -> dict:
    """preprocess -> stats -> train -> evaluate, each a cached task; returns eval.json.

    Settings not given are OUT's own (those of its manifest), so a run never re-shards a
    data root by accident; settings that would rewrite its shards are refused unless
    `rewrite` is set.

    `dask_address`: run preprocess and stats on this Dask scheduler instead of a
    local cluster of `workers`. `launcher`: start training with this command
    prefix (for example ["torchrun", "--nnodes", "2", ...]) instead of in this process.
    """
    from training.config import resolve

    check_run_name(run)  # before anything is made
    base = own_settings(out)
    settings = prepare_settings(shard_size, quality, base)
    config = resolve(preset, overrides=overrides or []).to_dict()
    fingerprint = source_fingerprint(src, out, workers, dask_address)
    made = has_manifest(out, fingerprint, settings)
    manifest = when_missing(preprocess_task, made)(
        src, out, settings, workers, dask_address, fingerprint, rewrite
    )
    stats = when_missing(stats_task, has_stats(out, manifest["train_shards"], scale))(
        out, manifest, scale, workers, dask_address
    )
    result = train_and_evaluate(out, run, config, stats, crops, launcher)
    report_results(run, result)
    return result


def train_and_evaluate(
    out: str, run: str, config: dict, stats: dict, crops: int, launcher: list[str] | None
) -> dict:
    """The train and evaluate tasks, each re-run when its outputs are not on disk."""
    key = _train_key(None, {"out": out, "run": run, "config": config, "stats": stats})
    trained_here = _trained_with(out, run, key)
    trained = when_missing(train_task, trained_here)(out, run, config, stats, launcher)
    evaluated = _evaluated_on_disk(out, run, crops, trained["checkpoint_sha256"])
    return when_missing(evaluate_task, evaluated is not None)(out, run, crops, trained)


def _evaluated_on_disk(out: str, run: str, crops: int, checkpoint_sha256: str) -> dict | None:
    """The run's eval.json when it is an evaluation of this checkpoint with these crops."""
    run_dir = run_folder(here(out, run), run)
    evaluated = read_json(run_dir / "eval.json") or {}
    of_this = [c.get("sha256") for c in evaluated.get("checkpoints", [])]
    if evaluated.get("crops") == crops and checkpoint_sha256 in of_this:
        report = run_dir / "report.html"
        return {**evaluated, **({"report": str(report)} if report.is_file() else {})}
    return None


def own_settings(out: str) -> dict | None:
    """The settings OUT's shards were made with (its manifest's), if it has any."""
    m = find_manifest(here(out))
    return m.settings if m is not None else None


def has_manifest(out: str, fingerprint: str, settings: dict) -> bool:
    """Whether OUT's manifest was made from this source with these settings."""
    m = find_manifest(here(out))
    return m is not None and m.source.get("fingerprint") == fingerprint and m.settings == settings


def has_stats(out: str, train_shards: list[str], scale: str) -> bool:
    """Whether OUT/stats/ holds statistics of exactly these train shards on this scale."""
    from shards.stats import read_stats

    try:
        stats = read_stats(here(out))
    except (OSError, ValueError):
        return False
    return [s.get("sha256") for s in stats.shards] == train_shards and stats.scale == scale


def report_results(run: str, result: dict) -> None:
    """The results artifact: the headline numbers (on the artifact's line in the UI too),
    and links to the report and the figures that a browser opens from the Prefect UI (over
    HTTP under `alexnet serve`: flows/reports.py)."""
    from flows.reports import link
    from training.runlog import epoch_lines, read_metrics

    report = result.get("report")
    epochs = epoch_lines(read_metrics(Path(report).parent)) if report else []
    took = duration(sum(e.get("seconds", 0.0) for e in epochs)) if epochs else "?"
    errors = error_text(result["top1_error"], result["top5_error"])
    links = [f"- [report.html]({link(report)}): the whole run, with its figures"] if report else []
    links += [f"- [{Path(p).name}]({link(p)})" for p in result.get("figures", [])]
    headline = f"{errors} after {plural(len(epochs), 'epoch')} ({took} training)"
    create_markdown_artifact(
        key="alexnet-results",
        markdown=(
            f"# AlexNet run `{run}`: {errors}\n\n"
            "| top-1 error | top-5 error | evaluated on | epochs | training time |\n"
            "|---|---|---|---|---|\n"
            f"| {result['top1_error']:.2%} | {result['top5_error']:.2%} | {result['n']} val "
            f"images, {plural(result['crops'], 'crop')} | {len(epochs)} | {took} |\n\n"
            + "\n".join(links)
            + "\n"
        ),
        description=headline,
    )
