"""The stats stage: the mean training image and the RGB PCA, with Dask.

    per train shard (a Dask task per 8):    its partial sums, from
        the preprocess stage's .stats.npz   (normally: no pixels touched), or
        a cache of earlier runs             OUT/stats/cache/<shard sha256>.npz, or
        the shard's decoded pixels          (shards from elsewhere, or --from-pixels)
    summed in the driver as groups finish   exact integer sums, a bounded
                                            number of groups in flight
    on the driver                           mean image, covariance, eigenpairs

Exactness: every sum is an integer (uint64 or Python int), so the result does
not depend on the number of shards, workers or the order of the reduction.
The covariance is `(n Q - S Sᵀ) / n²` with Q = Σ x xᵀ, S = Σ x and n pixels,
where the numerator is computed in arbitrary-precision integers: no
cancellation, even at 10^11 pixels; the only rounding is the final division.

Incremental: a shard's partials are keyed by its sha256, so after a
re-processing run only changed shards are read again; unchanged shards'
partials come from their files or the cache, and the sums are the same as
from scratch, exactly.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shards import storage
from shards.bucket import cached, open_root
from shards.dataroot import locked
from shards.format import partials_path, sha256_file, shard_dir
from shards.lease import leased
from shards.manifest import ShardEntry, read_manifest
from shards.partials import Partials
from shards.pixels import decode_rgb
from shards.progress import Progress
from shards.reader import iter_samples
from shards.remote import upload_stats
from shards.stats import MEAN, PCA, SCALES, Stats, fix_signs, stats_dir, write_stats

CACHE = "cache"
FAN_IN = 8


def _cache_path(out: str | os.PathLike, sha256: str) -> Path:
    return stats_dir(out) / CACHE / f"{sha256}.npz"


def pixels_partials(tar: Path, size: int) -> Partials:
    """Partial sums of a shard computed from its decoded images."""
    partials = Partials.zeros(size)
    for sample in iter_samples([tar]):
        partials.add(decode_rgb(sample.image))
    return partials


def shard_partials(
    out: str, entry: ShardEntry, size: int, from_pixels: bool
) -> tuple[Counter, Partials]:
    """One train shard's partial sums, and where they came from. (A Dask task.)"""
    if storage.is_url(out):
        return _bucket_partials(out, entry, size, from_pixels)
    tar = shard_dir(out, "train") / entry.shard
    if not from_pixels:
        own = partials_path(tar)
        if entry.partials_sha256 and own.is_file() and sha256_file(own) == entry.partials_sha256:
            return Counter(partials=1), Partials.load(own)
        cached = _cache_path(out, entry.sha256)
        if cached.is_file():
            return Counter(cache=1), Partials.load(cached)
    partials = pixels_partials(tar, size)
    partials.save(_cache_path(out, entry.sha256))
    return Counter(pixels=1), partials


def _bucket_partials(
    url: str, entry: ShardEntry, size: int, from_pixels: bool
) -> tuple[Counter, Partials]:
    """A train shard's partial sums read by this worker from the bucket at `url`, through
    its machine's cache (bucket.cached: each object checked against its sha256): the
    preprocess stage's .stats.npz, else the shard's decoded pixels."""
    tar_url = storage.join(url, "shards", "train", entry.shard)
    if not from_pixels and entry.partials and entry.partials_sha256:
        sums = storage.join(url, "shards", "train", entry.partials)
        return Counter(partials=1), Partials.load(cached(sums, entry.partials_sha256, ".npz"))
    return Counter(pixels=1), pixels_partials(cached(tar_url, entry.sha256, ".tar"), size)


def merge(*parts: tuple[Counter, Partials]) -> tuple[Counter, Partials]:
    """Sum partials (and their provenance counts). (A Dask task of the tree reduction.)"""
    how, total = Counter(), None
    for h, p in parts:
        how += h
        if total is None:
            total = p.copy()
        else:
            total.merge(p)
    return how, total


def finish(total: Partials, scale: str, shards: list[dict]) -> Stats:
    """The mean image and the PCA from exact sums."""
    if total.n_images == 0:
        raise ValueError("no training images: the train shards are empty")
    n = total.n_pixels
    s = [int(v) for v in total.rgb_sum]
    q = [[int(v) for v in row] for row in total.rgb_outer]
    numerator = np.array(
        [[n * q[i][j] - s[i] * s[j] for j in range(3)] for i in range(3)], dtype=object
    )
    divisor = SCALES[scale]
    covariance = np.array(numerator / (n * n), dtype=np.float64) / divisor**2
    values, vectors = np.linalg.eigh(covariance)  # ascending, vectors in columns
    order = np.argsort(values)[::-1]
    return Stats(
        mean=(total.pixel_sum / total.n_images).astype(np.float32),
        eigenvalues=values[order],
        eigenvectors=fix_signs(vectors[:, order].T),
        covariance=covariance,
        scale=scale,
        mean_rgb=np.array([v / n for v in s], dtype=np.float64),
        n_images=total.n_images,
        n_pixels=n,
        shards=shards,
    )


