"""Checking a data root against its manifest: is every byte what was written?

    verify(OUT)             every listed shard is there, with the recorded size
                            and sha256; so are the partial-statistics files; the
                            statistics, if any, cover the current train shards
    verify(OUT, deep=True)  also parses every tar and checks each sample (an
                            image, a label, metadata) and each shard's count

For a data root copied to another machine or file system, or one that has sat
on a disk for a while. Reads only; returns the problems found (none: all good).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from shards.bucket import fetch_if_linked, open_root
from shards.format import IMAGE_EXTS, partials_path, sha256_file, shard_dir
from shards.manifest import ShardEntry, read_manifest
from shards.progress import Progress
from shards.reader import iter_grouped
from shards.stats import read_stats, stats_dir
from shards.storage import incomplete_uploads, is_url


@dataclass
class Verification:
    shards: int = 0
    samples: int = 0  # counted when deep
    bytes: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # worth knowing, not wrong with the data


def _check_samples(tar: Path, expected: int, n_classes: int, problems: list[str]) -> int:
    """Parse every sample; one line per problem (a read that stops early is one line, not
    also a count that contradicts it)."""
    n = 0
    try:
        for key, fields, _ in iter_grouped([tar]):
            n += 1
            missing = [f for f in ("cls", "json") if f not in fields]
            if not any(e in fields for e in IMAGE_EXTS):
                missing.append("jpg or png")
            if missing:
                problems.append(f"{tar.name}: sample {key!r} has no {', '.join(missing)}")
            elif not _label_ok(fields["cls"], n_classes):
                problems.append(
                    f"{tar.name}: sample {key!r} has label {fields['cls'][:20]!r}, not a "
                    f"class index below the manifest's {n_classes} classes"
                )
    except ValueError as err:
        problems.append(str(err))
        return n
    if n != expected:
        problems.append(f"{tar.name}: {n} samples, the manifest says {expected}")
    return n


def _label_ok(data: bytes, n_classes: int) -> bool:
    try:
        return 0 <= int(data) < n_classes
    except ValueError:
        return False


def _check_shard(
    out: Path, split: str, s: ShardEntry, deep: bool, n_classes: int, result: Verification
) -> None:
    """One shard (and its partial sums) against its manifest entry; problems noted."""
    problems = result.problems
    tar = shard_dir(out, split) / s.shard
    name = f"{split}/{s.shard}"
    result.shards += 1
    try:
        fetched = fetch_if_linked(tar)  # a bucket's shard: its sha256 checked on the way
    except ValueError as err:
        problems.append(f"{name}: {err}")
        return
    if not tar.is_file():
        problems.append(f"{name}: missing")
        return
    size = tar.stat().st_size
    result.bytes += size
    if size != s.bytes:
        problems.append(f"{name}: {size} bytes, the manifest says {s.bytes}")
    elif not fetched and sha256_file(tar) != s.sha256:
        problems.append(f"{name}: sha256 differs from the manifest's")
    if s.partials:
        own = partials_path(tar)
        try:
            sums_fetched = fetch_if_linked(own)
        except ValueError as err:
            problems.append(f"{split}/{own.name}: {err}")
            return
        if not own.is_file():
            problems.append(f"{split}/{own.name}: missing")
        elif not sums_fetched and sha256_file(own) != s.partials_sha256:
            problems.append(f"{split}/{own.name}: sha256 differs from the manifest's")
    if deep:
        result.samples += _check_samples(tar, s.count, n_classes, problems)


def verify(
    out: str | os.PathLike, deep: bool = False, progress: bool | None = None
) -> Verification:
    """Check OUT's shards (and statistics) against its manifest; see the module docstring.
    OUT may be a bucket's URL: every object is then fetched again (into a temporary cache)
    and checked, whatever a local cache holds. What a later stage will miss (statistics,
    a split) is a note. Progress: one step per shard."""
    if is_url(out):
        with tempfile.TemporaryDirectory(prefix="alexnet-verify-") as cache:
            result = verify(open_root(str(out), Path(cache)), deep, progress)
        unfinished = incomplete_uploads(str(out))
        if unfinished:
            result.notes.append(
                f"{len(unfinished)} incomplete multipart upload(s) under {out} (the first: "
                f"{unfinished[0]}), left by writers that were killed: they are not part of "
                "the data root, but the store keeps (and bills) their parts until they are "
                "aborted; a lifecycle rule (AbortIncompleteMultipartUpload) does it"
            )
        return result
    out = Path(out)
    manifest = read_manifest(out)
    result = Verification()
    problems = result.problems
    n_classes = len(manifest.classes)
    total = sum(len(entry.shards) for entry in manifest.splits.values())
    show = Progress("verify", total, unit="shards", enabled=progress, quiet=total < 20)
    for split, entry in manifest.splits.items():
        for s in entry.shards:
            show.update(1)
            _check_shard(out, split, s, deep, n_classes, result)
    show.close()
    if stats_dir(out).is_dir():  # once `alexnet stats` has run, both files must be there
        try:
            read_stats(out, manifest)
        except (ValueError, FileNotFoundError) as err:
            problems.append(f"statistics: {err}")
    elif "train" in manifest.splits:
        result.notes.append(
            "no statistics yet (stats/mean.npy, stats/pca.json): `alexnet train`, `evaluate` "
            "and `predict` need them; `alexnet stats OUT` computes them"
        )
    for split, needed in (
        ("train", "`alexnet stats` and `train`"),
        ("val", "`alexnet train` (it validates on it) and `evaluate`"),
    ):
        if split not in manifest.splits:
            result.notes.append(f"no {split} split: {needed} need one (`alexnet preprocess`)")
    return result
