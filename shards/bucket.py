"""A data root in object storage, read through a local view and a shard cache.

    view = open_root("s3://bucket/imagenet")   # a local folder every reader accepts

The view (CACHE/roots/<16 hex of the URL>/) holds copies of the data root's
small files, fetched each time it is opened: manifest.json, rejects.jsonl,
history.jsonl, stats/, and each shard's record (once per shard's sha256). Each
shard the manifest lists is a symbolic link to CACHE/objects/<its sha256>.tar, a content-addressed
cache shared by every view: the link's target is fetched on first read, by
whichever process reads it (a loader worker, after the fork: it opens the
object by URL, from CACHE/objects/<sha256>.tar.url), checked against the
sha256 on the way in, and read from the disk from then on, so a second epoch
reads no object. A shard replaced in the bucket has another sha256: another
cache entry. A damaged object is an error naming it; nothing damaged enters
the cache.

CACHE is $ALEXNET_CACHE, else ~/.cache/alexnet. This module is the readers'
side (train, evaluate, verify, predict; the view is theirs to lock, the bucket
is not); the writers' (preprocess, stats) is shards/remote.py, under the
bucket's lease. A run trained from a URL is written in the view and copied up to
URL/runs/NAME/ after each epoch (`Publisher`), so its checkpoints outlive the
machine, and another machine fetches it from there (`pull_run`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from shards import storage
from shards.atomic import TMP_MARK, write_bytes, write_if_changed
from shards.format import HISTORY, MANIFEST, REJECTS, partials_path, record_path, shard_dir
from shards.manifest import Manifest
from shards.stats import STATS_DIR

HISTORY_DIR = "history"  # in a bucket: one object per run that changed the data root
METRICS = "metrics.jsonl"  # a run's append-only log (training.runlog)
SOURCE = ".source"  # in a view: the URL it mirrors
URL_SUFFIX = ".url"  # beside a cache entry: the object to fetch it from


def cache_root() -> Path:
    return Path(os.environ.get("ALEXNET_CACHE") or Path.home() / ".cache" / "alexnet")


def resolve(out: str | os.PathLike, cache: Path | None = None, runs: Sequence[str] = ()) -> Path:
    """OUT as a local folder: itself when it is one, else a view of the data root at the URL
    (see the module docstring), refreshed now, with the run folders `runs` fetched from
    URL/runs/ where this machine has none (trained on another machine: `pull_run`)."""
    path = storage.local(out)
    if path is not None:
        return path
    view = open_root(str(out), cache)
    for run in runs:
        pull_run(str(out), view / "runs" / run)
    return view


def pull_run(url: str, run_dir: Path) -> bool:
    """Fetch URL/runs/NAME into the view's `run_dir` when the bucket's copy is further on
    than this machine's (its metrics.jsonl, an append-only log, is longer: the run went on
    elsewhere) or this machine has none; whether it did. Whole or not at all: fetched into
    a temporary sibling, renamed into place (a second process that did the same meanwhile
    wins)."""
    remote = storage.join(storage.check_url(url), "runs", run_dir.name)
    found = storage.sizes(remote)
    mine = run_dir / METRICS
    if not found or (
        run_dir.exists() and found.get(METRICS, 0) <= (mine.stat().st_size if mine.is_file() else 0)
    ):
        return False
    tmp = run_dir.with_name(f".{run_dir.name}.fetch-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for key, data in storage.read_many([storage.join(remote, k) for k in found]).items():
        write_bytes(tmp / key[len(remote) + 1 :], data)
    old = run_dir.with_name(f".{run_dir.name}.old-{os.getpid()}")
    if run_dir.exists():
        os.rename(run_dir, old)
    try:
        os.rename(tmp, run_dir)
    except OSError:  # another process fetched it first
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return True


def view_of(url: str, cache: Path | None = None) -> Path:
    """The local view's folder of the data root at `url` (see the module docstring)."""
    url = storage.check_url(url)
    return (cache or cache_root()) / "roots" / hashlib.sha256(url.encode()).hexdigest()[:16]


def open_root(url: str, cache: Path | None = None) -> Path:
    """The local view of the data root at `url`, its small files fetched again now."""
    url = storage.check_url(url)
    cache = cache or cache_root()
    view = view_of(url, cache)
    try:
        data = storage.read_bytes(storage.join(url, MANIFEST))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{url} holds no {MANIFEST}: not a data root (or not written to the end yet)"
        ) from None
    try:
        manifest = Manifest.parse(json.loads(data))
    except ValueError as err:  # a bad one: the same error as from a local root
        raise ValueError(f"{url}/{MANIFEST}: {err}") from None
    _copy_if_there(storage.join(url, REJECTS), view / REJECTS)
    write_history(url, view)
    for obj in storage.listing(storage.join(url, STATS_DIR)):
        write_bytes(view / STATS_DIR / obj.rsplit("/", 1)[1], storage.read_bytes(obj))
    objects = cache / "objects"
    objects.mkdir(parents=True, exist_ok=True)
    for split in manifest.splits:
        for s in manifest.shards(split):
            tar = shard_dir(view, split) / s.shard
            remote = storage.join(url, "shards", split, s.shard)
            entry, record = objects / f"{s.sha256}.tar", record_path(tar)
            # a shard unchanged since the last open keeps its record (one GET less per shard:
            # 5,000 at ImageNet's size, on every start)
            if not (record.is_file() and _links_to(tar, entry)):
                write_bytes(record, storage.read_bytes(_url_of(remote, record.name)))
            _cached(tar, entry, remote)
            if s.partials and s.partials_sha256:  # train shards' pixel sums (verify reads them)
                sums = partials_path(tar)
                _cached(sums, objects / f"{s.partials_sha256}.npz", _url_of(remote, sums.name))
    write_bytes(view / SOURCE, url.encode())
    write_bytes(view / MANIFEST, data)  # last, as in a data root
    return view


