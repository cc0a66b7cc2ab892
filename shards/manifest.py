"""A data root's manifest, rejects and history: building, writing and reading them.

    OUT/manifest.json   what the data root holds: the classes, the settings the
                        shards were made with, the source (path, fingerprint),
                        and per split its shards (name, plan digest, count,
                        size, sha256, partials) and counts. It describes the data
                        only, so an unchanged re-run leaves its bytes as they are.
    OUT/rejects.jsonl   one line per input that is not in a shard, with why
                        (sorted by split and path)
    OUT/history.jsonl   one line per preprocess run that changed OUT: when, from
                        what, and what it changed (append-only)

The preprocess stage builds them from the shard records (`build_manifest`) and
writes rejects, then the manifest, last (`write_manifest`); every other stage
and the flows read them through `read_manifest` (checked, a clear error) or
`find_manifest` (None when there is none usable), as a typed `Manifest`
(`ClassEntry`, `SplitEntry`, `ShardEntry`): one check, `Manifest.parse`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NotRequired, TypedDict

from shards.atomic import append_line, json_bytes, read_json, write_if_changed
from shards.format import HISTORY, MANIFEST, REJECTS, SPLITS

FORMAT_VERSION = 1
# What the manifest keeps of each shard's record.
SHARD_FIELDS = ("shard", "plan", "count", "bytes", "sha256", "partials", "partials_sha256")


class ShardRecord(TypedDict):
    """A shard's record, `{split}-NNNNNN.json` beside it, written last (it marks the shard
    complete). A JSON object on disk, so a TypedDict: its declared shape. The manifest
    keeps SHARD_FIELDS of it."""

    split: str
    index: int
    shard: str
    plan: str  # the plan's digest: settings plus every input's path, size, mtime, label
    inputs: int
    members: list[list[str]]  # [key, identity] of every planned input
    count: int
    bytes: int
    sha256: str
    checksums: list[int]  # per sample, in order: what every reader checks
    rejects: list[dict]  # path, reason
    previous: NotRequired[dict]  # the version this replaces, until a manifest lists this one
    partials: NotRequired[str]  # train shards: the pixel sums' file, and its sha256
    partials_sha256: NotRequired[str]


@dataclass(frozen=True)
class ClassEntry:
    """One class: its index (the label stored in the shards), WordNet id and name."""

    index: int
    wnid: str
    name: str = ""


@dataclass(frozen=True)
class ShardEntry:
    """One shard as the manifest lists it (a subset of its record)."""

    shard: str
    count: int
    bytes: int
    sha256: str
    plan: str | None = None
    partials: str | None = None  # train shards: the pixel sums' file, and its sha256
    partials_sha256: str | None = None


@dataclass(frozen=True)
class SplitEntry:
    """A split: its shards in order and its counts (inputs/rejected: absent in data roots
    not made by preprocess, such as the benchmarks' synthetic ones)."""

    shards: tuple[ShardEntry, ...]
    count: int
    inputs: int | None = None
    rejected: int | None = None


@dataclass(frozen=True)
class Manifest:
    """OUT/manifest.json, checked and typed (`Manifest.parse`). `data` is the JSON object
    itself, what `write_manifest` writes and what the flows hand on."""

    classes: tuple[ClassEntry, ...]
    splits: dict[str, SplitEntry]
    settings: dict
    source: dict
    counts: dict  # inputs, written, rejected over every split
    format_version: int | None
    data: dict = field(repr=False, compare=False)

    @classmethod
    def parse(cls, data: object) -> Manifest:
        """The manifest in `data`, or ValueError saying what is missing, of the wrong kind
        or inconsistent."""
        problem = _manifest_problem(data)
        if problem:
            raise ValueError(problem)
        assert isinstance(data, dict)
        splits = {
            split: SplitEntry(
                tuple(ShardEntry(**{k: s[k] for k in SHARD_FIELDS if k in s}) for s in e["shards"]),
                e["count"],
                e.get("inputs"),
                e.get("rejected"),
            )
            for split, e in data["splits"].items()
        }
        classes = tuple(
            ClassEntry(c["index"], c["wnid"], c.get("name") or "") for c in data["classes"]
        )
        source, counts = (
            data.get(k) if isinstance(data.get(k), dict) else {} for k in ("source", "counts")
        )
        version = data.get("format_version")
        return cls(classes, splits, data["settings"], source, counts, version, data)

    @property
    def wnids(self) -> list[str]:
        return [c.wnid for c in self.classes]

    def shards(self, split: str) -> tuple[ShardEntry, ...]:
        """The shards of `split` in order (none when the split is absent)."""
        entry = self.splits.get(split)
        return entry.shards if entry is not None else ()


def read_manifest(out: str | os.PathLike) -> Manifest:
    """OUT/manifest.json, or a clear error if the preprocess stage has not completed."""
    path = Path(out) / MANIFEST
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path} not found: run `alexnet preprocess SRC {out}` first"
        ) from None
    except ValueError as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from None
    try:
        return Manifest.parse(data)
    except ValueError as err:
        raise ValueError(
            f"{path} is not a data root's manifest: {err}; run preprocess again"
        ) from None


def find_manifest(out: str | os.PathLike) -> Manifest | None:
    """OUT's manifest if it is there and well formed, else None (nothing made yet)."""
    try:
        return Manifest.parse(read_json(Path(out) / MANIFEST))
    except ValueError:
        return None


def classes_digest(classes: list[dict]) -> str:
    """sha256 of the class list (index, wnid, name of each, in order): a manifest whose list
    was cut or reordered no longer matches the digest written with it."""
    return hashlib.sha256(json.dumps(classes, sort_keys=True).encode()).hexdigest()


