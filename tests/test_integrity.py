"""Hostile use (issue 13): damaged data is never used, no two runs share a folder.

Each test starts from a fresh copy of one small, complete data root and damages
it the way issue 13's reproductions did: a flipped byte inside an image, a
shard cut at a sample boundary or in the middle of a sample, a flipped tar
header. Training, evaluation, the statistics from pixels and `verify` must
each stop with a clear error that names the shard and the sample; preprocess
must rewrite the damaged shard.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from preprocessing.prepare import PrepareSettings, preprocess
from preprocessing.sample_data import SampleSpec, generate
from preprocessing.stats import compute_stats
from shards.reader import DamagedShard, iter_samples, shard_paths
from shards.verify import verify
from training.checkpoint import load_checkpoint
from training.config import resolve
from training.train import TrainingDiverged, train

TINY = ["model.width=0.0625", "batch_size=8", "epochs=1", "loader_workers=2", "log_every=1"]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("integrity")
    spec = SampleSpec(classes=3, train_per_class=10, val_per_class=4, quirks=0, max_side=300)
    generate(root / "src", spec)
    preprocess(
        root / "src", root / "out", PrepareSettings(shard_size=10), workers=1, progress=False
    )
    compute_stats(root / "out", workers=1)
    return root


@pytest.fixture
def data(pristine, tmp_path):
    shutil.copytree(pristine / "src", tmp_path / "src")
    shutil.copytree(pristine / "out", tmp_path / "out")
    return tmp_path / "src", tmp_path / "out"


def sample_offsets(tar: Path) -> list[int]:
    """The byte offset where each sample (3 members) starts, and the end of the last."""
    raw, offsets, pos, member = tar.read_bytes(), [], 0, 0
    while raw[pos : pos + 512] != bytes(512):
        if member % 3 == 0:
            offsets.append(pos)
        size = int(raw[pos + 124 : pos + 136].split(b"\0")[0].strip() or b"0", 8)
        pos += 512 + size + (-size % 512)
        member += 1
    return [*offsets, pos]


def n_shards(out: Path) -> int:
    return sum(len(shard_paths(out, split)) for split in ("train", "val"))


def flip(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x5A
    path.write_bytes(bytes(raw))


def flip_in_second_image(tar: Path) -> None:
    flip(tar, sample_offsets(tar)[1] + 512 + 700)  # inside the image's entropy-coded data


def test_a_flipped_byte_in_an_image_stops_every_reader(data):
    _, out = data
    tar = shard_paths(out, "train")[0]
    flip_in_second_image(tar)
    message = rf"{tar.name}: sample 2 of \d+ .* is damaged"
    with pytest.raises(DamagedShard, match=message):
        list(iter_samples([tar]))
    with pytest.raises(DamagedShard, match=message):  # from a loader worker, as itself
        train(out, "flipped", resolve("smoke", overrides=TINY), progress=False)
    with pytest.raises(DamagedShard, match=message):
        compute_stats(out, from_pixels=True, workers=1)
    assert any("damaged" in p for p in verify(out, deep=True).problems)


def test_a_valid_shard_from_another_data_root_is_refused_by_the_readers(data, tmp_path):
    """Issue 22.7: a shard and its record copied from another root (valid, intact, the
    same name) were read by evaluation; only `verify` noticed. Readers now hold each
    shard to the manifest's size, count and sha256 when they open it."""
    from preprocessing.image import ImageSettings

    src, out = data
    other = tmp_path / "other"
    settings = PrepareSettings(shard_size=10, image=ImageSettings(quality=80))
    preprocess(src, other, settings, workers=1, progress=False)
    ours, theirs = shard_paths(out, "val")[0], shard_paths(other, "val")[0]
    assert ours.name == theirs.name and ours.read_bytes() != theirs.read_bytes()
    list(iter_samples([ours]))  # intact before
    kept = ours.read_bytes()
    pristine_record = tmp_path / "record.json"
    shutil.copy(ours.with_suffix(".json"), pristine_record)
    shutil.copy(theirs.with_suffix(".json"), ours.with_suffix(".json"))  # their record alone
    with pytest.raises(DamagedShard, match="not the one of the shard the manifest lists"):
        list(iter_samples([ours]))
    shutil.copy(theirs, ours)  # and their tar: a valid pair, but not the listed one
    with pytest.raises(DamagedShard, match="not the one of the shard the manifest lists"):
        list(iter_samples(shard_paths(out, "val")))
    shutil.copy(pristine_record, ours.with_suffix(".json"))  # their tar under our record
    with pytest.raises(DamagedShard, match=r"sample 1 of .* is damaged"):
        list(iter_samples([ours]))
    old = json.loads(pristine_record.read_text())
    del old["checksums"]  # a record from before per-sample checksums: the size still tells
    ours.with_suffix(".json").write_text(json.dumps(old))
    with pytest.raises(DamagedShard, match=r"bytes, the manifest lists \d+: not the shard"):
        list(iter_samples([ours]))
    ours.write_bytes(kept)
    assert list(iter_samples([theirs]))  # in its own root it is fine


