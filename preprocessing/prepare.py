"""The preprocess stage: an ImageNet tree -> 256x256 WebDataset shards + manifest.

    tree = scan(SRC)                      every input, labelled (source.py)
    plans = plan_shards(tree, ...)        which input goes to which shard (plan.py)
    for each plan not already complete:   one Dask task per shard
        write_shard(...)                  decode, resize, crop, encode, tar,
                                          partial statistics, then the record
    build_manifest, write_manifest        manifest.json, rejects.jsonl from the
                                          shard records (shards/manifest.py)

Determinism: the plan is a pure function of the source listing and the
settings, each shard's bytes a pure function of its plan, and the manifest is
built from the records in shard order; so the output does not depend on how
many workers ran, or in what order shards finished.

Resume: a shard is complete when its record (written last, atomically) exists
and names the same plan digest, and the tar it describes has the recorded size.
A killed run leaves at most some temporaries (swept away) and some complete
shards (kept). An unchanged re-run finds every shard complete and starts no
cluster at all.

Incremental layout: when OUT already holds a manifest made with the same
settings, every input keeps the shard it is in (each shard's record lists its
members): a shard is rewritten only if one of its inputs changed or was
deleted, and new inputs go to new shards appended after the existing ones, in
the plan's order (plan.py). Each run that changes OUT appends a line to OUT/history.jsonl
saying what was added, changed and deleted since the previous manifest, and
which shards that rewrote; the manifest itself describes the data only, so an
unchanged re-run leaves every byte of OUT as it was. (A
changed input is one whose path, size, mtime or label changed.) Without a
usable earlier manifest, or with other settings, the layout starts afresh.

SRC and OUT may be buckets' URLs (s3://...): the source is listed once and
each worker reads its images by URL; to a bucket each worker writes its shard
on its own disk, then uploads it (payloads, record last), and the manifest goes
last with a conditional write, all under the bucket's lease (`writing`,
shards/remote.py). `LocalRoot` and `RemoteRoot` answer the same questions, so
`_write` is one code path for both.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from preprocessing.cluster import StageCluster
from preprocessing.image import ImageProcessor, ImageSettings, Processed
from preprocessing.index import INDEX, Indexer
from preprocessing.plan import (
    PrepareSettings,
    ShardPlan,
    diff_layout,
    layout_changes,
    plan_shards,
    previous_layout,
    refuse_other_settings,
)
from preprocessing.source import SourceTree, read_input, scan
from shards import storage
from shards.atomic import (
    write_bytes,
    write_json,
)
from shards.dataroot import check_out
from shards.format import (
    SPLITS,
    ShardWriter,
    partials_path,
    record_path,
    shard_dir,
)
from shards.manifest import (
    Manifest,
    ShardRecord,
    build_manifest,
    find_manifest,
    read_rejects,
)
from shards.partials import Partials
from shards.progress import Progress
from shards.remote import RemoteRoot, upload_shard
from shards.writing import LocalRoot, view, writing


@functools.lru_cache(maxsize=4)
def _processor(settings: ImageSettings) -> ImageProcessor:
    return ImageProcessor(settings)


def write_shard(
    src: str, out: str, plan: ShardPlan, settings: ImageSettings, wnids: tuple[str, ...]
) -> ShardRecord:
    """Process one shard's inputs and commit the shard; return its record. (A Dask task.)
    To a bucket: written on this worker's disk first, then uploaded (shards/remote.py)."""
    if storage.is_url(out):
        with tempfile.TemporaryDirectory(prefix="alexnet-shard-") as stage:
            record = _write_shard(src, stage, plan, settings, wnids)
            upload_shard(out, Path(stage), plan.split, plan.name)
        return record
    return _write_shard(src, out, plan, settings, wnids)


