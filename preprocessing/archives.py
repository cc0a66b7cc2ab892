"""ILSVRC-2012's image archives read in place: where each image is, nothing extracted.

    ILSVRC2012_img_train.tar   a tar of 1,000 tars `<wnid>.tar`, each a flat tar of
                               `<wnid>_<n>.JPEG`
    ILSVRC2012_img_val.tar     a flat tar of `ILSVRC2012_val_<8 digits>.JPEG`

A `Member` says where an image's bytes are: its absolute offset in the archive
(for the train tar, the class tar's data offset plus the image's within it),
its size, and its header's mtime, which a re-downloaded identical archive
keeps (the archive's own mtime is never used). `read_member` reads one back
with a seek and a read. Listing reads only the tar headers, seeking over the
images.
"""

from __future__ import annotations

import errno
import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from shards.format import crc32

TRAIN_TAR = "ILSVRC2012_img_train.tar"
VAL_TAR = "ILSVRC2012_img_val.tar"
READ_CHUNK = 1 << 20


class DamagedArchive(ValueError):
    """An archive that cannot be listed to its end (truncated or corrupt)."""


@dataclass(frozen=True, slots=True)
class Member:
    folder: str  # the class tar's stem (a wnid) in the train tar; "" in the val tar
    name: str  # the image's file name
    offset: int  # of its bytes, from the start of the archive
    size: int
    mtime: int  # seconds, from its tar header
    crc: int  # CRC-32 of its bytes, checked again when they are read for the shards


def _damaged(path: Path, err: Exception) -> DamagedArchive:
    return DamagedArchive(
        f"{path} cannot be read to its end ({type(err).__name__}: {err}): truncated or "
        "damaged; download it again (its sha256 is on image-net.org)"
    )


def _listed_to_the_end(tar: tarfile.TarFile, stream: BinaryIO) -> None:
    """Raise tarfile.ReadError unless `tar`'s iteration stopped at its end-of-archive
    marker. (tarfile ends an iteration silently at a damaged header past the first one:
    every member after it would be missing, with no error.)"""
    assert tar.offset is not None
    stream.seek(tar.offset)
    marker = stream.read(1024)
    if marker.strip(b"\0"):
        raise tarfile.ReadError(f"a damaged tar header at byte {tar.offset}")


@dataclass(frozen=True, slots=True)
class ClassTar:
    """One class tar inside the train tar, from its header (read without its bytes)."""

    name: str  # as stored: "n01440764.tar"
    offset: int  # of its bytes, from the start of the train tar
    size: int
    mtime: int

    @property
    def folder(self) -> str:
        return Path(self.name).name.removesuffix(".tar")