def _manifest_problem(manifest: object) -> str | None:
    """What is missing, of the wrong kind or inconsistent in a manifest, or None."""
    if not isinstance(manifest, dict):
        return "not a JSON object"
    classes, splits = manifest.get("classes"), manifest.get("splits")
    if not isinstance(classes, list) or not isinstance(splits, dict):
        return "no 'classes' list or no 'splits' object"
    if not classes or not splits:
        return "it lists no class" if not classes else "it lists no split"
    for i, c in enumerate(classes):
        if not isinstance(c, dict) or c.get("index") != i or not isinstance(c.get("wnid"), str):
            return f"class {i} is not an object with its index and wnid"
    if len({c["wnid"] for c in classes}) != len(classes):
        return "a wnid is listed twice"
    digest = manifest.get("classes_sha256")  # absent in manifests written before it was
    if digest is not None and digest != classes_digest(classes):
        return "the class list is not the one written with it (cut, reordered or edited)"
    for split, entry in splits.items():
        if split not in SPLITS:
            return f"unknown split {split!r}"
        shards = entry.get("shards") if isinstance(entry, dict) else None
        if not isinstance(shards, list) or not isinstance(entry.get("count"), int):
            return f"split {split!r} has no 'shards' list or no count"
        for s in shards:
            if not isinstance(s, dict) or not _shard_entry_ok(s):
                return f"a shard of {split!r} lacks its name, count, sha256 or size"
    if not isinstance(manifest.get("settings"), dict):
        return "no 'settings' object"
    return None


def _shard_entry_ok(s: dict) -> bool:
    return (
        isinstance(s.get("shard"), str)
        and isinstance(s.get("count"), int)
        and isinstance(s.get("bytes"), int)
        and isinstance(s.get("sha256"), str)
    )


def read_rejects(out: str | os.PathLike) -> list[dict]:
    """OUT/rejects.jsonl as a list (empty when there is none or it cannot be read)."""
    try:
        lines = (Path(out) / REJECTS).read_text().splitlines()
        return [json.loads(line) for line in lines if line]
    except (OSError, ValueError):
        return []


def read_history(out: str | os.PathLike) -> list[dict]:
    """OUT/history.jsonl: what each preprocess run that changed OUT did, oldest first."""
    try:
        lines = (Path(out) / HISTORY).read_text().splitlines()
    except FileNotFoundError:
        return []
    entries = []
    for line in lines:
        try:
            entries.append(json.loads(line))
        except ValueError:  # a line cut short by a crash (only ever the last)
            continue
    return entries


def append_history(out: str | os.PathLike, entry: dict) -> None:
    append_line(Path(out) / HISTORY, entry)


def build_manifest(
    classes: Sequence[tuple[str, str]],
    settings: dict,
    source: dict,
    records: dict[str, list[ShardRecord]],
    scan_rejects: Iterable[dict],
    kept: dict[str, tuple[dict, list[dict]]] | None = None,
) -> tuple[dict, list[dict]]:
    """The manifest and the rejects of a data root, from its shards' records.

    `records`: per split, the records of its shards in order. `scan_rejects`: inputs
    the listing refused (`path`, `reason`; the path starts with its split). `kept`:
    splits not processed this time, each with its earlier manifest entry and rejects.
    """
    scan_rejects = list(scan_rejects)
    rejects = [dict(r, split=r["path"].split("/")[0]) for r in scan_rejects]
    splits = {}
    for split, recs in records.items():
        shard_rejects = [dict(r, split=split) for rec in recs for r in rec["rejects"]]
        rejects += shard_rejects
        listed = sum(r["path"].startswith(f"{split}/") for r in scan_rejects)
        splits[split] = {
            "count": sum(r["count"] for r in recs),
            "inputs": sum(r["inputs"] for r in recs) + listed,
            "rejected": len(shard_rejects) + listed,
            "shards": [{k: r[k] for k in SHARD_FIELDS if k in r} for r in recs],
        }
    for split, (entry, split_rejects) in (kept or {}).items():
        if split not in splits:
            splits[split] = entry
            rejects += split_rejects
    rejects.sort(key=lambda r: (r["split"], r["path"]))
    counts = {
        "inputs": sum(s["inputs"] for s in splits.values()),
        "written": sum(s["count"] for s in splits.values()),
        "rejected": len(rejects),
    }
    if counts["inputs"] != counts["written"] + counts["rejected"]:
        raise AssertionError(f"counts do not add up: {counts}")
    listed = [{"index": i, "wnid": w, "name": n} for i, (w, n) in enumerate(classes)]
    manifest = {
        "format_version": FORMAT_VERSION,
        "classes": listed,
        "classes_sha256": classes_digest(listed),
        "settings": settings,
        "source": source,
        "splits": dict(sorted(splits.items())),
        "counts": counts,
    }
    return manifest, rejects


def root_files(manifest: dict, rejects: list[dict]) -> list[tuple[str, bytes]]:
    """The data root's own files as written: rejects.jsonl, then manifest.json (last)."""
    lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rejects)
    return [(REJECTS, lines.encode()), (MANIFEST, json_bytes(manifest))]


def write_manifest(out: str | os.PathLike, manifest: dict, rejects: list[dict]) -> bool:
    """Write rejects.jsonl, then manifest.json (last), each atomically and only if its
    bytes change; return whether either was written."""
    wrote = [
        write_if_changed(Path(out) / name, data) for name, data in root_files(manifest, rejects)
    ]
    return any(wrote)


def train_shard_digests(manifest: Manifest) -> list[str]:
    """The sha256 of each train shard, in order (what the statistics must cover)."""
    return [s.sha256 for s in manifest.shards("train")]
