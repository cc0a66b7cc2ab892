"""Atomic file writes (a temporary name in the same folder, fsync, rename), and one writer.

A reader (or a resumed run) sees either the old file or the complete new one,
never a half-written file under a final name. Temporary names start with the
final name and end in `.tmp-<pid>`, so `remove_stale_temporaries` can sweep up
after a killed writer.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

TMP_MARK = ".tmp-"


def temporary_name(path: Path) -> Path:
    """The temporary sibling that `atomic_writer` writes `path` through."""
    return path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}")


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary sibling of `path` for writing; rename it over `path` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(err, OSError) and err.filename is None and err.errno:
            # a failed write() says nothing of the file: name it (same errno, same type)
            raise OSError(err.errno, err.strerror, str(path)) from None
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Atomically write `data` to `path`."""
    with atomic_writer(path, "wb") as f:
        f.write(data)


def json_bytes(obj: Any) -> bytes:
    """Stable, human-readable JSON (sorted keys, one space of indent, a final newline)."""
    return (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode()


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write `obj` as stable, human-readable JSON (sorted keys)."""
    write_bytes(path, json_bytes(obj))


def read_json(path: str | os.PathLike) -> Any | None:
    """The JSON value in `path`, or None when the file is missing or not JSON."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def write_if_changed(path: str | os.PathLike, data: bytes) -> bool:
    """`write_bytes` unless `path` already holds exactly `data` (then not a byte, nor its
    time, changes); returns whether it wrote."""
    with contextlib.suppress(OSError):
        if Path(path).read_bytes() == data:
            return False
    write_bytes(path, data)
    return True


def append_line(path: str | os.PathLike, obj: Any) -> None:
    """Append `obj` as one JSON line and fsync: an append-only log (a line cut by a crash
    is the last one, and readers skip it)."""
    with open(path, "a") as f:
        f.write(json.dumps(obj, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def remove_stale_temporaries(folder: str | os.PathLike) -> int:
    """Delete temporaries that killed writers left in `folder`; return how many."""
    removed = 0
    folder = Path(folder)
    if folder.is_dir():
        for p in folder.iterdir():
            if TMP_MARK in p.name and p.is_file():
                p.unlink()
                removed += 1
    return removed


_HELD: set[int] = set()  # descriptors of the locks this process holds


def _drop_held_locks_in_child() -> None:
    """A forked child (a loader worker) must not keep its parent's locks alive: a SIGKILL
    of the parent would otherwise leave the lock held until every child has gone. The
    descriptor is pointed at /dev/null, which drops the child's share of the lock."""
    if not _HELD:
        return
    null = os.open(os.devnull, os.O_RDONLY)
    for fd in _HELD:
        with contextlib.suppress(OSError):
            os.dup2(null, fd)
    os.close(null)
    _HELD.clear()


os.register_at_fork(after_in_child=_drop_held_locks_in_child)


@contextlib.contextmanager
def one_writer(lock: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold an exclusive lock on the file `lock` for the block, or fail at once.

    The holder writes who it is into the file, so that a second process gets a
    clear error naming it: `RuntimeError("<what> is in use: pid 123 on host
    (alexnet train ...) holds <lock>")`. The lock goes with the process: a
    killed holder frees it at once (forked children do not inherit it).
    """
    lock = Path(lock)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise RuntimeError(f"{what} is in use: {holder} holds {lock}") from None
        f.seek(0)
        f.truncate()
        command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:200]
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        f.write(f"pid {os.getpid()} on {socket.gethostname()} ({command}), since {started}\n")
        f.flush()
        _HELD.add(f.fileno())
        try:
            yield
        finally:
            _HELD.discard(f.fileno())
