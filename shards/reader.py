"""Reading a data root's shards back: their paths, and their samples, checked."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from shards.atomic import read_json
from shards.bucket import materialize
from shards.format import IMAGE_EXTS, MANIFEST, record_path, sample_checksum, shard_dir
from shards.manifest import Manifest, ShardEntry, read_manifest


@dataclass(frozen=True)
class Sample:
    key: str
    image: bytes  # encoded 256x256 image (JPEG or PNG)
    ext: str  # "jpg" or "png"
    cls: int
    meta: dict  # source path, wnid, original width/height/format/mode


def shard_paths(out: str | os.PathLike, split: str, manifest: Manifest | None = None) -> list[Path]:
    """The shards of `split` that the manifest lists, in order."""
    manifest = manifest or read_manifest(out)
    if split not in manifest.splits:
        raise ValueError(f"{out}: the manifest has no {split!r} split")
    return [shard_dir(out, split) / s.shard for s in manifest.shards(split)]


def split_member(name: str) -> tuple[str, str]:
    """`dir/key.ext` -> (`dir/key`, `ext`), splitting at the first dot of the base name.

    The same rule as webdataset's, so both read the same samples from a shard.
    """
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext


_BLOCK = 512
_ZEROS = bytes(_BLOCK)
_FILE_TYPES = (b"0", b"\0", b"7")  # regular (and "contiguous", which readers treat as regular)


def _octal(field: bytes) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256, for sizes of 8 GiB and more
        return int.from_bytes(field[1:], "big")
    digits = field.split(b"\0", 1)[0].strip()
    return int(digits, 8) if digits else 0


def _checksum_ok(block: bytes) -> bool:
    stored = _octal(block[148:156])
    unsigned = sum(block) - sum(block[148:156]) + 8 * 32  # the field counts as spaces
    if stored == unsigned:
        return True
    signed = unsigned - 256 * sum(b >= 128 for b in block[:148] + block[156:])
    return stored == signed


def _pax(data: bytes) -> dict[str, str]:
    """A PAX extended header's 'length key=value' records."""
    records, i = {}, 0
    while i < len(data) and data[i : i + 1] != b"\0":
        length = int(data[i : data.index(b" ", i)])
        key, _, value = data[data.index(b" ", i) + 1 : i + length - 1].partition(b"=")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        i += length
    return records