def _write_shard(
    src: str, out: str, plan: ShardPlan, settings: ImageSettings, wnids: tuple[str, ...]
) -> ShardRecord:
    process = _processor(settings)
    tar = shard_dir(out, plan.split) / plan.name
    partials = Partials.zeros(settings.size) if plan.split == "train" else None
    rejects = []
    with ShardWriter(tar) as writer:
        for f in plan.files:
            try:
                data = read_input(src, f)
            except OSError as err:
                reason = f"could not read the file: {err.strerror or err}"
                rejects.append({"path": f.relpath, "reason": reason})
                continue
            result = process(data)
            if not isinstance(result, Processed):
                rejects.append({"path": f.relpath, "reason": result.reason})
                continue
            meta = {
                "path": f.relpath,
                "wnid": wnids[f.label],
                "width": result.width,
                "height": result.height,
                "format": result.source_format,
                "mode": result.source_mode,
            }
            meta_bytes = json.dumps(meta, sort_keys=True).encode()
            writer.write(f.key, result.data, settings.format, f.label, meta_bytes)
            if partials is not None:
                partials.add(result.pixels)
    record: ShardRecord = {
        "split": plan.split,
        "index": plan.index,
        "shard": plan.name,
        "plan": plan.digest,
        "inputs": len(plan.files),
        "members": [[f.key, f.identity()] for f in plan.files],
        "count": writer.count,
        "bytes": writer.bytes,
        "sha256": writer.sha256,
        "checksums": writer.checksums,  # per sample: every reader checks them
        "rejects": rejects,
    }
    if plan.previous is not None and plan.previous.plan != plan.digest:
        # the version this replaces, until a manifest lists this one (see _listed_members)
        record["previous"] = {"plan": plan.previous.plan, "members": plan.previous.members}
    if partials is not None:
        data = partials.to_bytes()
        write_bytes(partials_path(tar), data)
        record["partials"] = partials_path(tar).name
        record["partials_sha256"] = hashlib.sha256(data).hexdigest()
    write_json(record_path(tar), record)  # last: this marks the shard complete
    return record


@dataclass
class PrepareReport:
    out: Path | str
    shards_written: int = 0
    shards_reused: int = 0
    shards_removed: int = 0
    layout: str = ""  # whether inputs kept their shards, and if not why
    inputs: int = 0
    written: int = 0
    rejected: int = 0
    cluster_started: bool = False
    manifest: Manifest | None = None  # what the run left in OUT/manifest.json
    changes: dict = field(default_factory=dict)  # added/changed/deleted inputs, shards rewritten
    warnings: list[str] = field(default_factory=list)  # the source's (SourceTree.warnings)


def scan_checked(
    src: str | os.PathLike,
    out: str | os.PathLike,
    splits: tuple[str, ...],
    val_labels: str | os.PathLike | None,
    indexer: Indexer,
) -> SourceTree:
    """The source's listing, once the splits and OUT are known to be usable (the settings
    were checked when they were made). The official archives' listings are kept in
    OUT/.index (preprocessing/index.py; a bucket's: in its local view) by `indexer`."""
    for split in splits:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected some of {', '.join(SPLITS)}")
    for location in (src, out):
        if storage.is_url(location):
            storage.check_url(str(location))  # credentials or a signature in it: refused
    local_out = storage.local(out)
    if local_out is not None:  # first: the archives' listings are kept in OUT
        check_out(None if storage.is_url(src) else Path(src), local_out)
    return scan(src, splits, val_labels, indexer)


@dataclass
class DryRun:
    """What `preprocess` would do, per split (see `dry_run`)."""

    layout: str  # whether inputs would keep their shards, and if not why
    splits: dict[str, dict[str, int]]
    unlisted: int  # inputs the listing refuses (they go to rejects.jsonl)


