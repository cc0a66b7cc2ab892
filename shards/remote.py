"""Writing a data root in object storage (preprocess and stats with an s3:// OUT).

    root = RemoteRoot.open("s3://bucket/imagenet")   # under the data root's lease
    root.completed(split, name, plan)                # a shard already there, whole?
    upload_shard(url, stage, split, name)            # in a Dask worker: payloads, record last
    root.commit(manifest, rejects)                   # rejects, then the manifest, conditional

There is no rename in object storage, but a single PUT (or a completed
multipart upload) is seen whole or not at all. So each object is written under
its final name, in the order a reader trusts them: a shard's tar and partial
sums first, its record last (a shard with no record, or an older one, is not
complete: a re-run writes it again); the manifest last of all, with a
conditional PUT on the ETag it had when this writer read it (If-None-Match
when there was none), so a writer that somehow raced another (a store without
leases, ALEXNET_UNSAFE_STORE=1) fails instead of overwriting its manifest.
history.jsonl has no append in a bucket: each run that changes the data root
adds one object under history/, and readers see them joined (bucket.py).

The writer plans from a local view (the folder `bucket.view_of` names): the
manifest, rejects and every shard record in the bucket, fetched at open, and one
listing of the objects' sizes. A shard counts as complete when its record names
the plan's digest and the bucket holds its tar at the recorded size (and its
partial sums if it has them); whether those bytes are intact is `verify
--deep`'s to say, as on a local disk when the size and time are unchanged.
"""

from __future__ import annotations

import datetime
import json
import uuid
from pathlib import Path

from shards import storage
from shards.atomic import read_json, write_bytes, write_json
from shards.bucket import HISTORY_DIR, view_of, write_history
from shards.dataroot import OWNED_ENTRIES
from shards.format import MANIFEST, REJECTS, partials_path, record_path, shard_dir, shard_index
from shards.lease import Lease
from shards.manifest import ShardRecord, root_files


