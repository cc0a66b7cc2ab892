"""The pipeline flow under Prefect's test harness (a real temporary API on SQLite).

(PREFECT_HOME: a folder of the session's, set by conftest.py's pytest_configure.)
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.testing.utilities import prefect_test_harness

from flows.pipeline import alexnet_pipeline
from flows.reprocess import alexnet_reprocess
from preprocessing.prepare import PrepareSettings, preprocess
from preprocessing.sample_data import SampleSpec, generate
from preprocessing.stats import compute_stats
from shards.manifest import read_history, read_manifest
from shards.reader import shard_paths
from tests.conftest import BUCKET, SECRET

TINY = ["model.width=0.0625", "epochs=1", "batch_size=16", "loader_workers=0"]


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    root = tmp_path_factory.mktemp("flow") / "src"
    generate(root, SampleSpec(classes=4, train_per_class=12, val_per_class=3, quirks=1, seed=4))
    return root


def run_flow(src, out, overrides=TINY, **kw):
    kw.setdefault("shard_size", 20)
    state = alexnet_pipeline(
        str(src),
        str(out),
        crops=1,
        workers=1,
        overrides=overrides,
        return_state=True,
        **kw,
    )
    assert state.is_completed(), state
    with get_client(sync_client=True) as client:
        flow_filter = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        runs = client.read_task_runs(flow_run_filter=flow_filter)
    return {r.name.rsplit("-", 1)[0]: r for r in runs}, state.result()


def test_pipeline_graph_caching_and_changed_settings(harness, src, tmp_path):
    out = tmp_path / "out"
    first, result = run_flow(src, out)
    assert set(first) == {"preprocess", "stats", "train", "evaluate"}
    assert all(r.state.name == "Completed" for r in first.values())
    # the edges the UI draws: each task's input comes from the one before
    for task, param, upstream in (
        ("stats", "manifest", "preprocess"),
        ("train", "stats", "stats"),
        ("evaluate", "trained", "train"),
    ):
        ids = [getattr(i, "id", None) for i in first[task].task_inputs[param]]
        assert first[upstream].id in ids, (task, first[task].task_inputs)
    assert (out / "runs/pipeline/eval.json").is_file() and result["n"] == 12
    run_filter = ArtifactFilter(
        flow_run_id=ArtifactFilterFlowRunId(any_=[first["preprocess"].flow_run_id])
    )
    with get_client(sync_client=True) as client:  # the artifacts the UI shows
        arts = {a.key: a for a in client.read_artifacts(artifact_filter=run_filter)}
    results = arts["alexnet-results"].data
    assert "top-1 error" in results and "](file:///" in results  # errors, links to figures
    assert "[report.html](file:///" in results  # and to the run's report
    assert arts["alexnet-preprocess-progress"].type == "progress"
    assert float(arts["alexnet-preprocess-progress"].data) == 100.0
    assert float(arts["alexnet-train-progress"].data) == 100.0

    again, _ = run_flow(src, out)  # unchanged source and settings: every task a cache hit
    assert {k: r.state.name for k, r in again.items()} == dict.fromkeys(first, "Cached")

    # Issue 22.14: a deployment run and `alexnet pipeline` keep their cache records in
    # different PREFECT_HOMEs, and the second retrained from scratch ("had other
    # inputs"). Without the records (removed here), each task finds its outputs on disk
    # for these inputs and reuses them: no retraining, nothing moved aside.
    from prefect.settings import get_current_settings

    best = out / "runs/pipeline/checkpoints/best.pt"
    stamp = best.stat().st_mtime_ns
    shutil.rmtree(get_current_settings().results.local_storage_path)
    elsewhere, again_result = run_flow(src, out)
    assert best.stat().st_mtime_ns == stamp and not list(out.glob("runs/*superseded*"))
    assert elsewhere["train"].state.is_completed() and again_result == result

    shutil.rmtree(out / "stats")  # a cache hit needs its outputs on disk: these re-run
    (out / "runs/pipeline/eval.json").unlink()
    lost, _ = run_flow(src, out)
    assert {k: r.state.name for k, r in lost.items()} == {
        "preprocess": "Cached",
        "stats": "Completed",
        "train": "Cached",
        "evaluate": "Completed",
    }
    assert (out / "stats/pca.json").is_file() and (out / "runs/pipeline/eval.json").is_file()

    longer, _ = run_flow(src, out, overrides=[*TINY, "epochs=2"])  # a training setting only
    assert longer["preprocess"].state.name == "Cached" and longer["stats"].state.name == "Cached"
    assert (
        longer["train"].state.name == "Completed" and longer["evaluate"].state.name == "Completed"
    )
    assert (out / "runs/pipeline.superseded-1/eval.json").is_file()  # the earlier run is kept

    from preprocessing.plan import SettingsWouldRewrite

    with pytest.raises(SettingsWouldRewrite):  # issue 22.13: not without being told
        alexnet_pipeline(str(src), str(out), quality=90, crops=1, workers=1, overrides=TINY)
    requality, _ = run_flow(src, out, quality=90, rewrite=True)  # a preprocessing setting:
    assert all(r.state.name == "Completed" for r in requality.values())  # everything re-runs


def samples(out: Path) -> dict[str, dict[str, dict[str, bytes]]]:
    """Every sample of every split, read with webdataset: split -> key -> {ext: bytes}."""
    found = {}
    for split in ("train", "val"):
        paths = [str(p) for p in shard_paths(out, split)]
        found[split] = {
            r["__key__"]: {k: v for k, v in r.items() if not k.startswith("__")}
            for r in wds.WebDataset(paths, shardshuffle=False)
        }
        assert (
            len(found[split]) == read_manifest(out).data["splits"][split]["count"]
        )  # no key twice
    return found


def members(out: Path, split: str = "train") -> dict[str, str]:
    """key -> the shard holding it, from the shard records."""
    return {
        key: record["shard"]
        for path in sorted((out / "shards" / split).glob("*.json"))
        for record in [json.loads(path.read_text())]
        for key, _ in record["members"]
    }


def files(out: Path) -> dict[str, tuple[int, int]]:
    """Every shard file's (inode, mtime): what says whether it was rewritten."""
    return {
        p.name: (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in (out / "shards").rglob("*")
        if p.is_file()
    }


# webdataset 1.0's opener leaves its files to the garbage collector.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_reprocess_rewrites_only_affected_shards(harness, tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    generate(src, SampleSpec(classes=4, train_per_class=12, val_per_class=3, quirks=0, seed=5))
    first = alexnet_reprocess(str(src), str(out), shard_size=10, workers=1)
    assert first["changes"]["layout"] == "new layout: no earlier manifest"
    before_members, before_files = members(out), files(out)
    assert len(shard_paths(out, "train")) == 5  # 48 images, 10 a shard

    # add 3, change 1, delete 1
    train = sorted((src / "train").rglob("*.JPEG"))
    changed, deleted = train[0], train[20]
    wnid = train[5].parent.name
    added = [src / "train" / wnid / f"{wnid}_new{i}.JPEG" for i in range(3)]
    for i, path in enumerate(added):
        Image.new("RGB", (300 + 10 * i, 280), (40 * i, 200, 90)).save(path, "JPEG")
    with Image.open(changed) as im:
        im.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(changed, "JPEG", quality=80)
    deleted.unlink()
    key = lambda p: f"{p.parent.name}/{p.stem}"  # noqa: E731
    affected = {before_members[key(changed)], before_members[key(deleted)]}

    result = alexnet_reprocess(str(src), str(out), workers=1)
    c = result["changes"]["splits"]["train"]
    rel = lambda p: p.relative_to(src).as_posix()  # noqa: E731
    assert c["added"] == sorted(rel(p) for p in added)
    assert c["changed"] == [rel(changed)] and c["deleted"] == [rel(deleted)]
    assert set(c["shards_rewritten"]) == affected
    assert c["shards_added"] == ["train-000005.tar"]  # new images go to a new shard
    assert result["changes"]["splits"]["val"]["shards_rewritten"] == []
    assert read_history(out)[-1]["changes"] == result["changes"]  # the history says what changed
    assert "changes" not in read_manifest(out).data  # the manifest describes the data only

    after_members, after_files = members(out), files(out)
    for k, shard in before_members.items():  # existing images keep their shard
        if k != key(deleted):
            assert after_members[k] == shard, k
    assert {after_members[key(p)] for p in added} == {"train-000005.tar"}
    for name, stamp in before_files.items():  # every other shard file is untouched
        if name.split(".")[0] + ".tar" not in affected:
            assert after_files[name] == stamp, name

    # the same samples and statistics as a from-scratch run on the new source
    scratch = tmp_path / "scratch"
    preprocess(src, scratch, PrepareSettings(shard_size=10), workers=1, progress=False)
    compute_stats(scratch, workers=1)
    assert samples(out) == samples(scratch)
    np.testing.assert_array_equal(
        np.load(out / "stats/mean.npy"), np.load(scratch / "stats/mean.npy")
    )
    ours, theirs = (json.loads((d / "stats/pca.json").read_text()) for d in (out, scratch))
    for field in ("eigenvalues", "eigenvectors", "covariance", "mean_rgb", "n_images", "n_pixels"):
        assert ours[field] == theirs[field], field

    again = alexnet_reprocess(str(src), str(out), workers=1)  # nothing changed since
    assert again["shards_written"] == 0
    assert all(not v for c in again["changes"]["splits"].values() for v in c.values())


@pytest.mark.filterwarnings("ignore::ResourceWarning")  # webdataset's opener, as above
def test_reprocess_reads_the_official_archives_in_place(harness, tmp_path):
    """Issue 25, through a flow: SRC as ILSVRC-2012's official files. The flow's source
    fingerprint lists the archives into OUT/.index, the stage uses those listings, the
    samples are the tree's of the same images, and a second run lists and writes nothing."""
    import dataclasses

    spec = SampleSpec(classes=3, train_per_class=4, val_per_class=2, quirks=0, seed=7)
    tree, official, out = tmp_path / "tree", tmp_path / "official", tmp_path / "out"
    generate(tree, spec)
    generate(official, dataclasses.replace(spec, layout="official"))
    alexnet_reprocess(str(official), str(out), shard_size=10, workers=1)
    listings = {p: p.stat().st_mtime_ns for p in (out / ".index").rglob("*.json")}
    assert len(listings) == spec.classes + 1  # a listing per class tar, and the val tar's
    scratch = tmp_path / "scratch"
    preprocess(tree, scratch, PrepareSettings(shard_size=10), workers=1, progress=False)
    assert samples(out) == samples(scratch)

    again = alexnet_reprocess(str(official), str(out), workers=1)
    assert again["shards_written"] == 0
    assert {p: p.stat().st_mtime_ns for p in (out / ".index").rglob("*.json")} == listings


def test_training_under_a_launcher(harness, src, tmp_path):
    """launcher=torchrun: the train task starts two ranks and waits for them."""
    out = tmp_path / "out"
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    tasks, result = run_flow(
        src, out, launcher=[torchrun, "--standalone", "--nproc-per-node", "2"], run="ddp"
    )
    assert tasks["train"].state.name == "Completed" and result["n"] == 12
    ranks = sorted(p.name for p in (out / "runs/ddp/ranks").iterdir())
    assert ranks == ["rank-0.json", "rank-1.json"]
    assert not list((out / "runs").glob(".*.launch.json"))  # the handed-over config is removed

    with pytest.raises(RuntimeError, match="was not found"):
        alexnet_pipeline(
            str(src),
            str(out),
            run="nowhere",
            launcher=["no-such-launcher"],
            shard_size=20,
            crops=1,
            workers=1,
            overrides=TINY,
        )


def test_the_pipeline_runs_from_a_bucket_into_a_bucket(harness, s3, src, tmp_path, monkeypatch):
    """SRC and OUT as s3:// URLs, as `prefect deployment run` passes them: every task
    runs and leaves its outputs in the bucket; the same flow run again on another machine
    (a cache of its own, nothing of the first on its disk) finds them there: every task a
    cache hit, no object written."""
    from shards import storage

    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path / "machine-1"))
    bucket_src, out = f"{BUCKET}/flow-src", f"{BUCKET}/flow-out"
    fs = storage.filesystem(out)
    fs.put(f"{src}/", bucket_src, recursive=True)
    tasks, result = run_flow(bucket_src, out)
    assert sorted(tasks) == ["evaluate", "preprocess", "stats", "train"]
    assert all(t.state.name == "Completed" for t in tasks.values()), tasks
    run = f"{out}/runs/pipeline"
    for name in ("stats/pca.json", "runs/pipeline/checkpoints/best.pt", "runs/pipeline/eval.json"):
        assert fs.exists(f"{out}/{name}"), name
    assert json.loads(fs.cat_file(f"{run}/eval.json"))["top1_error"] == result["top1_error"]
    assert json.loads(fs.cat_file(f"{out}/manifest.json"))["source"]["path"] == bucket_src

    before = {k: v["ETag"] for k, v in fs.find(out, detail=True).items()}
    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path / "machine-2"))
    again, result2 = run_flow(bucket_src, out)
    assert all(t.state.name == "Cached" for t in again.values()), again
    assert result2["top1_error"] == result["top1_error"]
    assert {k: v["ETag"] for k, v in fs.find(out, detail=True).items()} == before
    with get_client(sync_client=True) as client:  # parameters, artifacts, logs: no secret
        seen = [*client.read_flow_runs(), *client.read_artifacts(), *client.read_logs()]
    assert "flow-out" in str(seen) and SECRET not in str(seen)
    # issue 27.2: training's own lines reach the Prefect log (each epoch's, and progress)
    assert any("epoch 1/1: loss" in getattr(x, "message", "") for x in seen), seen[-5:]


