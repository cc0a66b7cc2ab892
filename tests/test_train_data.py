"""The training loader: crops, flips, mean subtraction, lighting, exact epochs, the slots."""

from __future__ import annotations

import io
import os
import random
import signal

import numpy as np
import pytest
import torch
from PIL import Image

from preprocessing.prepare import PrepareSettings, preprocess
from preprocessing.sample_data import SampleSpec, generate
from shards.reader import iter_samples, shard_paths
from shards.stats import Stats
from tests.reference import collate
from training.loader.augment import Augment, augment, center, lighting_basis, prepare_batch
from training.loader.dataset import ShardSamples, _samples
from training.loader.decode import Decoder, decode
from training.loader.workers import Loader

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


def test_flip_false_never_flips_and_the_default_is_the_papers_half():
    """Issue 23: `flip=false` ignored by the augmentation survived every test."""
    img, rng = coords_image(), np.random.default_rng(1)
    flips = [augment(img, rng, Augment(flip=False), None)[3] for _ in range(400)]
    assert not any(flips)
    assert Augment().flip and Augment().sigma == 0.1 and Augment().crop == 227


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
    stats = _rotation_stats()
    rot, values = stats.eigenvectors.T, stats.eigenvalues
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
    plain = prepare_batch(
        collate([(*view[:4], np.zeros(3, np.float32))], [0], ["k"], 227),
        torch.zeros(256, 256, 3),
        1.0,
        CPU,
    )
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
        keys = [k for batch in Loader(ds, workers) for k in batch.keys]
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


def _rotation_stats() -> Stats:
    rot = np.linalg.qr(np.random.default_rng(2).normal(size=(3, 3)))[0]
    values = np.array([0.2, 0.03, 0.01])
    return Stats(
        np.zeros((256, 256, 3), np.float32),
        values,
        rot.T,
        rot @ np.diag(values) @ rot.T,
        "pixel/255",
        np.zeros(3),
        1,
        1,
        [],
    )


class OldShardSamples(torch.utils.data.IterableDataset):
    """The loader as it was before the slots (6066c87), kept as the reference: per-sample
    views, webdataset's own shuffle buffer, a fresh collated batch each time, and tensors
    moved to the main process by the DataLoader."""

    def __init__(self, shards, train, aug, basis, seed, epoch, batch_size, buffer):
        self.shards, self.train, self.aug, self.basis = [str(s) for s in shards], train, aug, basis
        self.seed, self.epoch, self.batch_size, self.buffer = seed, epoch, batch_size, buffer

    def __iter__(self):
        import webdataset as wds

        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        order = list(self.shards)
        if self.train:
            random.Random(f"{self.seed}-{self.epoch}").shuffle(order)
        rng = np.random.default_rng([self.seed, self.epoch, 0, worker])
        samples = _samples(order[worker::workers])
        if self.train:
            pyrng = random.Random(f"{self.seed}-{self.epoch}-0-{worker}")
            samples = wds.filters.shuffle(self.buffer, initial=min(self.buffer, 100), rng=pyrng)(
                samples
            )
        views, labels, keys = [], [], []
        for sample in samples:
            image = decode(sample["jpg"])
            views.append(
                augment(image, rng, self.aug, self.basis)
                if self.train
                else center(image, self.aug.crop)
            )
            labels.append(int(sample["cls"]))
            keys.append(sample["__key__"])
            if len(views) == self.batch_size:
                yield old_collate(views, labels, keys, self.aug.crop)
                views, labels, keys = [], [], []
        if views:
            yield old_collate(views, labels, keys, self.aug.crop)


def old_collate(views, labels, keys, crop):
    n = len(views)
    crops = np.empty((n, crop, crop, 3), np.uint8)
    offsets = np.empty((n, 2), np.int64)
    flips = np.empty(n, bool)
    shifts = np.empty((n, 3), np.float32)
    for i, (patch, top, left, flipped, shift) in enumerate(views):
        crops[i] = patch
        offsets[i] = top, left
        flips[i] = flipped
        shifts[i] = shift
    return (
        torch.from_numpy(crops),
        torch.from_numpy(offsets),
        torch.from_numpy(flips),
        torch.from_numpy(shifts),
        torch.tensor(labels),
        keys,
    )


def old_prepare_batch(crops, offsets, flips, shifts, mean, input_scale):
    """A list of 128 slices for the mean crops, and a device sync for the flips."""
    c = crops.shape[1]
    means = torch.stack([mean[t : t + c, lft : lft + c] for t, lft in offsets.tolist()])
    x = crops.float() - means + shifts[:, None, None, :]
    if bool(flips.any()):
        x[flips] = x[flips].flip(2)
    return (x * input_scale).permute(0, 3, 1, 2)


