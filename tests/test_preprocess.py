"""The preprocess stage end to end: shards, manifest, rejects, determinism, resume."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from preprocessing.prepare import PrepareSettings, preprocess
from preprocessing.sample_data import SampleSpec, generate
from shards.manifest import read_history, read_manifest
from shards.partials import Partials
from shards.reader import iter_samples, shard_paths

SPEC = SampleSpec(classes=4, train_per_class=12, val_per_class=3, quirks=1, seed=5, max_side=420)
SETTINGS = PrepareSettings(shard_size=10)


def digest(out: Path) -> dict[str, str]:
    """Every file's sha256 but the history's (when each run happened) and the hidden
    ones (the lock, the disk's times of known-good shards)."""
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != "history.jsonl" and not p.name.startswith(".")
    }


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("src") / "imagenet"
    generate(root, SPEC)
    return root


@pytest.fixture(scope="module")
def done(src, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "data"
    report = preprocess(src, out, SETTINGS, workers=2, progress=False)
    return out, report


def test_every_input_is_in_a_shard_or_rejected(src, done):
    out, report = done
    meta = json.loads((src / "sample-data.json").read_text())
    manifest = read_manifest(out).data
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]

    bad = sorted(q["path"] for q in meta["quirks"] if not q["decodable"])
    assert sorted(r["path"] for r in rejects) == bad
    reasons = {
        q["kind"]: r["reason"] for q in meta["quirks"] for r in rejects if r["path"] == q["path"]
    }
    assert reasons["truncated"].startswith("truncated file: the image data ends early")
    assert reasons["empty"].startswith("empty file")
    assert reasons["not-an-image"].startswith("not an image")

    stored = {
        s.meta["path"] for split in ("train", "val") for s in iter_samples(shard_paths(out, split))
    }
    inputs = {str(p.relative_to(src)) for p in src.glob("*/**/*.JPEG")}
    assert stored | set(bad) == inputs and not stored & set(bad)
    counts = manifest["counts"]
    assert counts == {"inputs": len(inputs), "written": len(stored), "rejected": len(bad)}
    assert (report.inputs, report.written, report.rejected) == (len(inputs), len(stored), len(bad))
    for entry in manifest["splits"].values():
        assert entry["count"] == sum(s["count"] for s in entry["shards"])


def test_manifest_follows_the_contract(src, done):
    out, _ = done
    m = read_manifest(out).data  # the JSON, as written
    synsets = (src / "LOC_synset_mapping.txt").read_text().splitlines()
    assert [f"{c['wnid']} {c['name']}" for c in m["classes"]] == synsets
    assert m["settings"]["size"] == 256 and m["settings"]["quality"] == 95
    assert len(m["source"]["fingerprint"]) == 64
    n_train = SPEC.classes * SPEC.train_per_class - 3  # three undecodable quirks
    assert m["splits"]["train"]["count"] == n_train
    assert [s["shard"] for s in m["splits"]["train"]["shards"]] == [
        f"train-{i:06d}.tar" for i in range(5)
    ]
    for split, entry in m["splits"].items():
        for s in entry["shards"]:
            tar = out / "shards" / split / s["shard"]
            assert hashlib.sha256(tar.read_bytes()).hexdigest() == s["sha256"]
            assert tar.stat().st_size == s["bytes"]


# webdataset 1.0's opener leaves its files to the garbage collector.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_shards_read_back_with_webdataset_and_tar(done):
    out, _ = done
    paths = [str(p) for p in shard_paths(out, "train")]
    samples = list(wds.WebDataset(paths, shardshuffle=False).decode("pil"))
    raw = list(wds.WebDataset(paths, shardshuffle=False))
    ours = list(iter_samples(paths))  # the project's own reader sees the same samples
    assert [(s.key, s.image, s.cls) for s in ours] == [
        (r["__key__"], r["jpg"], int(r["cls"])) for r in raw
    ]
    assert len(samples) == read_manifest(out).data["splits"]["train"]["count"]
    for s in samples:
        assert s["jpg"].size == (256, 256) and s["jpg"].mode == "RGB"
        assert isinstance(s["cls"], int) and 0 <= s["cls"] < SPEC.classes
        assert s["json"]["wnid"].startswith("n") and s["json"]["width"] > 0
        assert s["__key__"] == s["json"]["path"].removeprefix("train/").removesuffix(".JPEG")

    listing = subprocess.run(["tar", "-tf", paths[0]], capture_output=True, text=True, check=True)
    names = listing.stdout.split()
    assert len(names) == 3 * read_manifest(out).data["splits"]["train"]["shards"][0]["count"]
    assert [n.rsplit(".", 1)[1] for n in names[:3]] == ["jpg", "cls", "json"]


