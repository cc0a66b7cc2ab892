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

TRAIN_TAR = "ILSVRC2012_img_train.tar"
VAL_TAR = "ILSVRC2012_img_val.tar"


class DamagedArchive(ValueError):
    """An archive that cannot be listed to its end (truncated or corrupt)."""


@dataclass(frozen=True, slots=True)
class Member:
    folder: str  # the class tar's stem (a wnid) in the train tar; "" in the val tar
    name: str  # the image's file name
    offset: int  # of its bytes, from the start of the archive
    size: int
    mtime: int  # seconds, from its tar header


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


def list_train(path: str | os.PathLike) -> tuple[list[Member], list[dict]]:
    """Every image in the train tar, and the class tars that could not be listed (as
    rejects: `path`, `reason`)."""
    path = Path(path)
    members, rejects = [], []
    try:
        with open(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r:") as outer:
            for m in outer:
                if not m.isfile():
                    continue
                folder = Path(m.name).name.removesuffix(".tar")
                if not m.name.endswith(".tar"):
                    rejects.append({"path": f"train/{m.name}", "reason": "not a class tar"})
                    continue
                try:
                    stream = outer.extractfile(m)
                    assert stream is not None
                    with tarfile.open(fileobj=stream, mode="r:") as inner:
                        members += [
                            Member(
                                folder,
                                Path(i.name).name,
                                m.offset_data + i.offset_data,
                                i.size,
                                int(i.mtime),
                            )
                            for i in inner
                            if i.isfile()
                        ]
                        _listed_to_the_end(inner, stream)
                except (tarfile.TarError, EOFError) as err:
                    reason = f"the class tar {m.name} cannot be read ({err})"
                    rejects.append({"path": f"train/{folder}/", "reason": reason})
            _listed_to_the_end(outer, raw)
    except (tarfile.TarError, EOFError, OSError) as err:
        raise _damaged(path, err) from None
    _check_extent(path, members)
    return members, rejects


def list_val(path: str | os.PathLike) -> list[Member]:
    """Every image in the val tar."""
    path = Path(path)
    try:
        with open(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r:") as tar:
            members = [
                Member("", Path(m.name).name, m.offset_data, m.size, int(m.mtime))
                for m in tar
                if m.isfile()
            ]
            _listed_to_the_end(tar, raw)
    except (tarfile.TarError, EOFError, OSError) as err:
        raise _damaged(path, err) from None
    _check_extent(path, members)
    return members


def _check_extent(path: Path, members: list[Member]) -> None:
    """Every member's bytes inside the archive (a tar cut inside its last image lists it)."""
    end = os.stat(path).st_size
    beyond = [m for m in members if m.offset + m.size > end]
    if beyond:
        raise _damaged(path, EOFError(f"{beyond[0].name} runs past the end of the file"))


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


def read_member(path: str | os.PathLike, offset: int, size: int, limit: int) -> bytes:
    """The `size` bytes at `offset` of the archive at `path` (OSError if there are fewer,
    or more than `limit`)."""
    if size > limit:
        raise OSError(errno.EFBIG, f"larger than {limit >> 20} MiB: not read", str(path))
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(size)
    if len(data) != size:
        raise OSError(errno.EIO, "the archive ends inside this image (truncated?)", str(path))
    return data