def test_evaluation_refuses_a_damaged_val_shard(data):
    _, out = data
    train(out, "ok", resolve("smoke", overrides=TINY), progress=False)
    from training.evaluate import evaluate

    tar = shard_paths(out, "val")[0]
    flip_in_second_image(tar)
    with pytest.raises(DamagedShard, match=rf"{tar.name}: sample 2 of"):
        evaluate(out, "ok", crops=1, figures=False)


def test_a_shard_cut_at_a_sample_boundary_is_short_not_silently_smaller(data):
    _, out = data
    tar = shard_paths(out, "train")[0]
    cut = sample_offsets(tar)[6]  # 6 whole samples of 10
    tar.write_bytes(tar.read_bytes()[:cut])
    with pytest.raises(DamagedShard, match=rf"{tar.name}: 6 samples, its record lists 10"):
        train(out, "short", resolve("smoke", overrides=TINY), progress=False)


def test_a_shard_cut_inside_a_sample_names_the_shard(data):
    _, out = data
    tar = shard_paths(out, "train")[1]
    offsets = sample_offsets(tar)
    for cut in (offsets[3] + 512 + 100, offsets[4] - 600):  # in the image; after it, in cls/json
        tar.write_bytes(tar.read_bytes()[:cut])
        with pytest.raises(DamagedShard, match=tar.name) as err:
            train(out, f"cut{cut}", resolve("smoke", overrides=TINY), progress=False)
        assert "KeyError" not in str(err.value) and "Traceback" not in str(err.value)


def test_a_flipped_header_is_one_clear_line_from_the_command(data):
    _, out = data
    tar = shard_paths(out, "train")[2]
    flip(tar, sample_offsets(tar)[2] + 10)  # inside a member's name: the header checksum fails
    exe = str(Path(sys.executable).with_name("alexnet"))
    cmd = [exe, "train", str(out), "--run", "hdr", "--preset", "smoke"]
    for kv in TINY:
        cmd += ["--set", kv]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2
    lines = [x for x in res.stderr.splitlines() if x.startswith("alexnet: error")]
    assert len(lines) == 1 and tar.name in lines[0] and "bad header checksum" in lines[0]
    assert "Traceback" not in res.stderr and "DataLoader" not in res.stderr


def test_preprocess_rewrites_a_damaged_shard_instead_of_calling_it_complete(data):
    src, out = data
    tar = shard_paths(out, "train")[0]
    before = tar.read_bytes()
    flip_in_second_image(tar)
    report = preprocess(src, out, PrepareSettings(shard_size=10), workers=1, progress=False)
    assert report.shards_written == 1 and report.shards_reused == n_shards(out) - 1
    assert tar.read_bytes() == before  # the same bytes as written the first time
    assert len(list(iter_samples([tar]))) == 10
    again = preprocess(src, out, PrepareSettings(shard_size=10), workers=1, progress=False)
    assert again.shards_written == 0