def test_train_shards_mix_classes_and_val_keeps_source_order(done):
    out, _ = done
    for path in shard_paths(out, "train"):
        assert len({s.cls for s in iter_samples([path])}) > 1, path.name
    val = [s.meta["path"] for s in iter_samples(shard_paths(out, "val"))]
    assert val == sorted(val)


def test_partials_are_exact_sums_of_the_stored_pixels(done):
    out, _ = done
    for path in shard_paths(out, "train"):
        p = Partials.load(path.with_suffix(".stats.npz"))
        pixels = [
            np.asarray(Image.open(io.BytesIO(s.image)).convert("RGB")) for s in iter_samples([path])
        ]
        stack = np.stack(pixels).astype(np.int64)
        assert p.n_images == len(pixels) and p.n_pixels == len(pixels) * 256 * 256
        np.testing.assert_array_equal(p.pixel_sum, stack.sum(0))
        flat = stack.reshape(-1, 3)
        np.testing.assert_array_equal(p.rgb_outer, flat.T @ flat)
        np.testing.assert_array_equal(p.rgb_sum, flat.sum(0))


def test_same_bytes_whatever_the_workers(src, done, tmp_path):
    out, _ = done
    other = tmp_path / "one-worker"
    preprocess(src, other, SETTINGS, workers=1, progress=False)
    assert digest(other) == digest(out)


def test_an_existing_dask_cluster_gives_the_same_bytes(src, done, tmp_path, dask_address):
    out, _ = done
    remote = tmp_path / "remote"
    report = preprocess(src, remote, SETTINGS, dask_address=dask_address, progress=False)
    assert report.shards_written == 5 + 2
    assert digest(remote) == digest(out)


def test_unchanged_rerun_does_no_work_and_changes_no_byte(src, done):
    out, _ = done

    def state() -> dict:  # every file but the lock: its bytes and its modification time
        return {
            p: (p.read_bytes(), p.stat().st_mtime_ns)
            for p in out.rglob("*")
            if p.is_file() and p.name != ".lock"
        }

    before, history = state(), read_history(out)
    report = preprocess(src, out, SETTINGS, workers=2, progress=False)
    assert report.shards_written == 0 and not report.cluster_started
    assert report.shards_reused == len(list(out.rglob("*.tar")))
    assert state() == before  # the manifest too: it no longer records the run's history
    assert read_history(out) == history and len(history) >= 1
    assert "changes" not in read_manifest(out).data and history[0]["changes"]["layout"].startswith(
        "new layout"
    )


def test_changed_settings_rewrite_and_shrinking_removes_stale_shards(src, done, tmp_path):
    out, _ = done
    from preprocessing.plan import SettingsWouldRewrite

    work = tmp_path / "work"
    preprocess(src, work, SETTINGS, workers=1, progress=False)
    before = digest(work)
    # Issue 22.13: other settings on a populated OUT rewrote every shard without a word
    # (the README's deployment example re-sharded the demo's root). Refused unless asked.
    with pytest.raises(SettingsWouldRewrite, match=r"shard_size=10 -> 20.*--rewrite"):
        preprocess(src, work, PrepareSettings(shard_size=20), workers=1, progress=False)
    assert digest(work) == before
    cli = [sys.executable, "-m", "flows.cli", "preprocess", str(src), str(work), "--workers", "1"]
    refused = subprocess.run([*cli, "--quality", "90"], capture_output=True, text=True)
    assert refused.returncode != 0 and "quality=95 -> 90" in refused.stderr
    assert "Traceback" not in refused.stderr and digest(work) == before
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    flow_cli = [sys.executable, "-m", "flows.cli", "reprocess", str(src), str(work)]
    early = subprocess.run(
        [*flow_cli, "--shard-size", "20"], capture_output=True, text=True, env=env
    )
    assert early.returncode == 2 and "shard_size=10 -> 20" in early.stderr  # before any server:
    assert not (work / ".prefect").exists() and digest(work) == before  # nothing started
    report = preprocess(
        src, work, PrepareSettings(shard_size=20), workers=1, progress=False, rewrite=True
    )
    assert report.shards_written == 3 + 1 and report.shards_removed == 2 + 1  # train + val
    assert sorted(p.name for p in (work / "shards/train").glob("*.tar")) == [
        f"train-{i:06d}.tar" for i in range(3)
    ]
    assert not list(work.rglob("*.tmp-*"))
    assert read_manifest(work).data["counts"] == read_manifest(out).data["counts"]


