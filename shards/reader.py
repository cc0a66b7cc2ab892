"""Reading a data root back: the manifest, and the samples of shards."""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from shards.format import IMAGE_EXTS, MANIFEST, shard_dir


@dataclass(frozen=True)
class Sample:
    key: str
    image: bytes  # encoded 256x256 image (JPEG or PNG)
    ext: str  # "jpg" or "png"
    cls: int
    meta: dict  # source path, wnid, original width/height/format/mode


def read_manifest(out: str | os.PathLike) -> dict:
    """OUT/manifest.json, or a clear error if the preprocess stage has not completed."""
    path = Path(out) / MANIFEST
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path} not found: run `alexnet preprocess SRC {out}` first"
        ) from None
    except ValueError as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from None


def shard_paths(out: str | os.PathLike, split: str, manifest: dict | None = None) -> list[Path]:
    """The shards of `split` that the manifest lists, in order."""
    manifest = manifest or read_manifest(out)
    entry = manifest["splits"].get(split)
    if entry is None:
        raise ValueError(f"{out}: the manifest has no {split!r} split")
    return [shard_dir(out, split) / s["shard"] for s in entry["shards"]]


def split_member(name: str) -> tuple[str, str]:
    """`dir/key.ext` -> (`dir/key`, `ext`), splitting at the first dot of the base name.

    The same rule as webdataset's, so both read the same samples from a shard.
    """
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext


def iter_samples(paths: list[Path] | list[str]) -> Iterator[Sample]:
    """Every sample of the given shards, in order.

    A sequential read with the standard library's `tarfile`: `webdataset` itself
    imports torch (3 s and 300 MB per process), which the data stages must not
    pay; the tests read the same shards with `webdataset` and compare.
    """
    for path in paths:
        with tarfile.open(path, mode="r|") as tar:
            key, fields = None, {}
            for member in tar:
                if not member.isfile():
                    continue
                k, ext = split_member(member.name)
                if k != key and fields:
                    yield _sample(key, fields, path)
                    fields = {}
                key = k
                fields[ext] = tar.extractfile(member).read()
            if fields:
                yield _sample(key, fields, path)


def _sample(key: str, fields: dict[str, bytes], path: Path | str) -> Sample:
    try:
        ext = next(e for e in IMAGE_EXTS if e in fields)
        return Sample(key, fields[ext], ext, int(fields["cls"]), json.loads(fields["json"]))
    except (StopIteration, KeyError, ValueError) as err:
        raise ValueError(f"{path}: sample {key!r} is incomplete or malformed ({err!r})") from None