def _hold(lock_of: str, out: Path, run: str = "") -> subprocess.Popen:
    """Another process holding a lock, as a running preprocess or train would."""
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from shards.dataroot import locked\n"
        "from shards.atomic import one_writer\n"
        f"out = Path({str(out)!r})\n"
        f"ctx = locked(out) if {lock_of!r} == 'root' else "
        f"one_writer(out / 'runs' / '.{run}.lock', 'run')\n"
        "with ctx:\n"
        "    print('held', flush=True)\n"
        "    time.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _start_training(out: Path, run: str) -> subprocess.Popen:
    """`alexnet train` of a tiny 3-epoch run in another process (its stderr piped)."""
    settings = [a for kv in [*TINY, "epochs=3"] for a in ("--set", kv)]
    command = [str(Path(sys.executable).with_name("alexnet")), "train", str(out), "--run", run]
    return subprocess.Popen(
        [*command, "--preset", "smoke", *settings],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_trainings_of_one_run_cannot_share_its_folder(data):
    _, out = data
    first = _start_training(out, "dup")
    lock = out / "runs" / ".dup.lock"
    try:
        for _ in range(600):  # until the first holds the run
            if lock.is_file() and f"pid {first.pid}" in lock.read_text():
                break
            time.sleep(0.05)
        config = resolve("smoke", overrides=[*TINY, "seed=7"])
        with pytest.raises(RuntimeError, match=rf"run 'dup' .* in use: pid {first.pid} on "):
            train(out, "dup", config, progress=False)
    finally:
        _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    run_dir = out / "runs" / "dup"
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["seed"] == 0 == load_checkpoint(run_dir / "checkpoints/last.pt")["config"]["seed"]
    steps = [json.loads(x)["step"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps)  # one writer: no interleaved lines


def test_stats_waits_for_no_one_while_preprocess_holds_the_root(data):
    _, out = data
    holder = _hold("root", out)  # as a preprocess of OUT in progress would
    try:
        with pytest.raises(RuntimeError, match=rf"data root .* in use: pid {holder.pid} on "):
            compute_stats(out, workers=1)
    finally:
        holder.kill()
        holder.communicate()
    environment = dict(os.environ)
    compute_stats(out, workers=1)  # free again once the holder is gone
    # and Dask left this process's environment alone (it used to set OMP_NUM_THREADS=1,
    # which every process started afterwards inherited)
    assert dict(os.environ) == environment


def test_a_running_trainer_keeps_preprocess_and_stats_off_its_shards(data):
    """Issue 22.8: preprocess and stats rewrote the shards under a running trainer (both
    exit 0; the stats then no longer described the shards). A trainer (and evaluation)
    holds OUT's lock shared; preprocess and stats refuse, naming it; and while they hold
    it, training refuses, naming them."""
    src, out = data
    trainer = _start_training(out, "reader")
    notes = out / ".lock.readers"
    try:
        for _ in range(600):  # until the trainer holds the root shared
            if notes.is_dir() and any(
                f"pid {trainer.pid}" in n.read_text() for n in notes.iterdir()
            ):
                break
            time.sleep(0.05)
        before = {p: p.stat().st_mtime_ns for p in (out / "shards").rglob("*")}
        held = rf"is being read: pid {trainer.pid} on .*alexnet train"
        with pytest.raises(RuntimeError, match=held):
            preprocess(src, out, PrepareSettings(shard_size=7), workers=1, progress=False)
        with pytest.raises(RuntimeError, match=held):
            compute_stats(out, workers=1)
        assert {p: p.stat().st_mtime_ns for p in (out / "shards").rglob("*")} == before
    finally:
        _, err = trainer.communicate(timeout=300)
    assert trainer.returncode == 0, err[-2000:]
    assert not list(notes.iterdir())  # each reader removes its note
    holder = _hold("root", out)  # as a preprocess of OUT in progress would
    try:
        with pytest.raises(RuntimeError, match=rf"is being written: pid {holder.pid} on "):
            train(out, "blocked", resolve("smoke", overrides=TINY), progress=False)
    finally:
        holder.kill()
        holder.communicate()


def test_a_run_that_died_before_its_first_checkpoint_can_be_started_again(data):
    _, out = data
    diverging = resolve("smoke", overrides=[*TINY, "lr=1e6", "input_scale=1e6"])
    with pytest.raises(TrainingDiverged, match="none \\(no epoch completed\\)"):
        train(out, "early", diverging, progress=False)
    run_dir = out / "runs" / "early"
    assert not (run_dir / "checkpoints" / "last.pt").exists()
    with pytest.raises(FileExistsError, match="no checkpoint: --resume starts it again"):
        train(out, "early", diverging, progress=False)
    saved = json.loads((run_dir / "config.json").read_text())  # the user fixes the settings
    (run_dir / "config.json").write_text(json.dumps({**saved, "lr": 0.01, "input_scale": 1 / 64}))
    result = train(out, "early", resume=True, progress=False)
    assert result.epochs_done == 1 and (run_dir / "checkpoints" / "last.pt").is_file()
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines if "val_top1_error" not in m] == list(
        range(1, result.step + 1)
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["epochs=abc"], "epochs must be an integer, got 'abc'"),
        (["epochs=2.5"], "epochs must be an integer, got 2.5"),
        (["lr=nan"], "lr must be a number, got 'nan'"),
        (["lr=1e999"], "lr must be a number, got inf"),
        (["momentum=abc"], "momentum must be a number, got 'abc'"),
        (["momentum=1.5"], "momentum is out of range: 1.5"),
        (["flip=maybe"], "flip must be true or false, got 'maybe'"),
        (["lighting=3"], "lighting must be a string, got 3"),
        (["model.width=abc"], "model.width must be a number, got 'abc'"),
        (["model.remove_conv=5"], "model.remove_conv must be a string or none, got 5"),
        (["loader_workers=-1"], "loader_workers is out of range"),
    ],
)
def test_wrongly_typed_training_settings_are_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        resolve("smoke", overrides=overrides)