def write_history(url: str, view: Path) -> None:
    """view/history.jsonl from the data root's history: one object per run under
    URL/history/ (object stores have no append), in the order of their names (the time)."""
    entries = storage.listing(storage.join(url, HISTORY_DIR))
    if not entries:
        (view / HISTORY).unlink(missing_ok=True)
        return
    lines = [storage.read_bytes(u).strip() + b"\n" for u in entries]
    write_if_changed(view / HISTORY, b"".join(lines))


def _cached(link: Path, entry: Path, url: str) -> None:
    """`link` to the cache entry `entry`, which is fetched from `url` when first read."""
    source = entry.with_name(entry.name + URL_SUFFIX)
    if not source.is_file():
        write_bytes(source, url.encode())
    _link(link, entry)


def _url_of(shard_url: str, name: str) -> str:
    return shard_url.rsplit("/", 1)[0] + "/" + name


def _copy_if_there(url: str, dest: Path) -> None:
    try:
        write_bytes(dest, storage.read_bytes(url))
    except FileNotFoundError:
        dest.unlink(missing_ok=True)


def _links_to(link: Path, target: Path) -> bool:
    return link.is_symlink() and os.readlink(link) == str(target)


def _link(link: Path, target: Path) -> None:
    if _links_to(link, target):
        return
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f"{link.name}.link-tmp-{os.getpid()}")  # ranks open one view at once
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, link)


def available(path: Path) -> bool:
    """Whether a shard can be read: on disk, or a view's link to an entry it can fetch."""
    return path.is_file() or _source_of(path) is not None


def materialize(path: str | os.PathLike) -> str | os.PathLike:
    """`path`, its cache entry fetched first if it is a view's link to one not yet here."""
    fetch_if_linked(path)
    return path


def fetch_if_linked(path: str | os.PathLike) -> bool:
    """Fetch the cache entry of a view's link that is not here yet; True if it was fetched
    now (its sha256 checked on the way in: no need to hash it again)."""
    source = None if os.path.exists(path) else _source_of(Path(path))
    if source is None:
        return False
    entry = Path(os.path.realpath(path))
    storage.fetch(source, entry, sha256=entry.name.split(".")[0])
    return True


def cached(url: str, sha256: str, suffix: str) -> Path:
    """The object at `url` as this machine's cache entry CACHE/objects/<sha256><suffix>,
    fetched (and checked) first if it is not here yet."""
    entry = cache_root() / "objects" / f"{sha256}{suffix}"
    if not entry.is_file():
        storage.fetch(url, entry, sha256=sha256)
    return entry


def _source_of(path: Path) -> str | None:
    """The object a view's link fetches its target from (None if `path` is not such)."""
    if not path.is_symlink():
        return None
    url_file = Path(os.path.realpath(path) + URL_SUFFIX)
    return url_file.read_text() if url_file.is_file() else None


class Publisher:
    """Copies a run folder up to `url`: each file added or changed (size, mtime) since the
    last call, written locally first (atomically), so each object is a whole file."""

    def __init__(self, folder: Path, url: str) -> None:
        self.folder, self.url = folder, storage.check_url(url)
        self.sent: dict[Path, tuple[int, int]] = {}

    @classmethod
    def of_run(cls, out: str | os.PathLike, run_dir: Path) -> Publisher | None:
        """The publisher of a run trained from the data root `out`: None unless a URL."""
        if not storage.is_url(out):
            return None
        return cls(run_dir, storage.join(storage.check_url(str(out)), "runs", run_dir.name))

    def __call__(self) -> None:
        for path, state in self._files():
            if self.sent.get(path) != state:
                storage.upload(path, storage.join(self.url, *path.relative_to(self.folder).parts))
                self.sent[path] = state

    def baseline(self) -> None:
        """Take the folder's files as they are now as sent (a run fetched from the bucket,
        or one whose files are there already): only later changes go up."""
        self.sent.update(self._files())

    def _files(self) -> list[tuple[Path, tuple[int, int]]]:
        found = []
        for path in sorted(self.folder.rglob("*")):
            if path.is_file() and not path.name.startswith(".") and TMP_MARK not in path.name:
                st = path.stat()
                found.append((path, (st.st_size, st.st_mtime_ns)))
        return found