def list_class_tars(path: str | os.PathLike) -> tuple[list[ClassTar], list[dict]]:
    """The class tars in the train tar (headers only, seeking over their bytes), and its
    members that are not class tars (as rejects: `path`, `reason`). DamagedArchive if the
    train tar cannot be listed to its end."""
    path = Path(path)
    found, rejects = [], []
    try:
        with open(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r:") as outer:
            for m in outer:
                if not m.isfile():
                    continue
                if not m.name.endswith(".tar"):
                    rejects.append({"path": f"train/{m.name}", "reason": "not a class tar"})
                    continue
                found.append(ClassTar(m.name, m.offset_data, m.size, int(m.mtime)))
            _listed_to_the_end(outer, raw)
        _check_extent(path, [(c.name, c.offset + c.size) for c in found])
    except (tarfile.TarError, EOFError, OSError) as err:
        raise _damaged(path, err) from None
    return found, rejects


def list_class_tar(path: str | os.PathLike, tar: ClassTar) -> list[Member]:
    """Every image of one class tar of the train tar, read through once (its bytes only)
    for their CRC-32s; tarfile.TarError if it cannot be listed to its end."""
    return _read_through(Path(path), tar.offset, tar.size, tar.folder)


def list_val(path: str | os.PathLike) -> list[Member]:
    """Every image in the val tar, read through once for their CRC-32s; DamagedArchive if
    it cannot be read to its end."""
    path = Path(path)
    try:
        return _read_through(path, 0, os.stat(path).st_size, "")
    except (tarfile.TarError, EOFError, OSError) as err:
        raise _damaged(path, err) from None


def _read_through(path: Path, start: int, size: int, folder: str) -> list[Member]:
    """The regular files of the tar in bytes [start, start + size) of `path`, read in
    order (one pass, sequential), each with its CRC-32."""
    members = []
    with open(path, "rb") as raw:
        window = io.BufferedReader(_Window(raw, start, size), READ_CHUNK)
        with tarfile.open(fileobj=window, mode="r:") as tar:
            for m in tar:
                if not m.isfile():
                    continue
                stream = tar.extractfile(m)
                assert stream is not None
                crc, left = 0, m.size
                while left:
                    chunk = stream.read(min(left, READ_CHUNK))
                    if not chunk:
                        raise tarfile.ReadError(f"{m.name} is cut short: truncated")
                    crc, left = crc32(chunk, crc), left - len(chunk)
                name = Path(m.name).name
                members.append(
                    Member(folder, name, start + m.offset_data, m.size, int(m.mtime), crc)
                )
            _listed_to_the_end(tar, window)
    return members


class _Window(io.RawIOBase):
    """Bytes [start, start + size) of an open file, as a seekable file of their own (a
    class tar inside the train tar: reading can never run into the next one)."""

    def __init__(self, raw: BinaryIO, start: int, size: int) -> None:
        self.raw, self.start, self.size, self.pos = raw, start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        n = max(0, min(len(buffer), self.size - self.pos))
        self.raw.seek(self.start + self.pos)
        got = self.raw.readinto(memoryview(buffer)[:n])
        self.pos += got
        return got


def _check_extent(path: Path, ends: list[tuple[str, int]]) -> None:
    """Every member's bytes inside the archive (a tar cut inside its last member lists it)."""
    size = os.stat(path).st_size
    beyond = [name for name, end in ends if end > size]
    if beyond:
        raise EOFError(f"{beyond[0]} runs past the end of the file")


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), 1_300_000_000  # fixed: the same bytes each time
    tar.addfile(info, io.BytesIO(data))


def write_archives(tree: Path, out: Path) -> None:
    """The train/ and val/ of an extracted tree (a flat val/) as ILSVRC-2012's downloads in
    `out`: a train tar of one tar per class folder, and a flat val tar (for the sample data
    and the benchmarks; either is skipped where the tree lacks its folder)."""
    ustar = tarfile.USTAR_FORMAT
    if (tree / "train").is_dir():
        with tarfile.open(out / TRAIN_TAR, "w", format=ustar) as outer:
            for folder in sorted((tree / "train").iterdir()):
                inner = io.BytesIO()
                with tarfile.open(fileobj=inner, mode="w", format=ustar) as tar:
                    for f in sorted(folder.iterdir()):
                        _add(tar, f.name, f.read_bytes())
                _add(outer, f"{folder.name}.tar", inner.getvalue())
    if (tree / "val").is_dir():
        with tarfile.open(out / VAL_TAR, "w", format=ustar) as tar:
            for f in sorted((tree / "val").iterdir()):
                _add(tar, f.name, f.read_bytes())


class ArchiveChanged(ValueError):
    """An image whose bytes are no longer those its archive's index recorded."""


def read_member(path: str | os.PathLike, offset: int, size: int, limit: int, crc: int) -> bytes:
    """The `size` bytes at `offset` of the archive at `path` (OSError if there are fewer,
    or more than `limit`; ArchiveChanged if their CRC-32 is not `crc`)."""
    if size > limit:
        raise OSError(errno.EFBIG, f"larger than {limit >> 20} MiB: not read", str(path))
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(size)
    if len(data) != size:
        raise OSError(errno.EIO, "the archive ends inside this image (truncated?)", str(path))
    if crc32(data) != crc:
        raise ArchiveChanged(
            f"{path} changed since it was indexed: the {size} bytes at {offset} are not those "
            "listed. Delete OUT/.index (the archives' index) and run again"
        )
    return data