def test_wrongly_typed_settings_in_toml_and_of_the_data_stages(tmp_path):
    toml = tmp_path / "bad.toml"
    toml.write_text('epochs = "three"\n')
    with pytest.raises(ValueError, match="epochs must be an integer, got 'three'"):
        resolve("smoke", config_file=toml)
    assert resolve("smoke", overrides=["lr=1"]).lr == 1.0  # an int is a fine number
    from preprocessing.image import ImageSettings
    from preprocessing.sample_data import SampleSpec

    with pytest.raises(ValueError, match=re.escape("quality must be an integer, got 95.5")):
        ImageSettings(quality=95.5)
    with pytest.raises(ValueError, match="draft must be true or false, got 'yes'"):
        ImageSettings(draft="yes")
    with pytest.raises(ValueError, match="shard_size must be an integer, got '10'"):
        PrepareSettings(shard_size="10")
    with pytest.raises(ValueError, match="classes must be an integer, got 'ten'"):
        SampleSpec(classes="ten")


def test_workers_are_bounded_by_cores_and_tasks(pristine, tmp_path):
    import psutil

    from preprocessing.cluster import bounded_workers, default_workers

    cores = default_workers()
    exe = str(Path(sys.executable).with_name("alexnet"))
    cmd = [
        exe,
        "preprocess",
        str(pristine / "src"),
        str(tmp_path / "o"),
        "--workers",
        "1000",
        "--shard-size",
        "10",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    most = 0
    while proc.poll() is None:
        with contextlib.suppress(psutil.Error):
            most = max(most, len(psutil.Process(proc.pid).children(recursive=True)))
        time.sleep(0.05)
    _, err = proc.communicate()
    assert proc.returncode == 0, err
    assert f"--workers 1000 is more than the {cores} cores: using {cores}" in err
    assert most <= 2 * cores + 4  # a nanny and a worker per worker, and Dask's helpers
    assert bounded_workers(None, 1) == 1 and bounded_workers(3, None) == min(3, cores)


def test_one_stage_cluster_starts_once_and_grows_to_the_tasks():
    """A stage's cluster (the archives' listing, then the shards) starts on the first ask,
    sized for its tasks, and a later ask for more tasks adds workers, up to the cores."""
    from preprocessing.cluster import StageCluster, default_workers

    with StageCluster(workers=2) as cluster:
        assert not cluster.started and cluster.parallel == (default_workers() > 1)
        client = cluster.client(tasks=1)
        assert len(client.scheduler_info()["workers"]) == 1
        assert cluster.client(tasks=4) is client  # the same cluster, grown
        assert len(client.scheduler_info()["workers"]) == min(2, default_workers())
        assert client.submit(sum, [1, 2], pure=False).result() == 3
    assert client.status == "closed"
    assert not StageCluster(workers=1).parallel and StageCluster(address="tcp://x:1").parallel


def test_unreadable_entries_and_symlink_loops_become_rejects(pristine, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(pristine / "src", src)
    folder = next(p for p in sorted((src / "train").iterdir()) if p.is_dir())
    (folder / "loop.JPEG").symlink_to("loop.JPEG")
    (folder / "gone.JPEG").symlink_to("nowhere.JPEG")
    report = preprocess(
        src, tmp_path / "o", PrepareSettings(shard_size=10), workers=1, progress=False
    )
    reasons = {
        r["path"].rsplit("/", 1)[1]: r["reason"]
        for r in map(json.loads, (tmp_path / "o" / "rejects.jsonl").read_text().splitlines())
    }
    assert "symbolic links" in reasons["loop.JPEG"] and "No such file" in reasons["gone.JPEG"]
    assert report.written == 42


def test_label_files_and_malformed_json_give_clear_errors(pristine, tmp_path):
    from preprocessing.source import scan
    from shards.manifest import read_manifest
    from shards.stats import read_stats

    src = tmp_path / "src"
    shutil.copytree(pristine / "src", src)
    csv = src / "LOC_val_solution.csv"
    text = csv.read_text()
    csv.write_bytes(b"")
    with pytest.raises(ValueError, match=re.escape("LOC_val_solution.csv is empty")):
        scan(src)
    csv.write_bytes(b"\xef\xbb\xbf" + text.encode())  # a UTF-8 BOM, as Excel writes it
    assert len(scan(src).files["val"]) == 12
    csv.write_text(text)
    mapping = src / "LOC_synset_mapping.txt"
    mapping.unlink()
    (src / "train" / "n00000001").mkdir()  # sorts first: it would become class 0
    with pytest.raises(ValueError, match="n00000001/ is empty: without LOC_synset_mapping"):
        scan(src)

    out = tmp_path / "out"
    shutil.copytree(pristine / "out", out)
    (out / "manifest.json").write_text("{}")
    with pytest.raises(ValueError, match="not a data root's manifest: no 'classes'"):
        read_manifest(out)
    shutil.copy(pristine / "out" / "manifest.json", out / "manifest.json")
    pca = out / "stats" / "pca.json"
    meta = json.loads(pca.read_text())
    del meta["eigenvalues"]
    pca.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=re.escape("pca.json lacks eigenvalues")):
        read_stats(out)
    pca.unlink()
    assert any("pca.json not found" in p for p in verify(out).problems)


def _limited(max_bytes: int):
    """In the child: files may not grow past `max_bytes` (EFBIG), as a full disk would stop them."""

    def limit() -> None:
        import resource
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return limit


def _temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".tmp-" in p.name]