@dataclass
class StatsReport:
    stats: Stats
    sources: dict = field(default_factory=dict)  # how many shards came from partials/cache/pixels


def compute_stats(
    out: str | os.PathLike,
    scale: str = "pixel/255",
    from_pixels: bool = False,
    workers: int | None = None,
    dask_address: str | None = None,
) -> StatsReport:
    """Run the stats stage over OUT's train shards and write OUT/stats/ (holding OUT/.lock)."""
    if scale not in SCALES:
        raise ValueError(f"--scale must be one of {', '.join(SCALES)}, got {scale!r}")
    path = storage.local(out)
    if path is None:  # a bucket: its manifest read through the view, written under its lease
        url = storage.check_url(str(out))
        view = open_root(url)  # a clear error first if it is not a data root
        with leased(url, "stats") as lease:
            report = _compute_stats(open_root(url), scale, from_pixels, workers, dask_address, url)
            lease.check()
            upload_stats(url, stats_dir(view), [MEAN, PCA])  # pca.json last: it names mean.npy
        return report
    read_manifest(path)  # a clear error first if OUT is not a data root
    with locked(path):  # no preprocess may rewrite the shards while their sums are taken
        return _compute_stats(path, scale, from_pixels, workers, dask_address)


def _compute_stats(
    out: Path,
    scale: str,
    from_pixels: bool,
    workers: int | None,
    dask_address: str | None,
    location: str | None = None,
) -> StatsReport:
    """The statistics of OUT's train shards, written to OUT/stats/; the workers read the
    shards at `location` (a bucket's URL), else in OUT."""
    from preprocessing.cluster import dask_client

    manifest = read_manifest(out)
    if "train" not in manifest.splits:
        raise ValueError(f"{out}: the manifest has no train split; preprocess it first")
    entries = list(manifest.shards("train"))
    if not entries:
        raise ValueError(f"{out}: the train split has no shards")
    size = int(manifest.settings["size"])
    root = location or str(out.resolve())
    groups = [entries[i : i + FAN_IN] for i in range(0, len(entries), FAN_IN)]
    with dask_client(workers, dask_address, tasks=len(groups)) as client:
        how, total = _reduce(client, root, groups, size, from_pixels)
    covered = [{"shard": e.shard, "sha256": e.sha256} for e in entries]
    stats = finish(total, scale, covered)
    write_stats(out, stats)
    _drop_stale_cache(out, {e.sha256 for e in entries})
    return StatsReport(stats, dict(how))


def group_partials(
    out: str, entries: list[ShardEntry], size: int, from_pixels: bool
) -> tuple[Counter, Partials]:
    """The summed partials of up to FAN_IN train shards. (A Dask task.)"""
    return merge(*(shard_partials(out, e, size, from_pixels) for e in entries))


def _reduce(
    client: Any, root: str, groups: list[list[ShardEntry]], size: int, from_pixels: bool
) -> tuple[Counter, Partials]:
    """Sum every group's partials into one, in the driver, with at most two groups per
    worker thread in flight: memory stays the same whatever the number of shards
    (submitting every shard at once let finished partials pile up in the workers:
    356 MiB a worker at ImageNet's 1,282 shards, 81 MiB at 6). Integer sums: the
    order in which groups finish changes nothing."""
    from distributed import as_completed

    def submit(group: list[ShardEntry]) -> Any:
        key = "partials-" + hashlib.sha256("".join(e.sha256 for e in group).encode()).hexdigest()
        return client.submit(
            group_partials, root, group, size, from_pixels, key=key, pure=not from_pixels
        )

    window = max(2, 2 * sum(client.nthreads().values()))
    todo = iter(groups)
    running = as_completed([submit(g) for g in itertools.islice(todo, window)])
    how, total = Counter(), None
    show = Progress("stats", sum(map(len, groups)), unit="shards", every_s=30.0)
    for future in running:
        h, partials = future.result()
        future.release()
        show.update(sum(h.values()))
        how += h
        if total is None:
            total = partials
        else:
            total.merge(partials)
        following = next(todo, None)
        if following is not None:
            running.add(submit(following))
    show.close()
    return how, total


def _drop_stale_cache(out: Path, current: set[str]) -> None:
    folder = stats_dir(out) / CACHE
    if folder.is_dir():
        for p in folder.iterdir():
            if p.name.endswith(".npz") and p.name[: -len(".npz")] not in current:
                p.unlink()
