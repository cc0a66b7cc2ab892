"""The lock of a data root in object storage: a lease object, OUT/.lease.

    with leased("s3://bucket/out", "preprocess") as lease:
        ...                       # write; lease.check() before the manifest

There is no rename and no flock in object storage, but there are conditional
writes. The lease is created with `PUT If-None-Match: *`: of any number of
writers racing, exactly one creates it. Its body names the holder (command,
host, pid). The holder renews it from a thread every third of its TTL (a
`PUT If-Match: <its ETag>`); one that dies stops renewing, and once the
object's Last-Modified is more than the TTL old by the server's own clock (the
Date of the server's reply; no local clock is trusted), another writer takes it
over with `DELETE If-Match: <that ETag>` (only one taker can win) and creates
its own. A holder whose renewal fails has lost the lease (taken over after a
stall longer than the TTL): `check()` says so, and the writer must stop before
it commits anything more. Release is `DELETE If-Match: <own ETag>`.

All of this needs a store that honours the conditions (AWS S3 does since
2024, MinIO does; some S3-compatible stores ignore them, which would let two
writers in). `probe` checks it once: a create-only PUT of a probe key, twice;
the second must be refused. A store that does not is refused too, unless
ALEXNET_UNSAFE_STORE=1 says that one writer at a time is the user's concern.
Only S3-protocol stores for now.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from shards import storage

LEASE = ".lease"
TTL_S = 60.0


class LeaseHeld(RuntimeError):
    """Another writer holds the data root's lease (and has renewed it within its TTL)."""


class LeaseLost(RuntimeError):
    """This writer's lease was taken over (it went unrenewed for longer than its TTL)."""


class UnsafeStore(RuntimeError):
    """A store that does not honour conditional writes: a lease there would not exclude."""


@dataclass
class Lease:
    url: str
    holder: str
    etag: str
    ttl_s: float
    lost: str = ""  # why the renewal failed, once it has
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)

    def check(self) -> None:
        """LeaseLost if the lease is no longer this writer's."""
        if self.lost:
            raise LeaseLost(f"{self.url}: the lease of {self.holder} was lost: {self.lost}")


def _split(url: str) -> tuple[Any, str, str]:
    url = storage.check_url(url)
    if not url.startswith("s3://"):
        raise ValueError(f"{url}: leases need an S3-protocol store (s3://)")
    bucket, _, key = url.removeprefix("s3://").partition("/")
    return storage.filesystem(url), bucket, key


def _body(holder: str, ttl_s: float) -> bytes:
    return json.dumps({"holder": holder, "ttl_s": ttl_s}).encode()


def acquire(root: str, what: str, ttl_s: float = TTL_S) -> Lease:
    """The lease of the data root at `root` for `what` (a command's name), or LeaseHeld
    naming its holder."""
    url = storage.join(storage.check_url(root), LEASE)
    fs, bucket, key = _split(url)
    holder = f"{what} (pid {os.getpid()} on {socket.gethostname()})"
    for _ in range(5):
        try:
            made = fs.call_s3(
                "put_object", Bucket=bucket, Key=key, Body=_body(holder, ttl_s), IfNoneMatch="*"
            )
            return Lease(url, holder, made["ETag"], ttl_s)
        except OSError as err:
            if not storage.refused(err):
                raise
        try:
            theirs = json.loads(fs.cat_file(url))
            head = fs.call_s3("head_object", Bucket=bucket, Key=key)
        except FileNotFoundError:
            continue  # released meanwhile: try again
        now = email.utils.parsedate_to_datetime(head["ResponseMetadata"]["HTTPHeaders"]["date"])
        age = (now - head["LastModified"]).total_seconds()
        if age <= float(theirs.get("ttl_s", TTL_S)):
            raise LeaseHeld(
                f"{root} is being written by {theirs.get('holder', 'another writer')} (its "
                f"lease was renewed {age:.0f} s ago by the store's clock; a holder that died "
                f"loses it {theirs.get('ttl_s', TTL_S):.0f} s after its last renewal)"
            )
        with contextlib.suppress(FileNotFoundError):
            try:  # expired: taken over; of several takers, one deletes it
                fs.call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=head["ETag"])
            except OSError as err:
                if not storage.refused(err):
                    raise
    raise LeaseHeld(f"{root}: its lease changed hands five times while this writer waited")


def renew(lease: Lease) -> None:
    """Renew `lease` (a PUT conditional on its ETag); on failure it is marked lost."""
    fs, bucket, key = _split(lease.url)
    try:
        made = fs.call_s3(
            "put_object",
            Bucket=bucket,
            Key=key,
            Body=_body(lease.holder, lease.ttl_s),
            IfMatch=lease.etag,
        )
        lease.etag = made["ETag"]
    except FileNotFoundError:
        lease.lost = "the lease object was deleted (taken over after it expired)"
    except OSError as err:
        if not storage.refused(err):
            raise
        lease.lost = "another writer took the lease over after it expired"


def release(lease: Lease) -> None:
    """Delete the lease if it is still this writer's."""
    fs, bucket, key = _split(lease.url)
    with contextlib.suppress(FileNotFoundError):
        try:
            fs.call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=lease.etag)
        except OSError as err:
            if not storage.refused(err):
                raise


@contextlib.contextmanager
def leased(root: str, what: str, ttl_s: float | None = None) -> Iterator[Lease]:
    """Hold the lease of `root` while the block runs, renewed every third of `ttl_s`
    (default: $ALEXNET_LEASE_TTL_S, else 60 s: how long a killed writer blocks the next)."""
    ttl_s = ttl_s or float(os.environ.get("ALEXNET_LEASE_TTL_S") or TTL_S)
    probe(root)
    lease = acquire(root, what, ttl_s)

    def keep() -> None:
        while not lease._stop.wait(ttl_s / 3) and not lease.lost:
            with contextlib.suppress(OSError):  # the store unreachable a while: the next try
                renew(lease)

    renewer = threading.Thread(target=keep, name="lease-renewer", daemon=True)
    renewer.start()
    try:
        yield lease
    finally:
        lease._stop.set()
        renewer.join()
        if not lease.lost:
            release(lease)


_PROBED: set[str] = set()


def probe(root: str) -> None:
    """UnsafeStore unless the store at `root` refuses a second create-only PUT of a key
    (checked once per bucket and process; ALEXNET_UNSAFE_STORE=1 skips it)."""
    fs, bucket, key = _split(storage.join(storage.check_url(root), LEASE))
    if bucket in _PROBED or os.environ.get("ALEXNET_UNSAFE_STORE") == "1":
        return
    test = f"{key.rsplit('/', 1)[0]}/.lease-probe-{uuid.uuid4().hex}"
    try:
        fs.call_s3("put_object", Bucket=bucket, Key=test, Body=b"1", IfNoneMatch="*")
        try:
            fs.call_s3("put_object", Bucket=bucket, Key=test, Body=b"2", IfNoneMatch="*")
        except OSError as err:
            if storage.refused(err):
                _PROBED.add(bucket)
                return
            raise
        raise UnsafeStore(
            f"{root}: the store accepted a second create-only write of one key (it ignores "
            "If-None-Match), so a lease there cannot keep two writers apart. Use a store that "
            "honours conditional writes, or set ALEXNET_UNSAFE_STORE=1 if you make sure "
            "yourself that one writer at a time writes this data root"
        )
    finally:
        with contextlib.suppress(OSError):
            fs.call_s3("delete_object", Bucket=bucket, Key=test)