@pytest.mark.parametrize("train", [True, False])
def test_batches_through_slots_equal_the_old_way_element_for_element(shards_root, train):
    paths = shard_paths(shards_root, "train")
    basis = lighting_basis(_rotation_stats(), "paper")
    mean = torch.from_numpy(np.random.default_rng(9).uniform(0, 255, (256, 256, 3)).astype("f4"))
    old_ds = OldShardSamples(
        paths, train, Augment(), basis, seed=3, epoch=1, batch_size=4, buffer=8
    )
    old = list(torch.utils.data.DataLoader(old_ds, batch_size=None, num_workers=2))
    ds = ShardSamples(paths, train, Augment(), basis, seed=3, shuffle_buffer=8, batch_size=4)
    ds.set_epoch(1)
    with Loader(ds, 2) as new_loader:
        n = 0
        for batch, (crops, offsets, flips, shifts, labels, keys) in zip(
            new_loader, old, strict=True
        ):
            assert batch.keys == keys
            for got, want in zip(
                batch.tensors(), (crops, offsets, flips, shifts, labels), strict=True
            ):
                assert got.dtype == want.dtype and torch.equal(got, want)
            x = prepare_batch(batch, mean, 0.5, CPU)
            assert torch.equal(x, old_prepare_batch(crops, offsets, flips, shifts, mean, 0.5))
            batch.release()
            n += len(keys)
        assert new_loader.fallbacks == 0  # every batch came through a slot
    assert n == 42 and (not train or any(bool(o[2].any()) for o in old))


def _epoch(loader_, keep=False):
    out = []
    for batch in loader_:
        out.append((list(batch.keys), batch.crops.clone(), batch.shifts.clone()))
        if not keep:
            batch.release()
    return out


def _same(a, b):
    if len(a) != len(b):
        return False
    pairs = zip(a, b, strict=True)
    return all(
        ka == kb and torch.equal(ca, cb) and torch.equal(sa, sb)
        for (ka, ca, sa), (kb, cb, sb) in pairs
    )


def test_workers_persist_across_epochs_and_follow_set_epoch(shards_root):
    paths = shard_paths(shards_root, "train")
    ds = ShardSamples(paths, True, Augment(), None, seed=4, shuffle_buffer=8, batch_size=4)
    with Loader(ds, 2) as persistent:
        first = _epoch(persistent)
        pids = [w.pid for w in persistent._dl._iterator._workers]
        ds.set_epoch(1)
        second = _epoch(persistent)
        assert [w.pid for w in persistent._dl._iterator._workers] == pids  # the same processes
    fresh_ds = ShardSamples(paths, True, Augment(), None, seed=4, shuffle_buffer=8, batch_size=4)
    fresh_ds.set_epoch(1)
    with Loader(fresh_ds, 2) as fresh:
        assert _same(second, _epoch(fresh))  # epoch 1 as a new loader makes it
    assert not _same(first, second)


def test_held_batches_are_never_overwritten(shards_root):
    """A consumer that keeps every batch (never releasing) still sees each one intact."""
    paths = shard_paths(shards_root, "train")
    ds = ShardSamples(paths, True, Augment(), None, seed=5, shuffle_buffer=8, batch_size=2)
    with Loader(ds, 2) as held_loader:
        held = list(held_loader)  # 21 batches, more than the 2 x 4 slots
        kept = [(list(b.keys), b.crops.clone(), b.shifts.clone()) for b in held]
        assert held_loader.fallbacks > 0  # the workers ran out of slots and made fresh batches
    with Loader(ds, 2) as reference:
        assert _same(kept, _epoch(reference))


def test_stopping_early_stops_the_workers_and_the_next_epoch_is_whole(shards_root):
    paths = shard_paths(shards_root, "train")
    ds = ShardSamples(paths, True, Augment(), None, seed=6, shuffle_buffer=8, batch_size=4)
    with Loader(ds, 2) as early:
        for i, batch in enumerate(early):
            batch.release()
            if i == 2:
                break
        assert early._dl is None  # the abandoned epoch's workers are gone
        again = _epoch(early)
    with Loader(ds, 2) as reference:
        assert _same(again, _epoch(reference))


_FORKED: list[int] = []  # armed by the test below: a Ctrl-C at the next fork, once


def _ctrl_c_at_fork() -> None:
    if _FORKED == [0]:
        _FORKED[0] = 1
        signal.raise_signal(signal.SIGINT)  # in the parent, inside Python's at-fork hooks


os.register_at_fork(after_in_parent=_ctrl_c_at_fork)


