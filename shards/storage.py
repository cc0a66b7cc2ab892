"""Object storage: the one module that knows URL schemes.

A data root may be a local folder (a plain path, or `file://...`) or a prefix in
object storage: `s3://bucket/prefix` (S3, MinIO, Ceph: anything that speaks the
S3 protocol) or `gs://bucket/prefix` (Google Cloud Storage, with gcsfs
installed). Everything else in the project passes such strings along and asks
this module to read them.

Credentials come only from the provider's own chain: for S3 the `AWS_*`
environment variables, profiles and instance roles, and `AWS_ENDPOINT_URL`
for a store other than AWS; for GCS `GOOGLE_APPLICATION_CREDENTIALS`. A URL
that carries credentials (`s3://KEY:SECRET@bucket`) or a query string (a
signed URL) is refused, so that no secret can end up in a manifest, a log
line, a Prefect parameter or a pickled Dask task. File systems are made from
the environment, in the process that uses them (never pickled, never shared
across a fork: s3fs's are not fork-safe), with no listing cache (it can say
that a key another process has just written does not exist).
"""

from __future__ import annotations

import errno
import hashlib
import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shards.atomic import temporary_name

REMOTE = ("s3", "gs", "gcs")  # object stores, through fsspec
READ_BLOCK = 8 << 20  # s3fs's read-ahead: 1 MiB blocks read a shard at 15 MiB/s, 8+ at ~200


def is_url(location: str | os.PathLike) -> bool:
    """Whether `location` names object storage (not a local folder)."""
    return urllib.parse.urlsplit(str(location)).scheme in REMOTE


def local(location: str | os.PathLike) -> Path | None:
    """The local path `location` names (a plain path or file://), or None for a URL."""
    text = str(location)
    parts = urllib.parse.urlsplit(text)
    if parts.scheme == "file":
        return Path(urllib.parse.unquote(parts.path))
    if parts.scheme in REMOTE:
        return None
    if "://" in text:
        raise ValueError(
            f"{text!r}: unknown storage scheme {parts.scheme!r} (expected a path, file://, "
            "s3:// or gs://)"
        )
    return Path(text)