def dry_run(
    src: str | os.PathLike,
    out: str | os.PathLike,
    settings: PrepareSettings | None = None,
    splits: tuple[str, ...] = SPLITS,
    val_labels: str | os.PathLike | None = None,
) -> DryRun:
    """Plan the preprocess stage without doing any image work, and write nothing.

    Per split: the inputs listed, the shards planned, and of those how many OUT
    already holds complete (`keep`), would be written at a new index (`write`)
    or over an existing one (`rewrite`); the shards beyond the plan (`remove`);
    and, against OUT's manifest, the inputs added, changed and deleted. Inputs
    that turn out undecodable are only found by the real run (they become rejects
    inside their shard), so the shard counts are exact and the image counts are
    those of the listing.
    """
    settings = settings or PrepareSettings()
    # the archives' listings kept earlier are used, and none is written
    tree = scan_checked(src, out, splits, val_labels, Indexer(view(out) / INDEX, write=False))
    path = storage.local(out)
    # a bucket's files are fetched into its local view (a cache); nothing is written to OUT
    root = LocalRoot(path) if path is not None else RemoteRoot.open(str(out))
    layout, _, why = previous_layout(root.view, settings)
    plans = plan_shards(tree, settings, layout)
    changes = diff_layout(layout, tree) if layout is not None else {}
    result = {}
    for split, split_plans in plans.items():
        on_disk = root.present(split)
        complete = [root.completed(p.split, p.name, p.digest) is not None for p in split_plans]
        todo = [p.index for p, done in zip(split_plans, complete, strict=True) if not done]
        counts = {
            "inputs": len(tree.files[split]),
            "shards": len(split_plans),
            "keep": sum(complete),
            "write": sum(i not in on_disk for i in todo),
            "rewrite": sum(i in on_disk for i in todo),
            "remove": sum(i is not None and i >= len(split_plans) for i in on_disk),
        }
        for kind in ("added", "changed", "deleted"):
            counts[kind] = len(changes.get(split, {}).get(kind, []))
        result[split] = counts
    return DryRun(why, result, len(tree.rejects))


def preprocess(
    src: str | os.PathLike,
    out: str | os.PathLike,
    settings: PrepareSettings | None = None,
    splits: tuple[str, ...] = SPLITS,
    val_labels: str | os.PathLike | None = None,
    workers: int | None = None,
    dask_address: str | None = None,
    progress: bool | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    rewrite: bool = False,
) -> PrepareReport:
    """Run the preprocess stage (see the module docstring); return what it did.

    Settings other than those OUT's shards were made with would rewrite every shard (on
    ImageNet, hours): that is a `SettingsWouldRewrite` error unless `rewrite` is set.

    `on_progress(done, total)` is called with the inputs done so far after each
    shard written (for a progress display elsewhere, such as a Prefect artifact).
    """
    settings = settings or PrepareSettings()
    out = storage.local(out) or storage.check_url(str(out))
    # one cluster for the archives' listing and the shards, started only if either needs it
    with StageCluster(workers, dask_address) as cluster:
        indexer = Indexer(view(out) / INDEX, True, cluster, progress)
        tree = scan_checked(src, out, splits, val_labels, indexer)
        report = PrepareReport(out, warnings=tree.warnings)
        with writing(out, "preprocess") as root:
            _write(root, settings, tree, rewrite, report, cluster, progress, on_progress)
        report.cluster_started = cluster.started
    assert report.manifest is not None
    counts = report.manifest.counts
    report.inputs, report.written, report.rejected = (
        counts["inputs"],
        counts["written"],
        counts["rejected"],
    )
    return report


def _write(
    root: LocalRoot | RemoteRoot,
    settings: PrepareSettings,
    tree: SourceTree,
    rewrite: bool,
    report: PrepareReport,
    cluster: StageCluster,
    progress: bool | None,
    on_progress: Callable[[int, int], None] | None,
) -> None:
    """Plan the shards, write those not done, then the manifest (OUT held by `writing`)."""
    layout, previous, report.layout = previous_layout(root.view, settings)
    if not rewrite:
        refuse_other_settings(root.view, previous, settings)
    plans = plan_shards(tree, settings, layout)
    records, todo = _what_is_done(root, plans, report)
    report.shards_reused = sum(r is not None for rs in records.values() for r in rs)
    if todo:
        for record in _run(root.location, todo, settings, tree, cluster, progress, on_progress):
            records[record["split"]][record["index"]] = record
            root.written(record)
            report.shards_written += 1
    report.changes = layout_changes(previous, layout, tree, records, report.layout)
    report.manifest, wrote = _finish(root, tree, settings, records)
    if wrote or report.shards_written or report.shards_removed:
        root.add_history(_history_entry(report))