def preprocess_killed_when(src: Path, out: Path, done: Callable[[], bool]) -> list[str]:
    """Run `alexnet preprocess` (shards of 2) and SIGKILL it once `done()`; return the command."""
    exe = str(Path(sys.executable).with_name("alexnet"))
    cmd = [exe, "preprocess", str(src), str(out), "--shard-size", "2", "--workers", "1"]
    proc = subprocess.Popen(
        cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.time() + 120
        while not done():  # the kill point, or a failure: never a kill somewhere else
            assert proc.poll() is None, "finished before it could be killed"
            assert time.time() < deadline, "the kill point was not reached in 120 s"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return cmd


@pytest.mark.parametrize("layout", ["tree", "official"])
def test_resume_after_sigkill_gives_the_same_bytes(src, tmp_path, layout):
    """Killed midway and run again: the bytes of an unbroken run; from a tree, and read in
    place from ILSVRC-2012's archives (issue 25)."""
    import dataclasses

    if layout != "tree":
        src = tmp_path / layout
        generate(src, dataclasses.replace(SPEC, layout=layout))
    killed = tmp_path / "killed"
    cmd = preprocess_killed_when(
        src, killed, lambda: len(list(killed.glob("shards/train/*.json"))) >= 3
    )
    assert not (killed / "manifest.json").exists()
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    # the same bytes as an uninterrupted run with these settings
    fresh = tmp_path / "fresh"
    preprocess(src, fresh, PrepareSettings(shard_size=2), workers=2, progress=False)
    assert digest(killed) == digest(fresh)


def test_incremental_update_killed_midway_resumes_to_the_same_bytes(src, tmp_path):
    """An update of an existing OUT, killed after some shards were rewritten, then re-run."""
    source, killed, clean = tmp_path / "src", tmp_path / "killed", tmp_path / "clean"
    shutil.copytree(src, source)
    preprocess(source, killed, PrepareSettings(shard_size=2), workers=1, progress=False)
    shutil.copytree(killed, clean)
    train = sorted((source / "train").rglob("*.JPEG"))
    for path in train[::5]:  # deletions spread over many shards
        path.unlink()
    for i in range(5):  # and new images
        Image.new("RGB", (300, 260), (50 * i, 90, 200)).save(train[1].with_name(f"new{i}.JPEG"))
    preprocess(source, clean, PrepareSettings(shard_size=2), workers=1, progress=False)

    started = time.time_ns()

    def two_rewritten() -> bool:
        records = killed.glob("shards/train/*.json")
        return sum(p.stat().st_mtime_ns > started for p in records) >= 2

    cmd = preprocess_killed_when(source, killed, two_rewritten)
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    assert digest(killed) == digest(clean)
    changes = read_history(killed)[-1]["changes"]["splits"]["train"]
    assert len(changes["deleted"]) == len(train[::5]) and len(changes["added"]) == 5


def test_refuses_foreign_or_nested_output(src, tmp_path):
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError, match=r"thesis\.tex"):
        preprocess(src, foreign, SETTINGS, workers=1, progress=False)
    assert [p.name for p in foreign.iterdir()] == ["thesis.tex"]
    with pytest.raises(ValueError, match="inside the source"):
        preprocess(src, src / "train" / "out", SETTINGS, workers=1, progress=False)


