"""What a data root is, and who may write it.

    OWNED_ENTRIES        what OUT may hold besides hidden files (else it is not ours)
    check_out            refuse an OUT that is not ours, or lies inside the source
    locked / reading     OUT/.lock, held by writers (preprocess, stats) exclusively and
                         by readers (train, evaluate) shared: neither runs under the other
    completed_record     is a shard on disk, complete, of this plan, and intact?
    read_seen / note_written   OUT/.shards-seen.json, this disk's known-intact shards

Every stage goes through here for these; `preprocessing` and `training` only call them.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from shards.atomic import json_bytes, one_writer, read_json, shared_reader, write_if_changed
from shards.format import (
    HISTORY,
    MANIFEST,
    REJECTS,
    SPLITS,
    data_root_lock,
    partials_path,
    record_path,
    sha256_file,
    shard_dir,
)
from shards.manifest import ShardRecord

# What a data root may hold besides hidden files; anything else means OUT is
# somebody's folder, not ours, and we refuse to write into it.
OWNED_ENTRIES = {"shards", MANIFEST, REJECTS, HISTORY, "stats", "runs"}
SEEN = ".shards-seen.json"  # this disk's (size, mtime) of each shard known to be intact


def locked(out: Path) -> contextlib.AbstractContextManager[None]:
    """Hold OUT/.lock so that two runs (preprocess, stats) never write a data root at once."""
    out.mkdir(parents=True, exist_ok=True)
    return one_writer(data_root_lock(out), f"the data root {out}")


def reading(out: Path) -> contextlib.AbstractContextManager[None]:
    """Hold OUT/.lock shared while shards and statistics are read (train, evaluate)."""
    return shared_reader(data_root_lock(out), f"the data root {out}")


def check_out(src: Path | None, out: Path) -> None:
    """Refuse an OUT that is not ours to write, or that lies inside the source (None: a
    source in a bucket, which no local OUT can be inside)."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a directory")
    if out.is_dir():
        foreign = sorted(
            p.name
            for p in out.iterdir()
            if p.name not in OWNED_ENTRIES and not p.name.startswith(".")
        )
        if foreign:
            raise FileExistsError(
                f"{out} holds files that are not a data root's ({', '.join(foreign[:5])}); "
                "choose an empty or new folder"
            )
    if src is None:
        return
    s, o = src.resolve(), out.resolve()
    if o == s or any(o.is_relative_to(s / split) for split in SPLITS):
        raise ValueError(f"output {out} must not be inside the source's train/ or val/ folders")


def completed_record(
    out: str | os.PathLike,
    split: str,
    name: str,
    plan: str,
    seen: dict[str, list[int]] | None = None,
) -> ShardRecord | None:
    """The record of shard `split/name` if it is on disk, complete, made by plan digest
    `plan`, and intact; else None.

    Intact, cheaply: the tar has the recorded size, and the size and modification
    time `seen` (OUT/.shards-seen.json) noted when it was last known good; if the
    time moved (an edit, or a copied data root) its sha256 must match the record's,
    and `seen` is updated. Records from before per-sample checksums count as
    incomplete (the shard is rewritten once).
    """
    tar = shard_dir(out, split) / name
    try:
        record = json.loads(record_path(tar).read_text())
        if record.get("plan") != plan or "checksums" not in record:
            return None
        st = tar.stat()
        if st.st_size != record["bytes"]:
            return None
        stamp, key = [st.st_size, st.st_mtime_ns], f"{split}/{name}"
        if seen is None or seen.get(key) != stamp:
            if sha256_file(tar) != record["sha256"]:
                return None
            if seen is not None:
                seen[key] = stamp
        if "partials" in record and not partials_path(tar).is_file():
            return None
    except (OSError, ValueError, KeyError):
        return None
    return record


def read_seen(out: Path) -> dict[str, list[int]]:
    """OUT/.shards-seen.json: (size, mtime) of each shard last known intact on this disk."""
    seen = read_json(out / SEEN)
    return seen if isinstance(seen, dict) else {}


def note_written(out: Path, seen: dict[str, list[int]], records: dict) -> None:
    """Note the shards of `records` (per split, in order) as known intact; forget others."""
    for split, recs in records.items():
        for r in recs:
            key = f"{split}/{r['shard']}"
            if key not in seen:
                st = (shard_dir(out, split) / r["shard"]).stat()
                seen[key] = [st.st_size, st.st_mtime_ns]
    live = {f"{split}/{r['shard']}" for split, recs in records.items() for r in recs}
    kept = {k: v for k, v in sorted(seen.items()) if k in live}
    write_if_changed(out / SEEN, json_bytes(kept))
