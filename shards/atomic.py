"""Atomic file writes (a temporary name in the same folder, fsync, rename), and one writer.

A reader (or a resumed run) sees either the old file or the complete new one,
never a half-written file under a final name. Temporary names start with the
final name and end in `.tmp-<pid>`, so `remove_stale_temporaries` can sweep up
after a killed writer.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import signal
import socket
import sys
import threading
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
        _fsync_dir(path.parent)  # the rename itself survives a power cut
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(err, OSError) and err.filename is None and err.errno:
            # a failed write() says nothing of the file: name it (same errno, same type)
            raise OSError(err.errno, err.strerror, str(path)) from None
        raise


def _fsync_dir(folder: Path) -> None:
    """fsync a folder, so that a rename in it is on disk (a no-op where folders cannot be
    opened, as on some network file systems)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
_NOTES = itertools.count()  # tells apart two shared holds of one process


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
            readers = _readers(lock)
            if readers:
                raise RuntimeError(
                    f"{what} is being read: {'; '.join(readers)} (shared, {lock}); wait for "
                    "it to finish, or stop it: rewriting under it would change its data"
                ) from None
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise RuntimeError(f"{what} is in use: {holder} holds {lock}") from None
        f.seek(0)
        f.truncate()
        f.write(_whoami())
        f.flush()
        _HELD.add(f.fileno())
        try:
            yield
        finally:
            _HELD.discard(f.fileno())


def _whoami() -> str:
    command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:200]
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    return f"pid {os.getpid()} on {socket.gethostname()} ({command}), since {started}\n"


def _readers_dir(lock: Path) -> Path:
    return lock.with_name(f"{lock.name}.readers")


def _readers(lock: Path) -> list[str]:
    """Who holds `lock` shared, from the notes the readers left (those of this host whose
    process is gone are skipped: a killed reader's note outlives it)."""
    found = []
    folder = _readers_dir(lock)
    for note in sorted(folder.glob("*")) if folder.is_dir() else []:
        pid, _, host = note.name.partition("@")
        pid = pid.split(".")[0]
        if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            found.append(note.read_text().strip())
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def shared_reader(lock: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold `lock` shared for the block (any number of readers at once), or fail at once
    while a writer (`one_writer`) holds it; a writer fails while any reader does, and
    names them. So training and evaluation never read shards that preprocess or stats are
    rewriting, nor have them rewritten under them. A data root that cannot be written to
    (read-only) is read without the lock: nothing can rewrite it either."""
    lock = Path(lock)
    try:
        f = open(lock, "a+")  # noqa: SIM115 (closed below, after the note is removed)
    except OSError:
        yield
        return
    note = _readers_dir(lock) / f"{os.getpid()}.{next(_NOTES)}@{socket.gethostname()}"
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise RuntimeError(
                f"{what} is being written: {holder} holds {lock}; wait for it to finish"
            ) from None
        _HELD.add(f.fileno())
        try:
            note.parent.mkdir(exist_ok=True)
            note.write_text(_whoami())
            yield
        finally:
            _HELD.discard(f.fileno())
            with contextlib.suppress(OSError):
                note.unlink()


_PRESSED: list[int] = []  # Ctrl-Cs that came while held


def _hold(signum: int, frame: object) -> None:
    _PRESSED.append(signum)


@contextlib.contextmanager
def ctrl_c_held() -> Iterator[None]:
    """A Ctrl-C held back until the block is over, then raised as KeyboardInterrupt.

    For work a KeyboardInterrupt must not land in: torch.save interrupted mid-file
    fails with its own RuntimeError ("enforce fail at inline_container.cc"), not
    KeyboardInterrupt; one landing in the at-fork hooks (logging's) that a fork runs is
    dropped by Python ("Exception ignored in: <function _releaseLock>"). Only in the main
    thread, where Ctrl-C is Python's own KeyboardInterrupt (not ignored, not handled).
    """
    default = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if not default or threading.current_thread() is not threading.main_thread():
        yield
        return
    _PRESSED.clear()
    signal.signal(signal.SIGINT, _hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if _PRESSED:
        raise KeyboardInterrupt


def ctrl_c_as_before() -> None:
    """In a process forked inside `ctrl_c_held`: Ctrl-C as it was before it was held."""
    if signal.getsignal(signal.SIGINT) is _hold:
        signal.signal(signal.SIGINT, signal.default_int_handler)