def iter_members(path: str | os.PathLike) -> Iterator[tuple[str, bytes]]:
    """(name, data) of every regular file in the tar at `path`, in order.

    Parses the 512-byte headers itself: ustar (with its name prefix), PAX
    extended headers (path, size) and GNU long names; directories, links and
    global headers are skipped. About 10x cheaper per member than `tarfile`,
    which cost this project's readers 0.3 ms an image. A bad checksum or a
    short read is a ValueError naming the file and the byte offset.
    """
    with open(materialize(path), "rb", buffering=1 << 20) as f:  # a view's: fetched first
        offset, extra = 0, {}
        while True:
            block = f.read(_BLOCK)
            if not block or block == _ZEROS:
                return  # the end-of-archive blocks (or a tar that omits them)
            if len(block) < _BLOCK or not _checksum_ok(block):
                problem = "truncated header" if len(block) < _BLOCK else "bad header checksum"
                raise ValueError(f"{path}: {problem} at byte {offset}: not a valid tar")
            size = int(extra["size"]) if "size" in extra else _octal(block[124:136])
            data = f.read(size)
            pad = -size % _BLOCK
            if len(data) < size or len(f.read(pad)) < pad:
                raise ValueError(f"{path}: truncated member data after byte {offset}")
            offset += _BLOCK + size + pad
            kind = block[156:157]
            if kind in _FILE_TYPES:
                name = extra.get("path")
                if name is None:
                    name = block[:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                    prefix = block[345:500].split(b"\0", 1)[0]
                    if prefix and block[257:262] == b"ustar":
                        name = prefix.decode("utf-8", "surrogateescape") + "/" + name
                extra = {}
                yield name, data
            elif kind == b"x":  # PAX: applies to the next member
                extra = _pax(data)
            elif kind == b"L":  # GNU long name of the next member
                extra = {"path": data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")}
            else:  # directories, links, devices, global PAX headers ("g")
                extra = {}


class DamagedShard(ValueError):
    """A shard that is not what was written; the message names the shard and the sample."""


@dataclass(frozen=True)
class _Expected:
    count: int
    checksums: list[int] | None  # None in records written before checksums were
    size: int | None = None  # the tar's size, as the data root's manifest lists it


_UNLISTED = ShardEntry("", -1, -1, "")
_LISTINGS: dict[Path, tuple[tuple[int, int], dict[tuple[str, str], ShardEntry]]] = {}


def _listed(path: Path) -> ShardEntry | None:
    """The manifest's entry for the shard at `path` (OUT/shards/SPLIT/NAME.tar), from OUT's
    manifest; `_UNLISTED` when the manifest does not list it; None when the shard is not in
    a data root with a manifest (a bare tar). Each manifest is parsed once while it is
    unchanged (its size and mtime): a loader worker opens many shards."""
    if path.parent.parent.name != "shards":
        return None
    manifest = path.parent.parent.parent / MANIFEST
    try:
        st = os.stat(manifest)
    except OSError:
        return None
    stamp = (st.st_mtime_ns, st.st_size)
    cached = _LISTINGS.get(manifest)
    if cached is None or cached[0] != stamp:
        try:
            parsed = Manifest.parse(read_json(manifest))
        except ValueError:  # not a manifest (yet): the shard is read as a bare tar
            return None
        index = {(split, s.shard): s for split, e in parsed.splits.items() for s in e.shards}
        cached = _LISTINGS[manifest] = (stamp, index)
    return cached[1].get((path.parent.name, path.name), _UNLISTED)


def _expected(path: Path | str) -> _Expected:
    """What the shard's record says it holds (the record is written after the shard),
    once the shard and its record are those the data root's manifest lists: the same
    size, count and sha256 (a string comparison; no byte is hashed here). A shard and
    record copied in from another data root are valid, but not this root's."""
    path = Path(path)
    record = record_path(path)
    try:
        data = json.loads(record.read_text())
        expected = _Expected(int(data["count"]), data.get("checksums"))
    except FileNotFoundError:
        raise DamagedShard(
            f"{path}: no record ({record.name}): the shard was never completed; {_REDO}"
        ) from None
    except (ValueError, KeyError, TypeError) as err:
        raise DamagedShard(f"{record}: unreadable record ({err!r}); {_REDO}") from None
    listed = _listed(path)
    if listed is _UNLISTED:
        raise DamagedShard(f"{path}: the data root's manifest does not list this shard; {_REDO}")
    if listed is not None:
        if expected.count != listed.count or data.get("sha256") != listed.sha256:
            raise DamagedShard(
                f"{record}: this record is not the one of the shard the manifest lists (count "
                f"or sha256 differ: a shard from another data root?); {_REDO}"
            )
        expected = _Expected(expected.count, expected.checksums, listed.bytes)
    return expected


def _check_size(path: Path | str, expected: _Expected) -> None:
    """After a whole read: the tar is the size the manifest lists. (Checked last, so that a
    short shard is reported by its sample count, which says more.)"""
    size = os.stat(path).st_size
    if expected.size is not None and size != expected.size:
        raise DamagedShard(
            f"{path}: {size} bytes, the manifest lists {expected.size}: not the shard the "
            f"manifest describes (one from another data root?); {_REDO}"
        )


_REDO = "re-run `alexnet preprocess` to rewrite it"


def iter_grouped(
    paths: list[Path] | list[str], check: bool = True
) -> Iterator[tuple[str, dict[str, bytes], str]]:
    """(key, {ext: data}, shard) for each sample: consecutive members sharing a key.

    With `check` (the default), each shard is held to its record, written when
    the shard was: the number of samples, and each sample's checksum
    (`shards.format.sample_checksum`, where the record has them). A sample that
    differs is not yielded; it, a short shard and a tar that does not parse are
    a `DamagedShard` naming the shard and the sample. `check=False` reads a
    bare tar (one without a record).
    """
    for path in paths:
        expected = _expected(path) if check else None
        n = 0
        try:
            for key, fields in _grouped(path):
                if expected is not None:
                    sums = expected.checksums
                    if n >= expected.count or (
                        sums is not None and sample_checksum(fields.values()) != sums[n]
                    ):
                        raise DamagedShard(
                            f"{path}: sample {n + 1} of {expected.count} ({key!r}) is damaged: "
                            f"its bytes are not those written (checksum); {_REDO}"
                        )
                n += 1
                yield key, fields, str(path)
        except DamagedShard:
            raise
        except ValueError as err:  # the tar itself: a bad header, a truncated member
            raise DamagedShard(f"{err}; {_REDO}") from None
        if expected is not None and n != expected.count:
            raise DamagedShard(
                f"{path}: {n} samples, its record lists {expected.count}: the shard is "
                f"truncated; {_REDO}"
            )
        if expected is not None:
            _check_size(path, expected)


def _grouped(path: Path | str) -> Iterator[tuple[str, dict[str, bytes]]]:
    key, fields = None, {}
    for name, data in iter_members(path):
        k, ext = split_member(name)
        if k != key and fields:
            yield key, fields
            fields = {}
        key = k
        fields[ext] = data
    if fields:
        yield key, fields


def iter_samples(paths: list[Path] | list[str], check: bool = True) -> Iterator[Sample]:
    """Every sample of the given shards, in order (checked as `iter_grouped` says).

    Read with `iter_members`, not `webdataset`: importing webdataset imports
    torch (3 s and 300 MB per process), which the data stages must not pay;
    the tests read the same shards with `webdataset` and compare.
    """
    for key, fields, path in iter_grouped(paths, check):
        yield _sample(key, fields, path)


def _sample(key: str, fields: dict[str, bytes], path: Path | str) -> Sample:
    try:
        ext = next(e for e in IMAGE_EXTS if e in fields)
        return Sample(key, fields[ext], ext, int(fields["cls"]), json.loads(fields["json"]))
    except (StopIteration, KeyError, ValueError) as err:
        raise ValueError(f"{path}: sample {key!r} is incomplete or malformed ({err!r})") from None
