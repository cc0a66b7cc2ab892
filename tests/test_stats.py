"""The stats stage: exact against a NumPy reference, the same on any cluster, incremental."""

from __future__ import annotations

import copy
import io
import shutil

import numpy as np
import pytest
from PIL import Image

from preprocessing.prepare import PrepareSettings, preprocess
from preprocessing.sample_data import SampleSpec, generate
from preprocessing.stats import compute_stats
from shards.manifest import Manifest, read_manifest
from shards.reader import iter_samples, shard_paths
from shards.stats import fix_signs, read_stats

SPEC = SampleSpec(classes=3, train_per_class=10, val_per_class=1, quirks=0, seed=11, max_side=360)
SETTINGS = PrepareSettings(shard_size=8)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("stats")
    generate(root / "src", SPEC)
    preprocess(root / "src", root / "out", SETTINGS, workers=2, progress=False)
    report = compute_stats(root / "out", workers=2)
    return root, report


def files(out):
    return (out / "stats/pca.json").read_bytes(), (out / "stats/mean.npy").read_bytes()


def test_matches_a_float64_numpy_reference(data):
    root, report = data
    out = root / "out"
    images = [
        np.asarray(Image.open(io.BytesIO(s.image)).convert("RGB"), dtype=np.float64)
        for s in iter_samples(shard_paths(out, "train"))
    ]
    stack = np.stack(images)
    pixels = stack.reshape(-1, 3) / 255.0
    cov = np.cov(pixels.T, bias=True)
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1]

    stats = read_stats(out, read_manifest(out))
    assert stats.mean.dtype == np.float32 and stats.mean.shape == (256, 256, 3)
    assert np.abs(stats.mean - stack.mean(0)).max() < 1e-3
    np.testing.assert_allclose(stats.eigenvalues, values[order], rtol=1e-6)
    np.testing.assert_allclose(stats.eigenvectors, fix_signs(vectors[:, order].T), atol=1e-6)
    for v in stats.eigenvectors:
        assert abs(np.linalg.norm(v) - 1) < 1e-12 and v[np.argmax(np.abs(v))] > 0
    assert list(stats.eigenvalues) == sorted(stats.eigenvalues, reverse=True)
    np.testing.assert_allclose(stats.covariance, cov, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(stats.mean_rgb, stack.reshape(-1, 3).mean(0), rtol=1e-12)
    assert (stats.n_images, stats.n_pixels) == (len(images), len(images) * 256 * 256)
    assert stats.scale == "pixel/255"
    assert report.sources == {"partials": len(shard_paths(out, "train"))}


def test_same_result_on_one_or_two_workers_and_an_external_cluster(data, dask_address):
    root, _ = data
    out = root / "out"
    reference = files(out)
    compute_stats(out, workers=1)
    assert files(out) == reference
    compute_stats(out, dask_address=dask_address)
    assert files(out) == reference


def test_from_pixels_equals_from_partials(data):
    root, _ = data
    out = root / "out"
    reference = files(out)
    report = compute_stats(out, from_pixels=True, workers=2)
    assert report.sources == {"pixels": len(shard_paths(out, "train"))}
    assert files(out) == reference


def test_pixel_scale_setting(data, tmp_path):
    root, _ = data
    work = tmp_path / "out"
    shutil.copytree(root / "out", work)
    unit = compute_stats(work, workers=1).stats
    raw = compute_stats(work, scale="pixel", workers=1).stats
    np.testing.assert_allclose(raw.eigenvalues, unit.eigenvalues * 255**2, rtol=1e-12)
    np.testing.assert_allclose(raw.eigenvectors, unit.eigenvectors, atol=1e-12)
    assert read_stats(work).scale == "pixel"


def test_incremental_after_reprocessing_equals_from_scratch(data, tmp_path):
    root, _ = data
    src, out = tmp_path / "src", tmp_path / "out"
    shutil.copytree(root / "src", src)
    shutil.copytree(root / "out", out)
    shutil.rmtree(out / "stats", ignore_errors=True)
    for p in out.glob("shards/train/*.stats.npz"):  # shards from elsewhere: no partials
        p.unlink()
    first = compute_stats(out, workers=2)
    n_shards = len(shard_paths(out, "train"))
    assert first.sources == {"pixels": n_shards}
    assert compute_stats(out, workers=2).sources == {"cache": n_shards}

    before = {s["sha256"] for s in read_manifest(out).data["splits"]["train"]["shards"]}
    wnid = sorted(p.name for p in (src / "train").iterdir())[0]
    extra = next((src / "train" / wnid).iterdir())
    shutil.copy(extra, src / "train" / wnid / f"{wnid}_999.JPEG")  # a new image
    preprocess(src, out, SETTINGS, workers=2, progress=False)
    with pytest.raises(ValueError, match="run `alexnet stats"):
        read_stats(out, read_manifest(out))  # stale statistics are refused
    for p in out.glob("shards/train/*.stats.npz"):
        p.unlink()
    after = {s["sha256"] for s in read_manifest(out).data["splits"]["train"]["shards"]}
    report = compute_stats(out, workers=2)
    assert report.sources.get("pixels") == len(after - before) > 0
    assert report.sources.get("cache") == len(after & before)
    incremental = files(out)
    scratch = compute_stats(out, from_pixels=True, workers=1)
    assert files(out) == incremental
    assert scratch.stats.n_images == first.stats.n_images + 1
    assert {p.stem for p in (out / "stats/cache").iterdir()} == after  # stale entries dropped


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="alexnet preprocess"):
        compute_stats(tmp_path / "nothing", workers=1)
    with pytest.raises(FileNotFoundError, match="alexnet stats"):
        read_stats(tmp_path)


def _slow(seconds: float) -> float:
    import time

    time.sleep(seconds)
    return seconds


def test_a_scheduler_killed_mid_stage_is_one_clear_error(tmp_path):
    """Issue 22.12: a scheduler killed during `stats --dask-address` was a
    FutureCancelledError traceback. Every stage's client (cluster.dask_client) turns the
    loss of its cluster into one ClusterLost line naming the address."""
    import os
    import signal

    from preprocessing.cluster import ClusterLost, dask_client
    from tests.conftest import _stop, start_dask

    address, procs = start_dask(tmp_path)
    try:
        lost = f"the Dask cluster at {address} went away"
        with pytest.raises(ClusterLost, match=lost), dask_client(address=address) as client:
            future = client.submit(_slow, 30, pure=False)
            os.killpg(procs[0].pid, signal.SIGKILL)  # the scheduler, mid-task
            future.result(timeout=60)
    finally:
        for proc in reversed(procs):
            _stop(proc)


def test_statistics_of_other_shards_are_refused_even_when_the_count_matches(data):
    """Issue 23: a staleness check by shard count survived. One train shard's sha256
    differs, the count is the same: the statistics do not describe these shards."""
    root, _ = data
    manifest = read_manifest(root / "out")
    read_stats(root / "out", manifest)  # current
    data = copy.deepcopy(manifest.data)
    data["splits"]["train"]["shards"][-1]["sha256"] = "0" * 64
    with pytest.raises(ValueError, match="does not describe the train shards"):
        read_stats(root / "out", Manifest.parse(data))