class RemoteRoot:
    """A data root in a bucket, as a writer sees it (see the module docstring)."""

    def __init__(
        self, url: str, view: Path, sizes: dict[str, int], etag: str | None, lease: Lease | None
    ) -> None:
        self.url, self.view, self.sizes, self.manifest_etag = url, view, sizes, etag
        self.location, self.lease = url, lease  # where the workers write; held while writing

    @classmethod
    def open(cls, url: str, cache: Path | None = None, lease: Lease | None = None) -> RemoteRoot:
        """The data root at `url` (none yet is fine), its small files fetched into the view
        (`lease`: this writer's, checked before the manifest is written)."""
        url = storage.check_url(url)
        view = view_of(url, cache)
        view.mkdir(parents=True, exist_ok=True)
        etag = storage.etag(storage.join(url, MANIFEST))  # before the listing: see commit
        sizes = storage.sizes(url)
        tops = {k.split("/")[0] for k in sizes if not k.startswith(".")}
        foreign = sorted(tops - OWNED_ENTRIES - {HISTORY_DIR})
        if foreign:
            raise FileExistsError(
                f"{url} holds objects that are not a data root's ({', '.join(foreign[:5])}); "
                "choose an empty or new prefix"
            )
        for name in (MANIFEST, REJECTS):
            if name in sizes:
                write_bytes(view / name, storage.read_bytes(storage.join(url, name)))
            else:
                (view / name).unlink(missing_ok=True)
        write_history(url, view)
        records = [k for k in sizes if k.startswith("shards/") and k.endswith(".json")]
        fetched = storage.read_many([storage.join(url, k) for k in records])
        for key in records:
            write_bytes(view / key, fetched[storage.join(url, key)])
        for old in (view / "shards").glob("*/*.json"):  # records the bucket no longer has
            if old.relative_to(view).as_posix() not in sizes:
                old.unlink()
        return cls(url, view, sizes, etag, lease)

    def completed(self, split: str, name: str, plan: str) -> ShardRecord | None:
        """The record of shard `split/name` if the bucket holds it whole, of this plan."""
        tar = shard_dir(self.view, split) / name
        record = read_json(record_path(tar))
        if not isinstance(record, dict) or record.get("plan") != plan:
            return None
        if "checksums" not in record or self.sizes.get(_key(tar, self.view)) != record["bytes"]:
            return None
        if "partials" in record and _key(partials_path(tar), self.view) not in self.sizes:
            return None
        return record

    def present(self, split: str) -> set[int | None]:
        """The indices of the shards the bucket holds a tar of."""
        prefix = f"shards/{split}/"
        return {shard_index(k[len(prefix) :]) for k in self.sizes if k.startswith(prefix)} - {None}

    def written(self, record: ShardRecord) -> None:
        """A shard was uploaded (its record last)."""
        tar = shard_dir(self.view, record["split"]) / record["shard"]
        self.sizes[_key(tar, self.view)] = record["bytes"]
        write_json(record_path(tar), record)  # the bytes the worker uploaded

    def remove_unplanned(self, split: str, n_planned: int) -> int:
        """Delete the shards numbered beyond the plan (their records first, then their
        payloads: a shard is never left looking complete); return how many tars."""
        prefix = f"shards/{split}/"
        doomed = [
            k
            for k in self.sizes
            if k.startswith(prefix)
            and (i := shard_index(k[len(prefix) :].split(".")[0] + ".tar")) is not None
            and i >= n_planned
        ]
        doomed.sort(key=lambda k: not k.endswith(".json"))  # records first
        for k in doomed:
            storage.remove([storage.join(self.url, k)])
            (self.view / k).unlink(missing_ok=True)
            del self.sizes[k]
        return sum(k.endswith(".tar") for k in doomed)

    def commit(self, manifest: dict, rejects: list[dict], records: dict) -> bool:
        """Write rejects.jsonl, then the manifest (conditional on the ETag it had at open),
        each only if its bytes change; return whether either was written. LeaseLost first
        if this writer's lease was taken over meanwhile."""
        wrote = False
        files = root_files(manifest, rejects)
        if any(not self._holds(name, data) for name, data in files):
            # before rejects.jsonl too: a writer that would lose the manifest writes nothing
            target = storage.join(self.url, MANIFEST)
            if storage.etag(target) != self.manifest_etag:
                raise storage.Conflict.at(target)
        for name, data in files:
            if self._holds(name, data):
                continue
            target = storage.join(self.url, name)
            if self.lease is not None:
                self.lease.check()
            if name == MANIFEST:
                storage.put_if(target, data, self.manifest_etag)
                self.manifest_etag = storage.etag(target)
            else:
                storage.put_bytes(target, data)
            write_bytes(self.view / name, data)
            wrote = True
        return wrote

    def _holds(self, name: str, data: bytes) -> bool:
        """Whether the root's file `name` (as read at open) is `data` already."""
        here = self.view / name
        return here.is_file() and here.read_bytes() == data

    def add_history(self, entry: dict) -> None:
        """One object under history/ for this run (named by the time, so they sort)."""
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S")
        name = f"{stamp}-{uuid.uuid4().hex[:8]}.json"
        storage.put_bytes(storage.join(self.url, HISTORY_DIR, name), json.dumps(entry).encode())
        write_history(self.url, self.view)


def upload_shard(url: str, stage: Path, split: str, name: str) -> None:
    """Upload a shard written under the local data root `stage` to the data root at `url`:
    its tar and partial sums, then its record (last: it marks the shard complete)."""
    tar = shard_dir(stage, split) / name
    for path in (tar, partials_path(tar), record_path(tar)):
        if path.is_file():
            storage.upload(path, storage.join(url, _key(path, stage)))


def upload_stats(url: str, folder: Path, names: list[str]) -> None:
    """The statistics files `names` in `folder`, uploaded to URL/stats/ in that order."""
    for name in names:
        storage.upload(folder / name, storage.join(url, "stats", name))


def _key(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()
