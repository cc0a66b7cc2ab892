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

import hashlib
import os
import urllib.parse
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


_MADE: dict[tuple[str, int], Any] = {}  # (scheme, pid): this process's own file system


def filesystem(url: str) -> Any:
    """This process's fsspec file system for `url`'s scheme, made from the environment alone
    (one per process: a forked child makes its own; making one costs ~0.1 s)."""
    import fsspec

    scheme = urllib.parse.urlsplit(url).scheme
    key = (scheme, os.getpid())
    if key not in _MADE:
        options: dict[str, Any] = {"skip_instance_cache": True, "use_listings_cache": False}
        _MADE[key] = fsspec.filesystem("gcs" if scheme == "gs" else scheme, **options)
    return _MADE[key]


def read_bytes(url: str) -> bytes:
    """The object at `url` (FileNotFoundError if there is none)."""
    return filesystem(url).cat_file(url)


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


def incomplete_uploads(url: str) -> list[str]:
    """The keys of multipart uploads begun under `url` and never completed nor aborted (S3
    only: a writer killed in the middle of a large object leaves one)."""
    url = check_url(url)
    if not url.startswith("s3://"):
        return []
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    found = filesystem(url).call_s3("list_multipart_uploads", Bucket=bucket, Prefix=prefix)
    return sorted(u["Key"] for u in found.get("Uploads", []))


def upload(path: Path, url: str) -> None:
    """The file at `path` as the object `url` (one PUT, or a multipart upload for a large
    one: either is seen whole or not at all)."""
    filesystem(url).put_file(str(path), url)