def check_url(url: str) -> str:
    """`url`, normalised (no trailing slash), if it may be used; else ValueError."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in REMOTE:
        raise ValueError(f"{url!r} is not an s3:// or gs:// URL")
    if "@" in parts.netloc:
        raise ValueError(
            f"{parts.scheme}://...@{parts.hostname}: a URL with credentials in it is refused "
            "(they would be written wherever the URL is); give them through the provider's "
            "own chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile, a role)"
        )
    if parts.query or parts.fragment:
        raise ValueError(
            f"{parts.scheme}://{parts.netloc}{parts.path}?...: a URL with a query string (a "
            "signed URL) is refused: its signature is a credential; use the bucket's URL "
            "with credentials from the environment"
        )
    if not parts.netloc:
        raise ValueError(f"{url!r} names no bucket")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def join(url: str, *names: str) -> str:
    return "/".join([url.rstrip("/"), *names])


_MADE: dict[tuple, Any] = {}  # (scheme, pid, the environment it was made from): its own
_ENVIRONMENT = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_DEFAULT_REGION")


def filesystem(url: str) -> Any:
    """This process's fsspec file system for `url`'s scheme, made from the environment alone
    (one per process and environment: a forked child makes its own; making one costs ~0.1 s)."""
    import fsspec

    scheme = urllib.parse.urlsplit(url).scheme
    # another endpoint or identity in the environment: another file system
    key = (scheme, os.getpid(), *(os.environ.get(v) for v in _ENVIRONMENT))
    if key not in _MADE:
        options: dict[str, Any] = {"skip_instance_cache": True, "use_listings_cache": False}
        _MADE[key] = fsspec.filesystem("gcs" if scheme == "gs" else scheme, **options)
    return _MADE[key]


def read_bytes(url: str, limit: int | None = None) -> bytes:
    """The object at `url` (FileNotFoundError if there is none); with `limit`, an OSError for
    one larger than that, not read."""
    if limit is None:
        return filesystem(url).cat_file(url)
    data = filesystem(url).cat_file(url, start=0, end=limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit >> 20} MiB: not read", url)
    return data


def read_many(urls: list[str]) -> dict[str, bytes]:
    """Each object of `urls`, by its URL (fetched concurrently: s3fs batches the GETs)."""
    if not urls:
        return {}
    scheme = urllib.parse.urlsplit(urls[0]).scheme
    got = filesystem(urls[0]).cat(urls, on_error="raise")
    return {f"{scheme}://{k.split('://')[-1]}": v for k, v in got.items()}


def listing(url: str) -> list[str]:
    """The URLs of the objects directly under the prefix `url` (none if it has none)."""
    fs = filesystem(url)
    scheme = urllib.parse.urlsplit(url).scheme
    try:
        found = fs.ls(url, detail=True)
    except FileNotFoundError:
        return []
    return sorted(f"{scheme}://{e['name']}" for e in found if e.get("type") == "file")


def fetch(url: str, dest: Path, sha256: str, size: int | None = None) -> None:
    """Download `url` to `dest` (atomically: a temporary sibling, renamed), checking that its
    bytes have this sha256; ValueError naming the object if not (nothing is left)."""
    tmp = temporary_name(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    try:
        with filesystem(url).open(url, "rb", block_size=READ_BLOCK) as src, open(tmp, "wb") as f:
            while chunk := src.read(READ_BLOCK):
                h.update(chunk)
                f.write(chunk)
        got = tmp.stat().st_size
        if h.hexdigest() != sha256 or (size is not None and got != size):
            raise ValueError(
                f"{url}: its bytes differ from the manifest's ({got} bytes, sha256 "
                f"{h.hexdigest()[:12]}..., expected {sha256[:12]}...): the object is damaged "
                "or was replaced; write it again (`alexnet preprocess`)"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass(frozen=True, slots=True)
class ObjectEntry:
    """An object, or a folder (a common prefix), as a folder listing's entry: the part of
    `os.DirEntry` that the source scan uses (name, path, is_dir, is_file, stat)."""

    name: str
    path: str  # its URL
    size: int = 0
    mtime_ns: int = 0  # the object's Last-Modified
    folder: bool = False

    def is_dir(self, follow_symlinks: bool = True) -> bool:
        return self.folder

    def is_file(self, follow_symlinks: bool = True) -> bool:
        return not self.folder

    def is_symlink(self) -> bool:
        return False

    def stat(self, follow_symlinks: bool = True) -> _Stat:
        return _Stat(self.size, self.mtime_ns)


@dataclass(frozen=True, slots=True)
class _Stat:
    st_size: int
    st_mtime_ns: int


def walk(url: str) -> dict[str, list[ObjectEntry]]:
    """Every folder under the prefix `url` (its own URL included, as `url`) with its entries,
    sorted by name, from one recursive listing (1,282 pages at ImageNet's 1.28M images)."""
    url = check_url(url)
    scheme = urllib.parse.urlsplit(url).scheme
    tree: dict[str, dict[str, ObjectEntry]] = {url: {}}
    for name, info in filesystem(url).find(url, detail=True).items():
        full = f"{scheme}://{name}"
        parts = full[len(url) + 1 :].split("/")
        folder = url
        for part in parts[:-1]:  # the folders on the way, each an entry of its parent
            sub = f"{folder}/{part}"
            tree[folder].setdefault(part, ObjectEntry(part, sub, folder=True))
            tree.setdefault(sub, {})
            folder = sub
        modified = info.get("LastModified") or info.get("updated") or info.get("mtime")
        stamp = int(modified.timestamp() * 1e9) if hasattr(modified, "timestamp") else 0
        tree[folder][parts[-1]] = ObjectEntry(parts[-1], full, int(info.get("size") or 0), stamp)
    return {
        folder: sorted(entries.values(), key=lambda e: e.name) for folder, entries in tree.items()
    }


def sizes(url: str) -> dict[str, int]:
    """The size of each object under the prefix `url`, by its key relative to `url`."""
    url = check_url(url)
    scheme = urllib.parse.urlsplit(url).scheme
    try:
        found = filesystem(url).find(url, detail=True)
    except FileNotFoundError:
        return {}
    return {f"{scheme}://{n}"[len(url) + 1 :]: int(i.get("size") or 0) for n, i in found.items()}


def put_bytes(url: str, data: bytes) -> None:
    """`data` as the object `url`, in one PUT (seen whole or not at all)."""
    filesystem(url).pipe_file(url, data)


def remove(urls: list[str]) -> None:
    """Delete these objects (those already gone are no error)."""
    if urls:
        filesystem(urls[0]).rm(urls)


def refused(err: OSError) -> bool:
    """Whether s3fs's error is a failed precondition (HTTP 412)."""
    return isinstance(err, FileExistsError) or (
        err.errno == errno.EINVAL and "pre-condition" in str(err)
    )


class Conflict(RuntimeError):
    """A conditional write refused: the object is not the version this writer read."""

    @classmethod
    def at(cls, url: str) -> Conflict:
        return cls(
            f"{url} was changed by another writer since this one read it: nothing was "
            "overwritten; run the command again (it resumes from what is there)"
        )


def etag(url: str) -> str | None:
    """The object's ETag, or None if there is no such object."""
    try:
        return filesystem(url).info(url).get("ETag")
    except FileNotFoundError:
        return None


def put_if(url: str, data: bytes, expected: str | None) -> None:
    """`data` as the object `url` if that object is still the version with ETag `expected`
    (None: if there is none yet); else Conflict. S3's If-Match / If-None-Match; other
    stores get a plain PUT (the lease is then the only guard)."""
    if not url.startswith("s3://"):
        put_bytes(url, data)
        return
    bucket, _, key = url.removeprefix("s3://").partition("/")
    condition = {"IfMatch": expected} if expected else {"IfNoneMatch": "*"}
    try:
        filesystem(url).call_s3("put_object", Bucket=bucket, Key=key, Body=data, **condition)
    except OSError as err:
        if refused(err):
            raise Conflict.at(url) from None
        raise


def incomplete_uploads(url: str) -> list[str]:
    """The keys of multipart uploads begun under `url` and never completed nor aborted (S3
    only: a writer killed in the middle of a large object leaves one)."""
    url = check_url(url)
    if not url.startswith("s3://"):
        return []
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    found = filesystem(url).call_s3("list_multipart_uploads", Bucket=bucket, Prefix=prefix)
    return sorted(u["Key"] for u in found.get("Uploads", []))


def move(src: str, dest: str) -> None:
    """The objects under the prefix `src` to `dest` (copied, then deleted: no rename)."""
    filesystem(src).mv(src, dest, recursive=True)


def upload(path: Path, url: str) -> None:
    """The file at `path` as the object `url` (one PUT, or a multipart upload for a large
    one: either is seen whole or not at all)."""
    filesystem(url).put_file(str(path), url)