@pytest.mark.parametrize("stage", ["train", "stats", "preprocess"])
def test_a_write_that_fails_is_one_clear_line_and_leaves_nothing_half_written(data, stage):
    src, out = data
    exe = str(Path(sys.executable).with_name("alexnet"))
    if stage == "train":  # the first checkpoint is larger than the limit
        cmd = [exe, "train", str(out), "--run", "full", "--preset", "smoke"]
        # no loader workers: their shared-memory slots are files too, and larger than this
        cmd += [a for kv in [*TINY, "loader_workers=0"] for a in ("--set", kv)]
        limit, watched = 64 * 1024, out / "runs" / "full"
    elif stage == "stats":  # mean.npy is 768 KiB
        shutil.rmtree(out / "stats")
        cmd, limit, watched = [exe, "stats", str(out), "--workers", "1"], 256 * 1024, out
    else:  # a new data root: its first shard passes the limit
        out = out.parent / "fresh"
        cmd = [exe, "preprocess", str(src), str(out), "--workers", "1", "--shard-size", "10"]
        limit, watched = 64 * 1024, out
    res = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, preexec_fn=_limited(limit)
    )
    errors = [x for x in res.stderr.splitlines() if x.startswith("alexnet: error")]
    assert res.returncode == 2 and len(errors) == 1, res.stderr[-3000:]
    assert "File too large" in errors[0] and "Traceback" not in res.stderr
    named = {"train": "last.pt", "stats": "mean.npy", "preprocess": "-000000.tar"}[stage]
    assert named in errors[0]  # the line says which file could not be written
    assert not _temporaries(watched)
    if stage == "train":
        assert not (watched / "checkpoints" / "last.pt").exists()
    elif stage == "stats":
        assert not (out / "stats" / "pca.json").exists()  # mean.npy failed, so pca.json never began
    else:
        assert not (out / "manifest.json").exists()
        tars = list((out / "shards").rglob("*.tar"))
        assert all(t.with_suffix(".json").is_file() for t in tars)  # every tar there is complete


