"""The scheduled re-processing flow: bring OUT up to date with a changed source.

    preprocess (always runs)   scans SRC; with OUT's manifest as the previous
                               layout, rewrites only the shards whose inputs
                               changed or were deleted, and appends new shards
                               for new inputs (see preprocessing/prepare.py)
    stats                      per-shard partials: only the rewritten and new
                               shards are read; the sums equal a from-scratch run
    report                     a markdown artifact and the flow's return value:
                               what was added, changed, deleted, and rewritten
    train, evaluate            only with train=True, as in alexnet-pipeline

Settings default to those OUT was made with (its manifest), so a nightly run
never rewrites everything because of a default; pass shard_size or quality to
change them (which starts a new layout: every shard is rewritten).

Deployed nightly by `alexnet serve` (cron "0 3 * * *" unless told otherwise)
and in prefect.yaml.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.pipeline import (
    has_stats,
    own_settings,
    prepare_settings,
    preprocess_task,
    report_results,
    source_fingerprint,
    stats_task,
    train_and_evaluate,
    when_missing,
)
from training.config import PIPELINE_PRESET
from training.runlog import check_run_name


def changes_table(changes: dict) -> str:
    """The manifest's `changes` as a markdown table (one row per split)."""
    lines = [f"{changes['layout'][:1].upper()}{changes['layout'][1:]}.", ""]
    splits = changes.get("splits")
    if splits:
        lines += [
            "| split | added | changed | deleted | shards rewritten | shards added |",
            "|---|---|---|---|---|---|",
        ]
        for split, c in splits.items():
            rewritten = ", ".join(c["shards_rewritten"]) or "-"
            added = ", ".join(c["shards_added"]) or "-"
            lines.append(
                f"| {split} | {len(c['added'])} | {len(c['changed'])} | {len(c['deleted'])} "
                f"| {rewritten} | {added} |"
            )
    return "\n".join(lines) + "\n"


def _report_changes(src: str, out: str, changes: dict, n_images: int, written: int) -> None:
    """What changed, in the run's log and as the `alexnet-reprocess` artifact."""
    logger = get_run_logger()
    for split, c in (changes.get("splits") or {}).items():
        logger.info(
            "%s: %d added, %d changed, %d deleted; shards rewritten %s, added %s",
            split,
            len(c["added"]),
            len(c["changed"]),
            len(c["deleted"]),
            c["shards_rewritten"],
            c["shards_added"],
        )
    create_markdown_artifact(
        key="alexnet-reprocess",
        markdown=(
            f"# Re-processing `{src}` into `{out}`\n\n{changes_table(changes)}\n"
            f"Statistics over {n_images} training images; {written} shards written this run.\n"
        ),
        description="what changed since the previous manifest",
    )


@flow(name="alexnet-reprocess")
def alexnet_reprocess(
    src: str,
    out: str,
    shard_size: int | None = None,
    quality: int | None = None,
    scale: str = "pixel/255",
    workers: int | None = None,
    dask_address: str | None = None,
    train: bool = False,
    run: str = "pipeline",
    preset: str = PIPELINE_PRESET,
    overrides: list[str] | None = None,
    crops: int = 10,
    launcher: list[str] | None = None,
    rewrite: bool = False,
) -> dict:
    """Re-process what changed in SRC since OUT's manifest; update the statistics.

    Returns the manifest's `changes` (added, changed, deleted inputs per split
    and the shards rewritten or added), with the statistics' image count, and
    the evaluation when `train` is set.
    """
    if train:
        check_run_name(run)  # before anything is made
    base = own_settings(out)
    settings = prepare_settings(shard_size, quality, base)
    # Always scan: a cached result would report the last run's changes as this run's.
    manifest = preprocess_task.with_options(refresh_cache=True)(
        src,
        out,
        settings,
        workers,
        dask_address,
        source_fingerprint(src, out, workers, dask_address),
        rewrite,
    )
    stats = when_missing(stats_task, has_stats(out, manifest["train_shards"], scale))(
        out, manifest, scale, workers, dask_address
    )
    changes = manifest["changes"]
    _report_changes(src, out, changes, stats["n_images"], manifest["shards_written"])
    summary = {
        "changes": changes,
        "n_images": stats["n_images"],
        "shards_written": manifest["shards_written"],
    }
    if train:
        from training.config import resolve

        config = resolve(preset, overrides=overrides or []).to_dict()
        result = train_and_evaluate(out, run, config, stats, crops, launcher)
        report_results(run, result)
        summary["evaluation"] = result
    return summary