def _children(pid: int, marker: str) -> list[int]:
    """Live processes whose parent is `pid` and whose command line holds `marker`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, ppid = stat.read_text().rsplit(")", 1)[1].split()[:2]
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError):
            continue
        if int(ppid) == pid and state != "Z" and marker in command:
            found.append(int(stat.parent.name))
    return found


def _running(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_killed_pipeline_takes_its_temporary_server_with_it(src, tmp_path):
    """Issue 22.12: a killed `alexnet pipeline` (or reprocess) left its temporary Prefect
    server running with ppid 1. The server now gets SIGTERM from the kernel when the
    command that started it dies, however it dies."""
    import os
    import signal
    import subprocess
    import time

    from tests.conftest import _stop

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env["PREFECT_HOME"] = str(tmp_path / "home")
    command = [str(Path(sys.executable).with_name("alexnet")), "pipeline", str(src)]
    proc = subprocess.Popen(
        [*command, str(tmp_path / "out"), "--workers", "1", "--crops", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (servers := _children(proc.pid, "prefect.server.api.server:create_app")):
            assert time.monotonic() < deadline and proc.poll() is None, "no server started"
            time.sleep(0.1)
        time.sleep(2)  # let it get going
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 20
        while _running(servers[0]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _running(servers[0]), "the temporary server outlived its command"
    finally:
        _stop(proc)