def test_evaluation_writes_its_outputs_as_one_set(data):
    _, out = data
    train(out, "ev", resolve("smoke", overrides=TINY), progress=False)
    from shards.format import sha256_file
    from training.evaluate import evaluate

    run_dir = out / "runs" / "ev"
    result = evaluate(out, "ev", crops=1)
    listed = json.loads((run_dir / "eval.json").read_text())["files"]
    assert "per_class_error.json" in listed and len(listed) == 1 + len(result["figures"])
    assert all(sha256_file(run_dir / name) == sha for name, sha in listed.items())
    first_written = (run_dir / "per_class_error.json").stat().st_mtime_ns
    # a second evaluation dies while drawing its figures (a file-size limit, as a full disk):
    # its new per_class_error.json is there, and no eval.json says the set is complete
    exe = str(Path(sys.executable).with_name("alexnet"))
    res = subprocess.run(
        [exe, "evaluate", str(out), "--run", "ev", "--crops", "10"],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_limited(2048),
    )
    assert res.returncode == 2, res.stderr[-2000:]
    assert "File too large" in res.stderr and "png" in res.stderr  # it failed on a figure
    assert (run_dir / "per_class_error.json").stat().st_mtime_ns > first_written
    assert not (run_dir / "eval.json").exists()


@pytest.mark.parametrize(
    "doctor, problem",
    [
        (lambda m: {"classes": [], "splits": {}}, "it lists no class"),
        (lambda m: {**m, "classes": [c["wnid"] for c in m["classes"]]}, "class 0 is not"),
        (lambda m: {**m, "classes": m["classes"][:2]}, "the class list is not the one written"),
        (lambda m: {**m, "splits": {}}, "it lists no split"),
    ],
    ids=["empty", "strings", "cut", "no-splits"],
)
def test_a_malformed_manifest_is_one_clear_line_everywhere(data, doctor, problem):
    """Issue 22.10: these gave KeyError/TypeError/IndexError tracebacks (and verify said
    ok for two of them); each is now the same clear error from every reader."""
    from training.evaluate import evaluate

    _, out = data
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps(doctor(manifest)))
    for call in (lambda: verify(out), lambda: evaluate(out, "x"), lambda: compute_stats(out)):
        with pytest.raises(ValueError, match=f"not a data root's manifest: {problem}"):
            call()
    cli = [str(Path(sys.executable).with_name("alexnet")), "verify", str(out)]
    done = subprocess.run(cli, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert problem in done.stderr and len(done.stderr.strip().splitlines()) == 1


def _write_mean(out: Path, mean) -> None:
    import numpy as np

    np.save(out / "stats" / "mean.npy", np.asarray(mean, dtype=np.float32))


@pytest.mark.parametrize("damage", ["nan-eigenvalue", "nan-mean", "shape", "other-mean"])
def test_verify_checks_the_statistics_values_and_the_mean_images_hash(data, damage):
    """Issue 22.10: NaN eigenvalues, a mean of the wrong shape or all NaN passed verify (and
    a NaN mean made every output NaN: 0% error). mean.npy is now hashed in pca.json."""
    import numpy as np

    _, out = data
    pca = json.loads((out / "stats/pca.json").read_text())
    mean = np.load(out / "stats/mean.npy")
    assert pca["mean_sha256"] and not verify(out).problems
    if damage == "nan-eigenvalue":
        pca["eigenvalues"][1] = float("nan")
        (out / "stats/pca.json").write_text(json.dumps(pca))
        expected = "eigenvalues holds 1 NaN"
    else:
        pca.pop("mean_sha256")  # as statistics from before the hash: the values still tell
        (out / "stats/pca.json").write_text(json.dumps(pca))
        if damage == "nan-mean":
            _write_mean(out, np.full_like(mean, np.nan))
            expected = "mean.npy holds 196608 NaN"
        elif damage == "shape":
            _write_mean(out, mean[:128])
            expected = r"a \(128, 256, 3\) mean image for 256x256 images"
        else:
            pca["mean_sha256"] = "0" * 64
            (out / "stats/pca.json").write_text(json.dumps(pca))
            expected = "is not the mean image written with pca.json"
    problems = verify(out).problems
    assert len(problems) == 1 and re.search(expected, problems[0]), problems
    with pytest.raises(ValueError, match=expected):
        train(out, "on-bad-stats", resolve("smoke", overrides=TINY), progress=False)


def test_a_failed_start_leaves_no_run_folder_to_resume(data):
    """Issue 22.15: train made the run folder before checking the shards, so a start that
    failed left a folder that then demanded --resume."""
    src, out = data
    tar = shard_paths(out, "train")[1]
    tar.unlink()
    with pytest.raises(FileNotFoundError, match=rf"{tar.name} is missing \(1 train shard"):
        train(out, "fresh", resolve("smoke", overrides=TINY), progress=False)
    assert not (out / "runs" / "fresh").exists()
    preprocess(src, out, PrepareSettings(shard_size=10), workers=1, progress=False)
    result = train(out, "fresh", resolve("smoke", overrides=TINY), progress=False)  # no --resume
    assert result.epochs_done == 1


def test_a_flipped_byte_gives_verify_lines_that_agree(data):
    """Issue 22.15: a flipped byte gave 'sample 2 is damaged' and '1 samples, the manifest
    says 10' side by side; a read that stops at damage is now reported once."""
    _, out = data
    tar = shard_paths(out, "train")[0]
    flip_in_second_image(tar)
    problems = verify(out, deep=True).problems
    assert [p for p in problems if tar.name in p and "damaged" in p]
    assert not [p for p in problems if "samples, the manifest says" in p], problems


def test_writes_reach_the_disk_with_their_folder_and_metrics_lines(tmp_path, monkeypatch):
    """Issue 22.15: atomic_writer did not fsync the folder after its rename, and
    append_metrics did not fsync at all. A spy on os.fsync (the real call still made)
    records what each call synced."""
    from shards.atomic import write_bytes
    from training.runlog import append_metrics

    synced, real = [], os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    write_bytes(tmp_path / "a.json", b"{}")
    assert synced[-1] == str(tmp_path)  # the folder, after the rename
    assert any(s.startswith(str(tmp_path / "a.json")) for s in synced)  # the file, before
    append_metrics(tmp_path, {"step": 1})
    assert synced[-1] == str(tmp_path / "metrics.jsonl")


def test_verify_says_what_a_later_stage_will_miss(small_tree, tmp_path):
    """Issue 27.10: `verify` said "ok" on a root with no statistics (and no val split),
    which `train` then refused. The shards are still ok; the notes say what is missing
    for which stage, and the command that makes it."""
    src, _ = small_tree
    out = tmp_path / "out"
    preprocess(
        src, out, PrepareSettings(shard_size=50), splits=("train",), workers=1, progress=False
    )
    result = verify(out)
    assert not result.problems
    notes = "\n".join(result.notes)
    assert "no statistics yet" in notes and "`alexnet stats OUT`" in notes
    assert "no val split" in notes and "`alexnet train`" in notes
    exe = str(Path(sys.executable).with_name("alexnet"))
    done = subprocess.run([exe, "verify", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "note: no statistics yet" in done.stdout
    compute_stats(out, workers=1)
    assert "no statistics" not in "\n".join(verify(out).notes)
