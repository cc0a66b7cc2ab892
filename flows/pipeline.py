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

Dask stays inside the stage functions (`--workers`, `--dask-address`); Prefect
runs the tasks in order in the flow's process.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.context import TaskRunContext


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _preprocess_key(context: TaskRunContext, p: dict[str, Any]) -> str:
    from preprocessing.source import scan

    splits = ("train", "val")
    fingerprint = scan(p["src"], splits).fingerprint()
    return _key("preprocess", fingerprint, p["settings"], str(Path(p["out"]).resolve()))


@task(name="preprocess", retries=2, retry_delay_seconds=[2, 10], cache_key_fn=_preprocess_key,
      persist_result=True)  # fmt: skip
def preprocess_task(
    src: str, out: str, settings: dict, workers: int | None, dask_address: str | None
) -> dict:
    """ImageNet tree -> shards, manifest, rejects (alexnet preprocess)."""
    from preprocessing.image import ImageSettings
    from preprocessing.prepare import PrepareSettings, preprocess

    s = dict(settings)
    image = ImageSettings(**{k: s.pop(k) for k in list(s) if k not in ("shard_size", "seed")})
    prepare = PrepareSettings(image, **s)
    report = preprocess(
        src, out, prepare, workers=workers, dask_address=dask_address, progress=False
    )
    m = report.manifest
    get_run_logger().info(
        "preprocess: %d written, %d rejected; %d shards written, %d kept",
        report.written, report.rejected, report.shards_written, report.shards_reused,
    )  # fmt: skip
    shards = [s["sha256"] for s in m["splits"]["train"]["shards"]]
    return {
        "counts": m["counts"],
        "train_shards": shards,
        "fingerprint": m["source"]["fingerprint"],
    }


def _stats_key(context: TaskRunContext, p: dict[str, Any]) -> str:
    return _key("stats", p["manifest"]["train_shards"], p["scale"], str(Path(p["out"]).resolve()))


@task(
    name="stats",
    retries=2,
    retry_delay_seconds=[2, 10],
    cache_key_fn=_stats_key,
    persist_result=True,
)
def stats_task(
    out: str, manifest: dict, scale: str, workers: int | None, dask_address: str | None
) -> dict:
    """Train shards -> mean image and RGB PCA (alexnet stats)."""
    from preprocessing.stats import compute_stats

    report = compute_stats(out, scale=scale, workers=workers, dask_address=dask_address)
    s = report.stats
    get_run_logger().info("stats: %d images; eigenvalues %s", s.n_images, s.eigenvalues.tolist())
    return {"key": _key(manifest["train_shards"], scale), "n_images": s.n_images,
            "eigenvalues": s.eigenvalues.tolist()}  # fmt: skip


def _train_key(context: TaskRunContext, p: dict[str, Any]) -> str:
    return _key("train", p["stats"]["key"], p["config"], p["run"], str(Path(p["out"]).resolve()))


def _fresh_run_dir(out: str, run: str) -> Path | None:
    """Move an earlier run of this name aside (nothing is deleted); return where it went."""
    run_dir = Path(out) / "runs" / run
    if not run_dir.exists():
        return None
    n = 1
    while (target := run_dir.with_name(f"{run}.superseded-{n}")).exists():
        n += 1
    run_dir.rename(target)
    return target


@task(name="train", cache_key_fn=_train_key, persist_result=True)
def train_task(out: str, run: str, config: dict, stats: dict) -> dict:
    """Shards + stats -> a trained run (alexnet train)."""
    from training.config import TrainConfig
    from training.train import train

    moved = _fresh_run_dir(out, run)
    if moved:
        get_run_logger().info("an earlier run %r had other inputs; kept as %s", run, moved)
    result = train(out, run, TrainConfig.from_dict(config), progress=False)
    get_run_logger().info("train: %d epochs, %s", result.epochs_done, result.stopped)
    ckpt = result.run_dir / "checkpoints" / "best.pt"
    sha = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    return {"run_dir": str(result.run_dir), "checkpoint_sha256": sha, "last": result.last}


def _evaluate_key(context: TaskRunContext, p: dict[str, Any]) -> str:
    return _key("evaluate", p["trained"]["checkpoint_sha256"], p["crops"], p["run"])


@task(name="evaluate", cache_key_fn=_evaluate_key, persist_result=True)
def evaluate_task(out: str, run: str, crops: int, trained: dict) -> dict:
    """A trained run -> eval.json, per-class errors, figures (alexnet evaluate)."""
    from training.evaluate import evaluate

    result = evaluate(out, run, crops=crops)
    get_run_logger().info(
        "evaluate: top-1 %.4f, top-5 %.4f", result["top1_error"], result["top5_error"]
    )
    return result


@flow(name="alexnet-pipeline")
def alexnet_pipeline(
    src: str,
    out: str,
    run: str = "pipeline",
    preset: str = "smoke",
    overrides: list[str] | None = None,
    shard_size: int = 1000,
    quality: int = 95,
    scale: str = "pixel/255",
    crops: int = 10,
    workers: int | None = None,
    dask_address: str | None = None,
) -> dict:
    """preprocess -> stats -> train -> evaluate, each a cached task; returns eval.json."""
    from training.config import resolve

    settings = {"shard_size": shard_size, "quality": quality}
    config = resolve(preset, overrides=overrides or []).to_dict()
    manifest = preprocess_task(src, out, settings, workers, dask_address)
    stats = stats_task(out, manifest, scale, workers, dask_address)
    trained = train_task(out, run, config, stats)
    result = evaluate_task(out, run, crops, trained)
    figures = "\n".join(f"- `{p}`" for p in result.get("figures", []))
    create_markdown_artifact(
        key="alexnet-results",
        markdown=(
            f"# AlexNet run `{run}`\n\n| | top-1 error | top-5 error |\n|---|---|---|\n"
            f"| {result['crops']} crops, {result['n']} val images | {result['top1_error']:.2%} | "
            f"{result['top5_error']:.2%} |\n\nFigures:\n{figures}\n"
        ),
        description="AlexNet evaluation",
    )
    return result
