"""A data root opened for writing (the preprocess stage): a folder under its lock, or a
bucket's prefix under its lease.

    with writing(out, "preprocess") as root:     # LocalRoot or shards.remote.RemoteRoot
        root.completed(split, name, plan)        # a shard already there, whole, of this plan?
        root.remove_unplanned(split, n)          # shards numbered beyond the plan
        root.written(record)                     # a shard was written (its record last)
        root.commit(manifest, rejects, records)  # rejects, then the manifest
        root.add_history(entry)

Both answer the same questions, so the stage's own logic (preprocessing/prepare.py)
is one code path for a folder and a bucket. `view(out)` is where OUT's files are
read on this machine.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from shards import storage
from shards.atomic import remove_stale_temporaries
from shards.bucket import view_of
from shards.dataroot import completed_record, locked, note_written, read_seen
from shards.format import shard_dir, shard_index
from shards.manifest import ShardRecord, append_history, write_manifest
from shards.remote import RemoteRoot


class LocalRoot:
    """A data root in a local folder, as the preprocess stage writes it."""

    def __init__(self, out: Path) -> None:
        self.view, self.location = out, str(out.resolve())
        self.seen = read_seen(out)

    def completed(self, split: str, name: str, plan: str) -> ShardRecord | None:
        return completed_record(self.view, split, name, plan, self.seen)

    def present(self, split: str) -> set[int | None]:
        folder = shard_dir(self.view, split)
        return {shard_index(p.name) for p in folder.glob("*.tar")} if folder.is_dir() else set()

    def remove_unplanned(self, split: str, n_planned: int) -> int:
        folder = shard_dir(self.view, split)
        remove_stale_temporaries(folder)
        return _remove_unplanned(folder, n_planned)

    def written(self, record: ShardRecord) -> None:
        self.seen.pop(f"{record['split']}/{record['shard']}", None)  # stamped at commit

    def commit(self, manifest: dict, rejects: list[dict], records: dict) -> bool:
        note_written(self.view, self.seen, records)
        return write_manifest(self.view, manifest, rejects)

    def add_history(self, entry: dict) -> None:
        append_history(self.view, entry)


@contextlib.contextmanager
def writing(out: str | os.PathLike, what: str) -> Iterator[LocalRoot | RemoteRoot]:
    """OUT opened for writing, and held: a local folder under OUT/.lock, a bucket's
    prefix under its lease (shards/lease.py) with its files fetched into the view."""
    path = storage.local(out)
    if path is not None:
        with locked(path):
            yield LocalRoot(path)
        return
    from shards.lease import leased

    with leased(str(out), what) as lease:
        yield RemoteRoot.open(str(out), lease=lease)


def view(out: str | os.PathLike) -> Path:
    """Where OUT's files are read from here: itself, or a bucket's local view (its folder;
    `shards.bucket.resolve` refreshes it)."""
    path = storage.local(out)
    return path if path is not None else view_of(str(out))


def _remove_unplanned(folder: Path, n_planned: int) -> int:
    """Delete shards (and their records and partials) numbered beyond the plan."""
    removed = 0
    if folder.is_dir():
        for p in sorted(folder.iterdir()):
            stem = p.name.split(".")[0]
            index = shard_index(f"{stem}.tar")
            if index is not None and index >= n_planned:
                p.unlink()
                removed += p.suffix == ".tar"
    return removed
