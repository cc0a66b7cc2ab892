"""The official archives' index: each image's offset, size and CRC-32, listed once.

Listing reads the archives through (sequentially, nothing extracted): one unit
of work per class tar of the train tar, and one for the val tar. A unit done
is kept in OUT/.index, so a re-run, or a run killed midway and started again,
lists only what is not there yet:

    OUT/.index/train/<wnid>-<16 hex>.json   one class tar's images; the hex is a
                                            digest of its header in the train tar
                                            (name, offset, size, mtime)
    OUT/.index/val-<16 hex>.json            the val tar's; the hex: its size and mtime

A class tar's header, not the train tar's mtime, names its listing: an
identical archive downloaded again lists nothing again. (The val tar has no
inner header: downloaded again, it is read through again, and its images, the
same bytes, are the same inputs.) Each file is written atomically when its unit
is done; listings of class tars no longer in the train tar are removed.

Units run as Dask tasks on the stage's cluster (`StageCluster`, which the shards
then use too) when there are several to list and it has more than one worker (or
is a scheduler's), else in this process. Either way the result is the
same members in the same order, so the shards do not depend on the worker count.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from preprocessing.archives import (
    ClassTar,
    Member,
    list_class_tar,
    list_class_tars,
    list_val,
)
from preprocessing.cluster import StageCluster
from shards.atomic import read_json, remove_stale_temporaries, write_json
from shards.progress import Progress

INDEX = ".index"  # in OUT
VERSION = 1  # of a listing file's shape


@dataclass
class Indexer:
    """Where the listings are kept, and who lists what is missing."""

    folder: Path | None = None  # OUT/.index; None: list everything, keep nothing
    write: bool = True  # False: use the listings there, write none (a dry run)
    cluster: StageCluster | None = None  # None: list in this process
    progress: bool | None = False
    rejects: list[dict] = field(default_factory=list)  # the train tar's members not class tars

    def train(self, path: Path) -> Iterator[tuple[ClassTar, list[Member] | str]]:
        """Per class tar of the train tar, in header order: its members, or why it could
        not be listed. (The train tar's members that are not class tars: `self.rejects`.)
        One class tar's members at a time: the caller keeps what it needs of them."""
        tars, self.rejects = list_class_tars(path)
        names = {
            t: self._file(f"train/{t.folder}-{_digest(t.name, t.offset, t.size, t.mtime)}")
            for t in tars
        }
        if self.folder is not None and self.write:
            _remove_other(self.folder / "train", {p.name for p in names.values() if p})
        missing = {t for t in tars if names[t] is None or not names[t].is_file()}
        jobs = [(str(path), t, names[t]) for t in tars if t in missing]
        done = self._list(_list_class_tar, jobs, "class tars")
        for t in tars:
            listed = next(done) if t in missing else read_json(names[t])  # type: ignore[arg-type]
            if isinstance(listed, str):  # it could not be listed: why
                yield t, listed
                continue
            members = _members(listed)
            if members is None:  # a listing there, but unreadable: listed again, here
                again = _list_class_tar(str(path), t, names[t] if self.write else None)
                members = again if isinstance(again, str) else _members(again)
            assert members is not None
            yield t, members

    def val(self, path: Path) -> list[Member]:
        """The val tar's members (DamagedArchive if it cannot be read to its end)."""
        st = os.stat(path)
        name = self._file(f"val-{_digest(st.st_size, st.st_mtime_ns)}")
        if self.folder is not None and self.write:
            _remove_other(self.folder, {name.name} if name else set(), "val-")
        members = _load(name)
        if members is None:
            members = _members(next(self._list(_list_val, [(str(path), name)], "val tar")))
            assert members is not None
        return members

    def _file(self, stem: str) -> Path | None:
        return self.folder / f"{stem}.json" if self.folder is not None else None

    def _list(self, fn: Callable, jobs: list[tuple], unit: str) -> Iterator[dict | str]:
        """`fn(*job)` for each job, in order: on Dask when it pays, else here."""
        if not jobs:
            return
        show = Progress("index", len(jobs), unit=unit, enabled=self.progress)
        jobs = [(*job[:-1], job[-1] if self.write else None) for job in jobs]
        try:
            cluster = self.cluster
            if cluster is not None and cluster.parallel and (len(jobs) > 1 or cluster.address):
                client = cluster.client(tasks=len(jobs))
                futures = [client.submit(fn, *job, pure=False) for job in jobs]
                for future in futures:
                    yield future.result()
                    show.update(1)
                    future.release()
                return
            for job in jobs:
                yield fn(*job)
                show.update(1)
        finally:
            show.close()


def _digest(*parts: object) -> str:
    return hashlib.sha256("\t".join(map(str, parts)).encode()).hexdigest()[:16]


def _load(path: Path | None) -> list[Member] | None:
    """A listing kept earlier, or None (none there, or not of this shape)."""
    return _members(read_json(path)) if path is not None else None


def _members(listing: object) -> list[Member] | None:
    """A listing's members (None if it is not one of ours)."""
    if not isinstance(listing, dict) or listing.get("version") != VERSION:
        return None
    try:
        folder = listing["folder"]
        return [Member(folder, n, o, s, t, c) for n, o, s, t, c in listing["members"]]
    except (KeyError, TypeError, ValueError):
        return None


def _listing(folder: str, members: list[Member], keep: str | os.PathLike | None) -> dict:
    """`members` as stored, and as a task returns them: rows of plain values (a class
    tar's 1,281 Member objects took Dask 52 ms to send here, as rows 4 ms); written to
    `keep` if given."""
    rows = [[m.name, m.offset, m.size, m.mtime, m.crc] for m in members]
    listing = {"version": VERSION, "folder": folder, "members": rows}
    if keep is not None:
        write_json(keep, listing)
    return listing


def _list_class_tar(path: str, tar: ClassTar, keep: Path | None) -> dict | str:
    """One class tar's listing (kept in `keep`), or why it cannot be listed. (A task.)"""
    import tarfile

    try:
        members = list_class_tar(path, tar)
    except (tarfile.TarError, EOFError) as err:
        return f"the class tar {tar.name} cannot be read ({err})"
    return _listing(tar.folder, members, keep)


def _list_val(path: str, keep: Path | None) -> dict:
    """The val tar's listing (kept in `keep`). (A task.)"""
    return _listing("", list_val(path), keep)


def _remove_other(folder: Path, keep: set[str], prefix: str = "") -> None:
    """Delete listings in `folder` (starting with `prefix`) other than `keep`, and the
    temporaries of writers that were killed."""
    if folder.is_dir():
        remove_stale_temporaries(folder)
        for p in folder.iterdir():
            if (
                p.is_file()
                and p.name.startswith(prefix)
                and p.suffix == ".json"
                and p.name not in keep
            ):
                p.unlink()