def test_other_layouts(tmp_path):
    """val/<wnid>/ folders, a plain 'filename index' list, no synset mapping."""
    root = tmp_path / "src"
    generate(root, SampleSpec(classes=3, train_per_class=3, val_per_class=2, quirks=0))
    rows = (root / "LOC_val_solution.csv").read_text().splitlines()[1:]
    wnids = [line.split()[0] for line in (root / "LOC_synset_mapping.txt").read_text().splitlines()]
    (root / "LOC_synset_mapping.txt").unlink()

    (root / "LOC_val_solution.csv").rename(tmp_path / "kaggle.csv")
    with pytest.raises(ValueError, match="no labels file"):
        preprocess(root, tmp_path / "o0", SETTINGS, workers=1, progress=False)

    plain = tmp_path / "val.txt"
    plain.write_text(
        "".join(f"{r.split(',')[0]}.JPEG {wnids.index(r.split(',')[1].split()[0])}\n" for r in rows)
    )
    m1 = preprocess(
        root, tmp_path / "o1", SETTINGS, val_labels=plain, workers=1, progress=False
    ).manifest.data
    assert [c["wnid"] for c in m1["classes"]] == sorted(wnids)
    assert m1["splits"]["val"]["count"] == 6 and m1["counts"]["rejected"] == 0

    for r in rows:  # reorganise val/ into class folders
        image_id, wnid = r.split(",")[0], r.split(",")[1].split()[0]
        (root / "val" / wnid).mkdir(exist_ok=True)
        (root / "val" / f"{image_id}.JPEG").rename(root / "val" / wnid / f"{image_id}.JPEG")
    m2 = preprocess(root, tmp_path / "o2", SETTINGS, workers=1, progress=False).manifest.data
    labels1 = {
        s.meta["path"].split("/")[-1]: s.cls
        for s in iter_samples(shard_paths(tmp_path / "o1", "val"))
    }
    labels2 = {
        s.meta["path"].split("/")[-1]: s.cls
        for s in iter_samples(shard_paths(tmp_path / "o2", "val"))
    }
    assert labels1 == labels2 and m2["splits"]["val"]["count"] == 6