def _what_is_done(
    root: LocalRoot | RemoteRoot, plans: dict[str, list[ShardPlan]], report: PrepareReport
) -> tuple[dict[str, list[ShardRecord | None]], list[ShardPlan]]:
    """Per split, the record of each planned shard already complete (else None), and the
    plans still to write; temporaries and shards beyond the plan are removed."""
    records: dict[str, list[ShardRecord | None]] = {}
    todo: list[ShardPlan] = []
    for split, split_plans in plans.items():
        report.shards_removed += root.remove_unplanned(split, len(split_plans))
        records[split] = [root.completed(p.split, p.name, p.digest) for p in split_plans]
        todo += [p for p, r in zip(split_plans, records[split], strict=True) if r is None]
    return records, todo


def _run(
    out: str,
    todo: list[ShardPlan],
    settings: PrepareSettings,
    tree: SourceTree,
    cluster: StageCluster,
    progress: bool | None,
    on_progress: Callable[[int, int], None] | None = None,
) -> Iterator[dict]:
    """Write the shards in `todo` on Dask, one task per shard; yield records as they finish."""
    from distributed import as_completed

    total = sum(len(p.files) for p in todo)
    show = Progress("preprocess", total, enabled=progress)
    wnids = tuple(w for w, _ in tree.classes)
    rejected = 0
    client = cluster.client(tasks=len(todo))
    futures = [
        client.submit(
            write_shard,
            tree.location(),
            out,
            plan,
            settings.image,
            wnids,
            key=f"write-shard-{plan.name}-{plan.digest[:12]}",
            pure=False,
        )
        for plan in todo
    ]
    by_key = {f.key: plan for f, plan in zip(futures, todo, strict=True)}
    try:
        for future in as_completed(futures):
            try:
                record = future.result()
            except Exception as err:
                name = by_key[future.key].name
                raise RuntimeError(
                    f"writing shard {name} failed: {type(err).__name__}: {err}. Completed "
                    "shards are kept; run the same command again to resume."
                ) from err
            rejected += len(record["rejects"])
            show.update(record["inputs"], f"{rejected} rejected")
            if on_progress is not None:
                on_progress(show.done, total)
            yield record
    finally:
        show.close()
        for f in futures:
            f.cancel()


def _finish(
    root: LocalRoot | RemoteRoot,
    tree: SourceTree,
    settings: PrepareSettings,
    records: dict[str, list[ShardRecord | None]],
) -> tuple[Manifest, bool]:
    """Write rejects.jsonl and manifest.json (last) from the shard records, each only if
    its bytes change; return the manifest and whether either file was written.

    Splits not processed this time keep their earlier entry (and rejects) if it was
    made with these settings.
    """
    previous = find_manifest(root.view)
    kept = {}
    if previous and previous.settings == settings.as_dict():
        earlier = read_rejects(root.view)
        for split, entry in previous.data["splits"].items():  # as written, kept verbatim
            kept[split] = (entry, [r for r in earlier if r.get("split") == split])
    done = {split: [r for r in recs if r is not None] for split, recs in records.items()}
    if sum(map(len, done.values())) != sum(map(len, records.values())):
        raise AssertionError("a planned shard has no record")
    source = {
        "path": tree.source(),
        "fingerprint": tree.fingerprint(),
        "val_labels": tree.val_labels,
    }
    manifest, rejects = build_manifest(
        tree.classes, settings.as_dict(), source, done, tree.rejects, kept
    )
    return Manifest.parse(manifest), root.commit(manifest, rejects, records)


def _history_entry(report: PrepareReport) -> dict:
    """One line of OUT/history.jsonl: when, from what, and what this run changed."""
    m = report.manifest
    assert m is not None
    return {
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "source": m.source,
        "counts": m.counts,
        "shards_written": report.shards_written,
        "shards_reused": report.shards_reused,
        "shards_removed": report.shards_removed,
        "changes": report.changes,
    }
