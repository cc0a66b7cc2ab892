"""The training loader: crops, flips, mean subtraction, lighting, exact epochs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from preprocessing.prepare import PrepareSettings, preprocess
from preprocessing.sample_data import SampleSpec, generate
from shards.reader import iter_samples, shard_paths
from shards.stats import Stats
from training.data import (
    Augment,
    ShardSamples,
    augment,
    collate,
    lighting_basis,
    loader,
    prepare_batch,
)

CPU = torch.device("cpu")


def coords_image() -> np.ndarray:
    """A 256x256 image whose pixels encode their coordinates: R = row, G = column."""
    img = np.zeros((256, 256, 3), np.uint8)
    img[..., 0] = np.arange(256)[:, None]
    img[..., 1] = np.arange(256)[None, :]
    img[..., 2] = 7
    return img


def test_crops_stay_inside_cover_every_offset_and_flip_half_the_time():
    img, rng, aug = coords_image(), np.random.default_rng(0), Augment()
    tops, lefts, flips = set(), set(), 0
    n = 6000
    for _ in range(n):
        crop, top, left, flipped, shift = augment(img, rng, aug, None)
        assert 0 <= top <= 29 and 0 <= left <= 29  # 256 - 227
        tops.add(top)
        lefts.add(left)
        flips += flipped
        rows, cols = crop[..., 0], crop[..., 1]  # the crop shows exactly its window
        assert rows[0, 0] == top and rows[-1, 0] == top + 226
        assert np.array_equal(cols[0], np.arange(left, left + 227))  # flipped per batch, later
        assert np.all(shift == 0)
    assert tops == set(range(30)) and lefts == set(range(30))
    assert abs(flips / n - 0.5) < 0.03


def test_flips_reverse_the_width_of_the_prepared_batch():
    img, rng = coords_image(), np.random.default_rng(5)
    views = [augment(img, rng, Augment(), None) for _ in range(32)]
    batch = collate(views, [0] * 32, ["k"] * 32, 227)
    x = prepare_batch(batch, torch.zeros(256, 256, 3), 1.0, CPU)  # (B, 3, c, c)
    assert x.shape == (32, 3, 227, 227) and 0 < int(batch.flips.sum()) < 32
    for i, (_, top, left, flipped, _) in enumerate(views):
        cols = np.arange(left, left + 227)
        assert np.array_equal(x[i, 1, 0].numpy(), cols[::-1] if flipped else cols)
        assert np.array_equal(x[i, 0, :, 0].numpy(), np.arange(top, top + 227))


def test_mean_is_subtracted_at_the_crops_own_offset_and_flip():
    img = coords_image()
    mean = torch.from_numpy(coords_image()).float() * 0.5  # (256, 256, 3)
    rng, aug = np.random.default_rng(1), Augment()
    batch = collate(
        [augment(img, rng, aug, None) for _ in range(16)], list(range(16)), ["k"] * 16, 227
    )
    assert 0 < int(batch.flips.sum()) < 16
    x = prepare_batch(batch, mean, 1.0, CPU)
    crops = prepare_batch(batch, torch.zeros(256, 256, 3), 1.0, CPU)  # flipped, nothing taken
    # the image and the mean are the same pattern (mean = image / 2), so wherever the mean
    # was cropped at the crop's own offset and flip, x = crop / 2 exactly
    torch.testing.assert_close(x, crops * 0.5, rtol=0, atol=0)
    assert torch.equal(prepare_batch(batch, mean, 0.25, CPU), x * 0.25)


def test_lighting_adds_exactly_p_times_a_lambda_to_every_pixel():
    rot = np.linalg.qr(np.random.default_rng(2).normal(size=(3, 3)))[0]
    values = np.array([0.2, 0.03, 0.01])
    stats = Stats(np.zeros((256, 256, 3), np.float32), values, rot.T, rot @ np.diag(values) @ rot.T,
                  "pixel/255", np.zeros(3), 1, 1, [])  # fmt: skip
    basis = lighting_basis(stats, "paper")
    img = coords_image()
    rng = np.random.default_rng(3)
    view = augment(img, rng, Augment(), basis)
    shift = view[4]
    replay = np.random.default_rng(3)  # the same draws: offsets, flip, then a
    replay.integers(0, 30)
    replay.integers(0, 30)
    replay.random()
    a = replay.normal(0.0, 0.1, 3)
    p = rot  # columns are the eigenvectors (rows of stats.eigenvectors)
    np.testing.assert_allclose(shift, 255 * p @ (a * values), rtol=1e-6)
    batch = collate([view], [0], ["k"], 227)
    x = prepare_batch(batch, torch.zeros(256, 256, 3), 1.0, CPU)
    plain = prepare_batch(collate([(*view[:4], np.zeros(3, np.float32))], [0], ["k"], 227),
                          torch.zeros(256, 256, 3), 1.0, CPU)  # fmt: skip
    added = x[0] - plain[0]
    expected = torch.from_numpy(shift)[:, None, None].expand_as(added)
    assert torch.allclose(added, expected, atol=1e-4)
    std = lighting_basis(stats, "stddev")
    np.testing.assert_allclose(std, 255 * p @ np.diag(np.sqrt(values)), rtol=1e-12)


@pytest.fixture(scope="module")
def shards_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("loader")
    generate(
        root / "src",
        SampleSpec(classes=3, train_per_class=14, val_per_class=2, quirks=0, max_side=300),
    )
    preprocess(root / "src", root / "out", PrepareSettings(shard_size=5), workers=1, progress=False)
    return root / "out"


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_one_epoch_yields_every_training_key_exactly_once(shards_root, workers):
    paths = shard_paths(shards_root, "train")
    expected = sorted(s.key for s in iter_samples(paths))
    ds = ShardSamples(paths, True, Augment(), None, seed=4, shuffle_buffer=8, batch_size=4)
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        keys = [k for batch in loader(ds, workers) for k in batch.keys]
        assert sorted(keys) == expected
    # reshuffled each epoch
    ds.set_epoch(0)
    first = ds.shards_for()
    ds.set_epoch(1)
    assert ds.shards_for() != first and sorted(ds.shards_for()) == sorted(first)


def test_ranks_read_disjoint_shards(shards_root):
    paths = shard_paths(shards_root, "train")
    seen = []
    for rank in range(3):
        ds = ShardSamples(paths, True, Augment(), None, seed=1, rank=rank, world=3)
        ds.set_epoch(2)
        seen.append(set(ds.shards_for()))
    assert set.union(*seen) == {str(p) for p in paths}
    assert sum(len(s) for s in seen) == len(paths)