def test_cli_preprocess(src, tmp_path):
    exe = str(Path(sys.executable).with_name("alexnet"))
    out = tmp_path / "cli"
    res = subprocess.run(
        [exe, "preprocess", str(src), str(out), "--workers", "1", "--splits", "val"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert "val: 12 images in 1 shards, 0 rejected" in res.stdout
    assert "preprocess: 12/12 images" in res.stderr  # log-friendly progress lines off a terminal
    bad = subprocess.run(
        [exe, "preprocess", str(tmp_path / "nope"), str(out)], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "does not exist" in bad.stderr and "Traceback" not in bad.stderr


def test_verify_finds_every_kind_of_damage(done, tmp_path, capsys):
    from flows.cli import main
    from shards.verify import verify

    out = tmp_path / "copy"
    shutil.copytree(done[0], out)
    good = verify(out, deep=True)
    assert good.problems == [] and good.samples == read_manifest(out).data["counts"]["written"]
    assert main(["verify", str(out), "--deep"]) == 0

    shards = shard_paths(out, "train")
    flipped = bytearray(shards[0].read_bytes())
    flipped[700] ^= 0xFF  # inside the first image's bytes: the tar still parses
    shards[0].write_bytes(bytes(flipped))
    with open(shards[1], "r+b") as f:
        f.truncate(3000)
    (shards[2].with_suffix(".stats.npz")).unlink()
    (out / "shards/val" / read_manifest(out).data["splits"]["val"]["shards"][0]["shard"]).unlink()
    problems = verify(out, deep=True).problems
    assert any(p.startswith("train/train-000000.tar: sha256 differs") for p in problems)
    assert any(p.startswith("train/train-000001.tar: 3000 bytes") for p in problems)
    assert any("train-000001.tar: truncated" in p for p in problems)  # the deep parse
    assert any(p == "train/train-000002.stats.npz: missing" for p in problems)
    assert any(p == "val/val-000000.tar: missing" for p in problems)
    capsys.readouterr()
    assert main(["verify", str(out)]) == 1
    assert "problems in" in capsys.readouterr().out


def test_dry_run_writes_nothing_and_its_counts_are_what_the_run_then_does(src, tmp_path):
    from preprocessing.prepare import dry_run

    source, out = tmp_path / "src", tmp_path / "out"
    shutil.copytree(src, source)
    settings = PrepareSettings(shard_size=4)
    fresh = dry_run(source, out, settings)
    assert not out.exists()  # not even the folder
    report = preprocess(source, out, settings, workers=1, progress=False)
    manifest = report.manifest.data
    for split, counts in fresh.splits.items():
        assert counts["shards"] == counts["write"] == len(manifest["splits"][split]["shards"])
        assert counts["keep"] == counts["rewrite"] == counts["remove"] == 0
    listed = sum(c["inputs"] for c in fresh.splits.values()) + fresh.unlisted
    assert listed == manifest["counts"]["inputs"]
    assert sum(c["write"] for c in fresh.splits.values()) == report.shards_written

    # Change the source: some deleted, one changed, some added; plan, then run.
    train = sorted((source / "train").rglob("*.JPEG"))
    for path in train[:3]:
        path.unlink()
    Image.new("RGB", (300, 260), (10, 90, 200)).save(train[5])  # same name, new content
    for i in range(6):
        Image.new("RGB", (300, 260), (40 * i, 90, 20)).save(train[7].with_name(f"new{i}.JPEG"))
    before = digest(out) | {".shards-seen.json": (out / ".shards-seen.json").read_text()}
    plan = dry_run(source, out, settings)
    assert digest(out) | {".shards-seen.json": (out / ".shards-seen.json").read_text()} == before
    update = preprocess(source, out, settings, workers=1, progress=False)
    train_plan = plan.splits["train"]
    assert (train_plan["added"], train_plan["changed"], train_plan["deleted"]) == (6, 1, 3)
    changes = read_history(out)[-1]["changes"]["splits"]["train"]
    assert train_plan["rewrite"] == len(changes["shards_rewritten"])
    assert train_plan["write"] == len(changes["shards_added"])
    written = sum(c["write"] + c["rewrite"] for c in plan.splits.values())
    assert written == update.shards_written
    assert sum(c["keep"] for c in plan.splits.values()) == update.shards_reused
    assert plan.splits["val"] == dict(
        fresh.splits["val"], keep=fresh.splits["val"]["shards"], write=0
    )


def test_scale_benchmark_runs_every_step_at_a_tiny_size(tmp_path):
    """benchmarks/scale.py at 2,000 + 200 files (its full size is 1.33M; see its table in
    benchmarks/README.md): every step runs, the re-run does nothing, 1% changed is seen."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "scale.py"
    work = tmp_path / "scale"
    cmd = [sys.executable, str(script), str(work), "--train", "2000", "--val", "200"]
    res = subprocess.run(
        [*cmd, "--pool", "40", "--real-shards", "1"], capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads((work / "scale.json").read_text())
    for step in ("listing", "plan", "(write)", "adopt", "rerun", "verify", "stats", "replan"):
        assert result[step]["wall_s"] > 0 and result[step]["main_mib"] > 0, step
    assert any("nothing to do" in line for line in result["rerun_output"])
    train_row = next(r for r in result["replan_output"] if r.startswith("train")).split()
    assert train_row[1:3] == ["2000", "2"] and int(train_row[8]) == result["changed_files"] == 1000
    assert sorted(p.name for p in work.iterdir()) == ["scale.json"]  # cleaned up


def _tiny_tree(root: Path) -> Path:
    generate(root, SampleSpec(classes=3, train_per_class=3, val_per_class=2, quirks=0, seed=4))
    return root


def test_hostile_names_and_shapes_are_rejects_not_a_stopped_stage(tmp_path):
    """Issues 22.3, 22.5, 22.15: an 80000x1 PNG stopped the whole stage (MemoryError,
    exit 2, no file named), a name that is not UTF-8 refused the whole tree (also with
    --dry-run), and `a.b.JPEG` beside `a_b.JPEG` lost one of them as a duplicate key. Now
    the two bad inputs are rejects naming them and every other input is in a shard."""
    from preprocessing.prepare import dry_run

    root = _tiny_tree(tmp_path / "src")
    folder = sorted((root / "train").iterdir())[0]
    one = sorted(folder.iterdir())[0]
    Image.fromarray(np.full((1, 80_000, 3), 7, np.uint8)).save(folder / "strip.png")
    bad_name = os.fsdecode(b"bad\xff\xfe.JPEG")
    shutil.copy(one, folder / bad_name)
    shutil.copy(one, folder / "a.b.JPEG")
    shutil.copy(one, folder / "a_b.JPEG")
    plan = dry_run(root, tmp_path / "out", SETTINGS)
    assert plan.splits["train"]["inputs"] == 9 + 3 and plan.unlisted == 1
    report = preprocess(root, tmp_path / "out", SETTINGS, workers=1, progress=False)
    assert report.written == 9 + 6 + 2 and report.rejected == 2
    for split, entry in report.manifest.data["splits"].items():  # the listing's reject counts too
        assert entry["inputs"] == entry["count"] + entry["rejected"], split
    assert report.manifest.data["splits"]["train"]["rejected"] == 2
    rejects = {
        r["path"]: r["reason"]
        for r in map(json.loads, (tmp_path / "out/rejects.jsonl").read_text().splitlines())
    }
    assert "extreme aspect ratio: 80000x1" in rejects[f"train/{folder.name}/strip.png"]
    assert "not valid UTF-8" in rejects[f"train/{folder.name}/bad\\xff\\xfe.JPEG"]
    keys = [s.key for s in iter_samples(shard_paths(tmp_path / "out", "train"))]
    assert len(keys) == len(set(keys)) == 11
    ab = sorted(k for k in keys if k.startswith(f"{folder.name}/a_b"))
    assert ab[0] == f"{folder.name}/a_b" and len(ab) == 2  # a.b.JPEG first, a_b.JPEG suffixed


def test_label_files_with_a_bom_missing_classes_or_conflicts(tmp_path):
    """Issues 22.4 and 22.15: a BOM in LOC_synset_mapping.txt made class 0's wnid
    '\\ufeffn01...' and rejected all its images (exit 0); an empty mapping, a mapped class
    with no folder and an image labelled twice with two classes were silent."""
    from preprocessing.source import scan

    root = _tiny_tree(tmp_path / "src")
    mapping = root / "LOC_synset_mapping.txt"
    text = mapping.read_text()
    mapping.write_bytes(b"\xef\xbb\xbf" + text.encode())
    tree = scan(root)
    assert tree.classes[0][0] == text.split()[0] and not tree.rejects
    assert {f.label for f in tree.files["train"]} == {0, 1, 2}

    mapping.write_text(text + "n99999999 a class with no folder\n")
    with pytest.raises(ValueError, match=r"1 class.*no folder.*n99999999"):
        scan(root)
    mapping.write_text("")
    with pytest.raises(ValueError, match="is empty: it names no class"):
        scan(root)
    mapping.write_text(text)

    labels = root / "LOC_val_solution.csv"
    rows = labels.read_text().splitlines()
    image_id, wnid = rows[1].split(",")[0], rows[1].split(",")[1].split()[0]
    other = next(w for w in text.split() if w.startswith("n") and w != wnid)
    labels.write_text("\n".join([*rows, f"{image_id},{other} 1 2 3 4"]) + "\n")
    with pytest.raises(ValueError, match=f"{image_id}.*labelled both"):
        scan(root)
    labels.write_text("\n".join([*rows, rows[1]]) + "\n")  # the same line twice is harmless
    assert len(scan(root).files["val"]) == 6


def test_a_val_class_with_no_training_image_is_a_warning(tmp_path):
    root = _tiny_tree(tmp_path / "src")
    lonely = sorted((root / "train").iterdir())[-1]
    for f in lonely.iterdir():
        f.unlink()
    report = preprocess(root, tmp_path / "out", SETTINGS, workers=1, progress=False)
    assert len(report.warnings) == 1 and lonely.name in report.warnings[0]


def test_the_train_order_is_the_seeds_and_val_keeps_source_order(src, done, tmp_path):
    """Issue 23: a train order that ignored --seed survived every test (none preprocessed
    with another seed). The order is sha256(seed, key), computed here independently."""
    out, _ = done
    other = tmp_path / "seed1"
    preprocess(src, other, PrepareSettings(shard_size=10, seed=1), workers=1, progress=False)

    def keys(root: Path, split: str) -> list[str]:
        return [s.key for s in iter_samples(shard_paths(root, split))]

    def by_seed(seed: int, ks: list[str]) -> list[str]:
        return sorted(ks, key=lambda k: hashlib.sha256(f"{seed}\0{k}".encode()).digest())

    zero, one = keys(out, "train"), keys(other, "train")
    assert sorted(zero) == sorted(one) and zero != one
    assert zero == by_seed(0, zero) and one == by_seed(1, zero)
    assert keys(out, "val") == keys(other, "val") == sorted(keys(out, "val"))


def test_a_flat_val_image_without_a_label_is_a_reject_not_dropped(tmp_path):
    """Issue 23: dropping an unlabelled flat-val image silently survived every test."""
    root = _tiny_tree(tmp_path / "src")
    extra = root / "val" / "ILSVRC2012_val_99999999.JPEG"
    shutil.copy(sorted((root / "val").glob("*.JPEG"))[0], extra)
    report = preprocess(root, tmp_path / "out", SETTINGS, workers=1, progress=False)
    rejects = [json.loads(x) for x in (tmp_path / "out/rejects.jsonl").read_text().splitlines()]
    assert rejects == [
        {
            "path": "val/ILSVRC2012_val_99999999.JPEG",
            "reason": "no label in LOC_val_solution.csv",
            "split": "val",
        }
    ]
    assert report.inputs == report.written + 1


@pytest.mark.parametrize("layout", ["kaggle", "official"])
def test_each_download_form_gives_the_same_shards_as_the_tree(tmp_path, layout):
    """Issue 25: SRC as the Kaggle download unpacks (ILSVRC/Data/CLS-LOC/{train,val,test}/,
    the labels files beside ILSVRC/), or as ILSVRC-2012's official files (the train tar of
    class tars, the val tar, the devkit with IDs out of wnid order and internal synsets),
    read in place, is found by itself; its images get the tree's paths, keys and labels:
    every shard is byte for byte the tree's, and the rejects are the same."""
    import dataclasses

    made = {}
    for form in ("tree", layout):
        src = tmp_path / form
        generate(src, dataclasses.replace(SPEC, layout=form))
        out = tmp_path / f"out-{form}"
        # the archives listed by 2 Dask workers: the same shards as the tree's in one process
        workers = 2 if form == "official" else 1
        report = preprocess(src, out, SETTINGS, workers=workers, progress=False)
        digests = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.rglob("*.tar")}
        made[form] = (report, digests, (out / "rejects.jsonl").read_text())
    assert not (tmp_path / layout / "train").exists()  # nothing extracted, nothing in the tree form
    (tree, tree_tars, tree_rejects), (other, other_tars, other_rejects) = made.values()
    assert tree_tars and other_tars == tree_tars
    assert other_rejects == tree_rejects  # the same undecodable quirks, by the same paths
    n = SPEC.classes * (SPEC.train_per_class + SPEC.val_per_class)
    assert other.inputs == tree.inputs == n  # Kaggle's test/ is not read
    assert other.manifest.classes == tree.manifest.classes  # sorted wnids, with their names
    if layout == "official":  # an identical archive downloaded again rewrites nothing
        os.utime(tmp_path / layout / "ILSVRC2012_img_train.tar", (1, 1))
        again = preprocess(tmp_path / layout, tmp_path / f"out-{layout}", SETTINGS, workers=1)
        assert again.shards_written == 0 and not again.cluster_started


def test_the_archives_index_is_kept_resumed_and_checked(tmp_path):
    """Issue 25: the official archives are listed once per class tar into OUT/.index (each
    image's offset, size and CRC-32). A run killed while listing (some listings written, a
    writer's temporary left) lists only the rest, to the same index and shards; a re-run
    reads no archive through again, so an image changed in place under an unchanged header
    is caught when it is read for its shard (an error, nothing written from it), and once
    the index is deleted it is listed again and found changed by its content."""
    import dataclasses
    import tarfile

    from preprocessing.index import INDEX

    src, out = tmp_path / "official", tmp_path / "out"
    generate(src, dataclasses.replace(SPEC, layout="official", quirks=0))
    preprocess(src, out, SETTINGS, workers=1, progress=False)
    index = out / INDEX
    listings = sorted(p.relative_to(index) for p in index.rglob("*.json"))
    assert len(listings) == SPEC.classes + 1  # a class tar each, and the val tar
    kept = {p: (index / p).read_bytes() for p in listings}
    shards = digest(out)

    for p in listings[::2]:  # "killed" midway through the listing
        (index / p).unlink()
    (index / "train" / "n00000000-0000.json.tmp-killed").write_text("{")  # a writer's half
    again = preprocess(src, out, SETTINGS, workers=1, progress=False)
    assert again.shards_written == 0
    assert {p: (index / p).read_bytes() for p in listings} == kept
    assert sorted(p.relative_to(index) for p in index.rglob("*") if p.is_file()) == listings
    assert digest(out) == shards

    train = src / "ILSVRC2012_img_train.tar"
    with tarfile.open(train) as outer:  # one image's bytes changed, every header as it was
        first = outer.getmembers()[0]
        with tarfile.open(fileobj=outer.extractfile(first)) as inner:
            image = inner.getmembers()[0]
    at = first.offset_data + image.offset_data + image.size // 2
    data = bytearray(train.read_bytes())
    data[at] ^= 0xFF
    train.write_bytes(bytes(data))
    relpath = f"train/{first.name.removesuffix('.tar')}/{Path(image.name).name}"
    (holder,) = [p for p in (out / "shards/train").glob("*.json") if relpath in p.read_text()]
    for shard in (out / "shards/train").glob("*.tar"):  # to be written again: every image read
        shard.unlink()
    with pytest.raises(RuntimeError, match="changed since it was indexed"):
        preprocess(src, out, SETTINGS, workers=1, progress=False)
    assert not holder.with_suffix(".tar").exists()  # no shard written from the changed bytes

    shutil.rmtree(index)
    changed = preprocess(src, out, SETTINGS, workers=1, progress=False)
    train_changes = read_history(out)[-1]["changes"]["splits"]["train"]
    assert train_changes["changed"] == [relpath]  # the same size and header: by its CRC-32
    assert changed.shards_written >= 1


def test_damaged_official_archives_are_clear_errors_or_rejects(tmp_path):
    """A truncated train tar is an error naming it; a class tar that cannot be read is a
    reject of its class; a val tar and a ground truth of different lengths is an error."""
    import dataclasses
    import tarfile

    src = tmp_path / "official"
    generate(src, dataclasses.replace(SPEC, layout="official", quirks=0))
    train = src / "ILSVRC2012_img_train.tar"
    whole = train.read_bytes()
    train.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match=r"ILSVRC2012_img_train\.tar cannot be read to its end"):
        preprocess(src, tmp_path / "out1", SETTINGS, workers=1, progress=False)

    with tarfile.open(fileobj=io.BytesIO(whole)) as outer:  # the first class tar corrupted
        first = outer.getmembers()[0]
    broken = bytearray(whole)
    broken[first.offset_data : first.offset_data + 512] = b"\xff" * 512
    train.write_bytes(bytes(broken))
    report = preprocess(src, tmp_path / "out2", SETTINGS, workers=1, progress=False)
    wnid = first.name.removesuffix(".tar")
    rejects = [
        json.loads(line) for line in (tmp_path / "out2/rejects.jsonl").read_text().splitlines()
    ]
    assert [r["path"] for r in rejects] == [f"train/{wnid}/"]
    assert "cannot be read" in rejects[0]["reason"]
    assert report.written == SPEC.classes * (SPEC.train_per_class + SPEC.val_per_class) - 12

    # a damaged header past the first one (tarfile alone would just stop there, silently
    # missing every image after it): the train tar's, an error; a class tar's, a reject
    with tarfile.open(fileobj=io.BytesIO(whole)) as outer:
        third = outer.getmembers()[2]
        with tarfile.open(fileobj=outer.extractfile(first)) as inner:
            second = first.offset_data + inner.getmembers()[1].offset
    for at, name in ((third.offset, "out4"), (second, "out5")):
        broken = bytearray(whole)
        broken[at : at + 8] = b"garbage!"
        train.write_bytes(bytes(broken))
        if name == "out4":
            with pytest.raises(ValueError, match="a damaged tar header at byte"):
                preprocess(src, tmp_path / name, SETTINGS, workers=1, progress=False)
        else:
            preprocess(src, tmp_path / name, SETTINGS, workers=1, progress=False)
            rejects = (tmp_path / name / "rejects.jsonl").read_text().splitlines()
            assert [json.loads(r)["path"] for r in rejects] == [f"train/{wnid}/"]
    train.write_bytes(whole)

    val = src / "ILSVRC2012_img_val.tar"
    with tarfile.open(val) as tar:  # one image fewer than the ground truth labels
        kept = [(m, tar.extractfile(m).read()) for m in tar.getmembers()[1:]]
    with tarfile.open(val, "w") as tar:
        for m, data in kept:
            tar.addfile(m, io.BytesIO(data))
    with pytest.raises(ValueError, match="holds 11 images, the devkit's ground truth labels 12"):
        preprocess(src, tmp_path / "out3", SETTINGS, workers=1, progress=False)
