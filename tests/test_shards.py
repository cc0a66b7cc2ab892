"""The on-disk format: tar members and headers, partial statistics, atomic writes."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

from shards import partials as partials_mod
from shards.atomic import remove_stale_temporaries, write_bytes
from shards.format import ShardWriter, sample_key, shard_index, shard_name
from shards.partials import Partials
from shards.reader import iter_members, iter_samples


def test_names_and_keys():
    assert shard_name("train", 12) == "train-000012.tar"
    assert shard_index("val-000003.tar") == 3 and shard_index("val-3.tar") is None
    assert sample_key("n01440764/n01440764_10026.JPEG") == "n01440764/n01440764_10026"
    assert sample_key("ILSVRC2012_val_00000001.JPEG") == "ILSVRC2012_val_00000001"
    assert sample_key("n0/a.b.c.jpg") == "n0/a_b_c"  # webdataset splits at the first dot


@pytest.mark.parametrize(
    "key", ["n01440764/n01440764_10026", "x" * 120, "n0/caf\u00e9_\u732b", "a/b/c"]
)
def test_tar_is_standard_and_deterministic(tmp_path, key):
    meta = b'{"path": "p"}'
    paths = []
    for name in ("a.tar", "b.tar"):
        with ShardWriter(tmp_path / name) as w:
            w.write(key, b"\xff\xd8jpeg-bytes", "jpg", 7, meta)
            w.write(key + "2", b"", "png", 0, meta)
        paths.append(tmp_path / name)
    assert paths[0].read_bytes() == paths[1].read_bytes()
    data = paths[0].read_bytes()
    assert len(data) % 10240 == 0 and w.bytes == len(data)
    with tarfile.open(paths[0]) as t:
        members = t.getmembers()
        names = [
            f"{k}.{ext}"
            for k, e in ((key, "jpg"), (key + "2", "png"))
            for ext in (e, "cls", "json")
        ]
        assert [m.name for m in members] == names
        assert all(m.isfile() and m.mtime == 0 and m.mode == 0o444 and m.uid == 0 for m in members)
        assert t.extractfile(members[0]).read() == b"\xff\xd8jpeg-bytes"
        assert t.extractfile(members[1]).read() == b"7"
    samples = list(iter_samples([paths[0]], check=False))  # a bare tar: no record
    assert [(s.key, s.cls, s.ext) for s in samples] == [(key, 7, "jpg"), (key + "2", 0, "png")]


def test_failed_writer_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), ShardWriter(tmp_path / "s.tar") as w:
        w.write("k", b"x", "jpg", 1, b"{}")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="extension"), ShardWriter(tmp_path / "t.tar") as w:
        w.write("k", b"x", "gif", 1, b"{}")
    assert list(tmp_path.iterdir()) == []


def test_stale_temporaries_are_swept(tmp_path):
    write_bytes(tmp_path / "keep.tar", b"ok")
    (tmp_path / "x.tar.tmp-12345").write_bytes(b"half")
    assert remove_stale_temporaries(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["keep.tar"]


def test_partials_are_exact_and_merge(tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(5)]
    images.append(np.full((8, 8, 3), 255, np.uint8))  # the largest products
    a, b = Partials.zeros(8), Partials.zeros(8)
    for i, im in enumerate(images):
        (a if i < 3 else b).add(im)
    a.merge(b)
    x = np.stack(images).astype(np.int64)
    flat = x.reshape(-1, 3)
    np.testing.assert_array_equal(a.pixel_sum, x.sum(0))
    np.testing.assert_array_equal(a.rgb_outer, flat.T @ flat)
    np.testing.assert_array_equal(a.rgb_sum, flat.sum(0))
    assert (a.n_images, a.n_pixels) == (6, 6 * 64)

    a.save(tmp_path / "p.npz")
    assert (tmp_path / "p.npz").read_bytes() == a.to_bytes()  # deterministic bytes
    back = Partials.load(tmp_path / "p.npz")
    np.testing.assert_array_equal(back.pixel_sum, a.pixel_sum)
    np.testing.assert_array_equal(back.rgb_outer, a.rgb_outer)
    with pytest.raises(ValueError, match="expected uint8"):
        a.add(np.zeros((8, 8, 3), np.float32))


def test_pixel_sum_widens_before_uint32_could_overflow(monkeypatch):
    monkeypatch.setattr(partials_mod, "_UINT32_IMAGES", 2)
    p = Partials.zeros(2)
    for _ in range(3):
        p.add(np.full((2, 2, 3), 255, np.uint8))
    assert p.pixel_sum.dtype == np.uint64 and int(p.pixel_sum[0, 0, 0]) == 3 * 255


def test_staged_sums_flush_exactly(monkeypatch):
    """The uint16 stage is flushed before it could overflow, and on every read."""
    monkeypatch.setattr(partials_mod, "_STAGE_IMAGES", 2)
    p = Partials.zeros(2)
    for n in range(1, 8):
        p.add(np.full((2, 2, 3), 255, np.uint8))
        assert int(p.pixel_sum[1, 1, 2]) == n * 255 and p.n_images == n
    assert p.rgb_outer[0, 1] == 7 * 4 * 255 * 255


def test_partials_file_is_checked(tmp_path):
    p = Partials.zeros(2)
    p.add(np.ones((2, 2, 3), np.uint8))
    buf = io.BytesIO(p.to_bytes())
    with np.load(buf) as z:
        arrays = dict(z)
    arrays["n_pixels"] = np.int64(5)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match="inconsistent"):
        Partials.load(tmp_path / "bad.npz")


def _tar_with(path: Path, fmt: int, files: dict[str, bytes]) -> None:
    with tarfile.open(path, "w", format=fmt, encoding="utf-8") as tar:
        folder = tarfile.TarInfo("a-folder")  # not files: skipped by the reader
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        link = tarfile.TarInfo("a-link")
        link.type, link.linkname = tarfile.SYMTYPE, "nowhere"
        tar.addfile(link)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_iter_members_reads_what_tarfile_writes(tmp_path, fmt):
    files = {
        "n01/x_1.jpg": bytes(range(256)) * 3,
        "n01/x_1.cls": b"7",
        "empty.json": b"",
        "p" * 60 + "/" + "q" * 90 + ".jpg": b"a name split into ustar's prefix",
        "caf\u00e9/\u00fcber.json": b"{}",
    }
    if fmt != tarfile.USTAR_FORMAT:
        files["r" * 150 + ".jpg"] = b"a name only PAX or GNU headers can hold"
    path = tmp_path / "t.tar"
    _tar_with(path, fmt, files)
    assert list(iter_members(path)) == list(files.items())
    with tarfile.open(path) as tar:  # the same as the standard library reads
        expected = [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]
    assert list(iter_members(path)) == expected


def test_iter_members_refuses_corrupt_tars(tmp_path):
    good = tmp_path / "good.tar"
    _tar_with(good, tarfile.PAX_FORMAT, {"k.jpg": b"x" * 2000, "k.cls": b"1"})
    data = good.read_bytes()
    bad_header = tmp_path / "bad.tar"
    bad_header.write_bytes(data[:1030] + b"Z" + data[1031:])  # in k.jpg's header (at 1024)
    with pytest.raises(ValueError, match="bad header checksum at byte 1024"):
        list(iter_members(bad_header))
    short = tmp_path / "short.tar"
    short.write_bytes(data[:2500])  # cut inside k.jpg's data
    with pytest.raises(ValueError, match="truncated member data"):
        list(iter_members(short))


def test_the_c_sums_are_built_and_equal_numpys():
    """shards/_sums.c (built by the install) against the NumPy path, to the last unit."""
    assert partials_mod._sums is not None, "shards/_sums.c was not built: see scripts/bootstrap.sh"
    rng = np.random.default_rng(3)
    images = [
        rng.integers(0, 256, (256, 256, 3), dtype=np.uint8),
        np.full((256, 256, 3), 255, np.uint8),  # the largest products: uint32 sums just fit
        rng.integers(0, 256, (300, 301, 3), dtype=np.uint8),  # more than one 65,536-pixel block
        rng.integers(0, 256, (1, 5, 3), dtype=np.uint8),
    ]
    for image in images:
        c_stage, np_stage = (np.full(image.shape, 7, np.uint16) for _ in range(2))
        c = partials_mod._sums.add(image, c_stage)
        ref = partials_mod._numpy_add(image, np_stage)
        assert list(c) == ref
        np.testing.assert_array_equal(c_stage, np_stage)
    with pytest.raises(ValueError, match="uint16 stage"):
        partials_mod._sums.add(images[0], np.zeros(5, np.uint16))


def test_partials_of_a_strided_view_take_the_numpy_path():
    rng = np.random.default_rng(4)
    big = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    view = big[::2, ::2]  # not contiguous
    a, b = Partials.zeros(8), Partials.zeros(8)
    a.add(view)
    b.add(np.ascontiguousarray(view))
    np.testing.assert_array_equal(a.pixel_sum, b.pixel_sum)
    np.testing.assert_array_equal(a.rgb_outer, b.rgb_outer)


def test_the_sample_checksum_is_zlibs_crc32_of_the_members_in_order():
    import zlib

    from shards import format as fmt

    members = (bytes(range(256)) * 157, b"7", b'{"path": "x"}')
    crc = zlib.crc32(members[2], zlib.crc32(members[1], zlib.crc32(members[0])))
    assert fmt.sample_checksum(members) == crc  # whichever CRC-32 is installed
    assert fmt.crc32 is not zlib.crc32, "isal is not installed: see pyproject.toml"


def test_progress_reports_live_on_a_terminal_in_lines_in_a_log_and_not_at_all_when_quiet():
    import io

    from shards.progress import Progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    log = io.StringIO()
    show = Progress("preprocess", 10, stream=log, every_s=0.0)
    for _ in range(10):
        show.update(1, "0 rejected")
    show.note("done")
    show.close()
    lines = log.getvalue().splitlines()
    assert len(lines) == 11 and lines[-2].startswith("preprocess: 10/10 images")
    assert "0 rejected" in lines[-2] and lines[-1] == "done"

    tty = Terminal()
    show = Progress("epoch 1/2", 4, stream=tty)
    show.update(4, "loss 2.3")
    show.note("epoch 1/2: loss 2.3")
    show.close()
    drawn = tty.getvalue()
    assert "\x1b[" in drawn and "4/4" in drawn and "loss 2.3" in drawn  # drawn by rich
    assert "epoch 1/2: loss 2.3\n" in drawn

    quiet = io.StringIO()
    show = Progress("train", None, stream=quiet, quiet=True, every_s=0.0)
    show.update(5)
    show.note("epoch 1")
    show.close()
    assert quiet.getvalue() == ""
