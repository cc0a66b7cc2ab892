"""Reading a data root back: the manifest, and samples through `webdataset`."""

from __future__ import annotations

import json
import os
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


def _open_each(paths: list[Path] | list[str]) -> Iterator[dict]:
    # webdataset 1.0's own opener never closes its files; this one closes each
    # shard as soon as the tar expander asks for the next.
    for path in paths:
        with open(path, "rb") as stream:
            yield {"url": str(path), "stream": stream}


def iter_samples(paths: list[Path] | list[str]) -> Iterator[Sample]:
    """Every sample of the given shards, in order, parsed and grouped by `webdataset`."""
    from webdataset.tariterators import group_by_keys, tar_file_expander

    for s in group_by_keys(tar_file_expander(_open_each(paths))):
        ext = next(e for e in IMAGE_EXTS if e in s)
        yield Sample(s["__key__"], s[ext], ext, int(s["cls"]), json.loads(s["json"]))
