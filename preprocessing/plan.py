"""The preprocess stage's plan: which input goes to which shard, and what changed.

    plan_shards(tree, settings, layout)   per split, the shards to make, in order
    previous_layout(out, settings)        the members of OUT's shards as its
                                          manifest lists them (None: start afresh)
    layout_changes(...)                   what a run changed against that layout

A plan is a pure function of the source listing, the settings and the earlier
layout: train inputs are sorted by sha256(seed, key), a pseudo-random
permutation in which each image's place depends only on its own key; val keeps
source order. With a layout, every input keeps its shard and new inputs fill
new shards appended after the existing ones. Each plan's digest (the settings
and every member's identity) decides whether a shard on disk is the one planned.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from preprocessing.image import ImageSettings
from preprocessing.source import SourceFile, SourceTree
from shards.format import record_path, shard_dir, shard_name
from shards.manifest import FORMAT_VERSION, Manifest, ShardEntry, ShardRecord, find_manifest
from shards.settings import check_fields, option


@dataclass(frozen=True)
class PrepareSettings:
    """Everything that decides the bytes of the shards."""

    image: ImageSettings = field(default_factory=ImageSettings)
    shard_size: int = option(1000, "samples per shard", minimum=1)
    seed: int = option(0, "seed of the train shard order")

    def __post_init__(self) -> None:
        check_fields(self)
        if not isinstance(self.image, ImageSettings):
            raise ValueError(f"image settings must be ImageSettings, got {self.image!r}")

    def as_dict(self) -> dict:
        return {**asdict(self.image), "shard_size": self.shard_size, "seed": self.seed}

    @classmethod
    def from_dict(cls, data: dict) -> PrepareSettings:
        """The inverse of `as_dict` (as a manifest records the settings)."""
        image = {k: v for k, v in data.items() if k not in ("shard_size", "seed")}
        return cls(ImageSettings(**image), shard_size=data["shard_size"], seed=data["seed"])


@dataclass(frozen=True)
class ShardMembers:
    """A shard as the manifest lists it: its plan digest and its inputs."""

    plan: str
    members: tuple[tuple[str, str], ...]  # (key, identity) in shard order


# split -> the shards the manifest lists, in order
Layout = dict[str, list[ShardMembers]]


@dataclass(frozen=True)
class ShardPlan:
    split: str
    index: int
    files: tuple[SourceFile, ...]
    digest: str  # sha256 of the settings and every input's identity
    previous: ShardMembers | None = None  # what the manifest lists at this index, if anything

    @property
    def name(self) -> str:
        return shard_name(self.split, self.index)


def _train_order(seed: int, f: SourceFile) -> bytes:
    return hashlib.sha256(f"{seed}\0{f.key}".encode()).digest()


def plan_shards(
    tree: SourceTree, settings: PrepareSettings, layout: Layout | None = None
) -> dict[str, list[ShardPlan]]:
    """Assign each split's inputs to shards of `shard_size`, in the documented order.

    With a `layout` (the members of existing shards), inputs that are still in
    the source keep their shard, and the rest fill new shards appended after them.
    """
    settings_json = json.dumps(settings.as_dict(), sort_keys=True)
    plans: dict[str, list[ShardPlan]] = {}
    for split, files in tree.files.items():
        if split == "train":
            files = sorted(files, key=functools.partial(_train_order, settings.seed))
        n = settings.shard_size
        chunks: list[list[SourceFile]] = []
        previous = layout.get(split, []) if layout else []
        if previous:
            current = {f.key: f for f in files}
            for shard in previous:
                chunks.append([current[k] for k, _ in shard.members if k in current])
            placed = {k for shard in previous for k, _ in shard.members}
            files = [f for f in files if f.key not in placed]
        chunks += [files[start : start + n] for start in range(0, len(files), n)]
        plans[split] = []
        for i, chunk in enumerate(chunks):
            h = hashlib.sha256(f"{FORMAT_VERSION}\n{split}\n{settings_json}\n".encode())
            for f in chunk:
                h.update(f"{f.key}\t{f.identity()}\n".encode())
            before = previous[i] if i < len(previous) else None
            plans[split].append(ShardPlan(split, i, tuple(chunk), h.hexdigest(), before))
    return plans


def previous_layout(
    out: Path, settings: PrepareSettings
) -> tuple[Layout | None, Manifest | None, str]:
    """The members of OUT's shards as its manifest lists them, with that manifest.

    Returns (layout, manifest, why): the layout is None when there is no manifest,
    it was made with other settings, or a shard's record cannot be read; `why`
    says which (or that the layout is kept).
    """
    manifest = find_manifest(out)
    if manifest is None:
        return None, None, "new layout: no earlier manifest"
    if manifest.format_version != FORMAT_VERSION:
        return None, manifest, "new layout: the earlier manifest has another format version"
    if manifest.settings != settings.as_dict():
        return None, manifest, "new layout: the settings changed"
    layout: Layout = {}
    for split, entry in manifest.splits.items():
        shards, seen = [], set()
        for shard in entry.shards:
            listed = _listed_members(out, split, shard)
            if listed is None:
                why = f"new layout: the record of {split} {shard.shard} is unreadable"
                return None, manifest, why
            if seen.intersection(k for k, _ in listed.members):
                return None, manifest, f"new layout: {split} records list an input twice"
            seen.update(k for k, _ in listed.members)
            shards.append(listed)
        layout[split] = shards
    return layout, manifest, "layout kept: inputs stay in their shards"


def _listed_members(out: Path, split: str, shard: ShardEntry) -> ShardMembers | None:
    """The members of `shard` in the version the manifest lists.

    Normally its record's; if an update rewrote the shard since and was
    interrupted before its manifest, the record keeps the listed version's
    members under `previous`, so a resumed update plans and reports the same.
    """
    try:
        record = json.loads(record_path(shard_dir(out, split) / shard.shard).read_text())
        listed = shard.plan if shard.plan is not None else record["plan"]
        for version in (record, record.get("previous") or {}):
            if version.get("plan") == listed:
                members = tuple((str(k), str(ident)) for k, ident in version["members"])
                return ShardMembers(listed, members)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def diff_layout(layout: Layout, tree: SourceTree) -> dict[str, dict[str, list[str]]]:
    """Per split, the paths of inputs added, changed and deleted since `layout`."""
    changes = {}
    for split, files in tree.files.items():
        before = {k: ident for shard in layout.get(split, []) for k, ident in shard.members}
        now = {f.key: f for f in files}
        changes[split] = {
            "added": sorted(f.relpath for k, f in now.items() if k not in before),
            "changed": sorted(
                f.relpath for k, f in now.items() if k in before and before[k] != f.identity()
            ),
            "deleted": sorted(ident.split("\t")[0] for k, ident in before.items() if k not in now),
        }
    return changes


def layout_changes(
    previous: Manifest | None,
    layout: Layout | None,
    tree: SourceTree,
    records: dict[str, list[ShardRecord | None]],
    why: str,
) -> dict:
    """What this run changed against the previous manifest (its `changes` entry)."""
    changes: dict = {
        "layout": why,
        "previous_fingerprint": previous.source.get("fingerprint") if previous else None,
    }
    if layout is None:
        return changes
    inputs = diff_layout(layout, tree)
    changes["splits"] = {}
    for split, recs in records.items():
        before = previous.shards(split) if previous else ()
        n_before = len(layout.get(split, []))
        changes["splits"][split] = {
            **inputs[split],
            "shards_rewritten": [
                r["shard"]
                for r, old in zip(recs, before, strict=False)
                if r is not None and r["plan"] != old.plan
            ],
            "shards_added": [r["shard"] for r in recs[n_before:] if r is not None],
        }
    return changes


class SettingsWouldRewrite(ValueError):
    """Settings that differ from those a populated data root was made with."""


def refuse_other_settings(out: Path, previous: Manifest | None, settings: PrepareSettings) -> None:
    """A `SettingsWouldRewrite` error when OUT holds shards made with other settings."""
    if previous is None:
        return
    had, wanted = previous.settings, settings.as_dict()
    shards = sum(len(e.shards) for e in previous.splits.values())
    if had == wanted or not shards:
        return
    changed = ", ".join(
        f"{k}={had.get(k)!r} -> {wanted.get(k)!r}"
        for k in sorted(set(had) | set(wanted))
        if had.get(k) != wanted.get(k)
    )
    raise SettingsWouldRewrite(
        f"{out} holds {shards} shards made with other settings ({changed}): these settings "
        "would rewrite every one of them (on ImageNet, hours). Give the settings OUT was "
        "made with (`alexnet reprocess`, and the pipeline, use OUT's own when none are "
        "given), or pass --rewrite (rewrite=True) to rewrite them"
    )