def test_a_ctrl_c_while_the_workers_fork_stops_the_loader(shards_root):
    """Issue 27.6: a Ctrl-C landing while the loader forks its workers (the first second of
    `train`, where logging's at-fork hooks run) raised KeyboardInterrupt inside a hook,
    where Python prints "Exception ignored" and drops it: training went on. It is held
    back until the fork is over and raised then; the workers stop with the loader."""
    ds = ShardSamples(shard_paths(shards_root, "train"), True, Augment(), None, batch_size=4)
    loader = Loader(ds, 2)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    _FORKED[:] = [0]
    try:
        with pytest.raises(KeyboardInterrupt):
            next(iter(loader))
        assert _FORKED == [1]  # the Ctrl-C did land inside the fork
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        _FORKED.clear()
        signal.signal(signal.SIGINT, before)
        loader.close()
    assert len(list(Loader(ds, 1))) == 11  # and a Ctrl-C-free loader runs as ever


def test_the_loader_benchmark_runs(tmp_path):
    """benchmarks/loader.py --dry-run: the replay ceiling, per-worker and all-core comparisons."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "loader.py"
    cmd = [sys.executable, str(script), "--dry-run", "--workdir", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=script.parent)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    ceiling = result["ceiling_images_per_s"]
    assert set(ceiling) >= {"tensors_same", "slots_same", "tensors_fresh", "slots_fresh"}
    per_worker = result["per_worker"]
    assert len(per_worker["breakdown_ms_per_image"]) == 7
    assert 0 < per_worker["checksum_share_of_worker_time"] < 1
    assert result["images"] == 300 and result["all_cores"]["processes"] >= 1


def test_slots_that_cannot_fit_in_shared_memory_are_a_clear_error():
    from training.loader.transport import SlotPool

    with pytest.raises(MemoryError, match=r"shared memory .* fewer loader workers"):
        SlotPool(10_000, 4, 128, 227, torch.multiprocessing.get_context())


def _smooth(w, h, seed):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC), np.int16)
    return Image.fromarray(np.clip(img + rng.integers(-20, 21, img.shape), 0, 255).astype(np.uint8))


def _encoded(image, fmt="JPEG", **options):
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


def _pillow(data):
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def test_the_loaders_decoder_gives_pillows_pixels(shards_root):
    """simplejpeg (issue 24, replacing training/_jpeg.c) against Pillow: the same pixels
    on the stored images and on JPEGs of every subsampling, progressive too."""
    import simplejpeg

    decoder = Decoder()
    for s in iter_samples(shard_paths(shards_root, "train")):
        got = decoder(s.image)
        assert np.shares_memory(got, decoder.scratch)  # simplejpeg took it, into the array
        assert np.array_equal(got, _pillow(s.image))
    variants = [
        _encoded(_smooth(w, h, i), quality=q, subsampling=sub, progressive=prog)
        for i, (w, h, q, sub, prog) in enumerate(
            [
                (256, 256, 95, 2, False),
                (256, 256, 75, 0, False),
                (300, 200, 90, 1, False),
                (257, 255, 60, 2, True),
                (640, 480, 85, 2, False),
                (31, 17, 95, 0, True),
            ]
        )
    ]
    others = [  # not for the C path: greyscale, CMYK, PNG; Pillow decodes them
        _encoded(_smooth(64, 48, 7).convert("L")),
        _encoded(_smooth(64, 48, 8).convert("CMYK")),
        _encoded(_smooth(64, 48, 9), "PNG"),
    ]
    for data in variants + others:
        got, want = decoder(data), _pillow(data)
        assert np.array_equal(decode(data), want)  # shards.pixels.decode_rgb, every reader's
        assert got.shape == want.shape and np.array_equal(got, want)
    for data in variants:
        assert np.shares_memory(decoder(data), decoder.scratch)
    for data in others:  # Pillow's own arrays
        assert not np.shares_memory(decoder(data), decoder.scratch)
    truncated = variants[0][:3000]
    with pytest.raises(ValueError):  # simplejpeg refuses it: the decoder asks Pillow
        simplejpeg.decode_jpeg(truncated, "RGB")
    for f in (decoder, decode):
        with pytest.raises(OSError, match="truncated"):
            f(truncated)


@pytest.mark.parametrize("mode", ["paper", "stddev"])
def test_lighting_is_the_same_whatever_scale_the_statistics_are_stored_on(mode):
    """The same data's statistics at pixel/255 and at pixel give the same shift (issue 14:
    at `pixel` the eigenvalues were only multiplied by the unit, 255x too strong)."""
    on_255 = _rotation_stats()
    on_pixel = Stats(
        on_255.mean,
        on_255.eigenvalues * 255**2,
        on_255.eigenvectors,
        on_255.covariance * 255**2,
        "pixel",
        on_255.mean_rgb,
        1,
        1,
        [],
    )
    a = lighting_basis(on_255, mode)
    np.testing.assert_allclose(lighting_basis(on_pixel, mode), a, rtol=1e-12)
    p, values = on_255.eigenvectors.T, on_255.eigenvalues  # and it is the spec's formula
    np.testing.assert_allclose(a, 255 * p @ np.diag(values if mode == "paper" else values**0.5))
