"""A data root in object storage (issue 26), against a real S3-protocol server: moto's
`moto_server`, started here on 127.0.0.1 and stopped by process id."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from preprocessing.prepare import PrepareSettings, preprocess
from preprocessing.sample_data import SampleSpec, generate
from preprocessing.stats import compute_stats
from shards import storage
from shards.bucket import open_root
from shards.format import sha256_file
from shards.manifest import Manifest, read_manifest
from shards.verify import verify
from tests.conftest import BUCKET, SECRET, _stop, start_dask
from training.checkpoint import load_checkpoint
from training.config import resolve
from training.evaluate import evaluate
from training.train import train


def test_urls_with_credentials_or_signatures_are_refused():
    for url, why in (
        ("s3://AKIA:secret@bucket/root", "credentials in it is refused"),
        ("s3://bucket/root?X-Amz-Signature=abc", "query string"),
        ("s3://", "names no bucket"),
    ):
        with pytest.raises(ValueError, match=why) as err:
            storage.check_url(url)
        assert "secret" not in str(err.value) and "abc" not in str(err.value)
    with pytest.raises(ValueError, match="unknown storage scheme 'ftp'"):
        storage.local("ftp://host/root")
    assert storage.local("file:///data/out") == Path("/data/out")
    assert storage.local("out") == Path("out") and storage.local("s3://b/out") is None


SPEC = SampleSpec(classes=3, train_per_class=8, val_per_class=3, quirks=0, seed=11)
SETTINGS = PrepareSettings(shard_size=8)


@pytest.fixture(scope="module")
def roots(s3, tmp_path_factory):
    """sample-data uploaded to the bucket, then preprocessed and its statistics taken twice:
    from the local tree into a local folder in this process, and from the bucket into the
    bucket on a real Dask scheduler with 2 workers (started now: credentials reach them
    from their environment only). Yields (local, url, a re-run's report, the Dask logs)."""
    tmp = tmp_path_factory.mktemp("roots")
    generate(tmp / "src", SPEC)
    src, url = f"{BUCKET}/src", f"{BUCKET}/root"
    storage.filesystem(src).put(f"{tmp / 'src'}/", src, recursive=True)
    local = tmp / "out"
    preprocess(tmp / "src", local, SETTINGS, workers=1, progress=False)
    compute_stats(local, workers=1)
    os.environ["ALEXNET_CACHE"] = str(tmp / "driver-cache")
    (tmp / "dask").mkdir()
    address, procs = start_dask(tmp / "dask", workers=2)
    try:
        cli = [str(Path(sys.executable).with_name("alexnet")), "--dask-address", address]
        for args, says in (
            (["preprocess", src, url, "--shard-size", "8"], "wrote 5 shards, kept 0 complete"),
            (["stats", url], f"wrote {url}/stats/mean.npy and {url}/stats/pca.json"),
        ):
            done = subprocess.run(
                [cli[0], *args, *cli[1:]], capture_output=True, text=True, timeout=300
            )
            assert done.returncode == 0 and says in done.stdout, done.stdout + done.stderr
            assert SECRET not in done.stdout + done.stderr
        fs = storage.filesystem(url)
        before = {k: v["ETag"] for k, v in fs.find(url, detail=True).items()}
        again = preprocess(src, url, SETTINGS, dask_address=address, progress=False)
        after = {k: v["ETag"] for k, v in fs.find(url, detail=True).items()}
        assert after == before  # an unchanged re-run writes no object
    finally:
        for proc in reversed(procs):
            _stop(proc)
        del os.environ["ALEXNET_CACHE"]
    yield local, url, again, tmp / "dask"


def test_preprocess_and_stats_from_a_bucket_to_a_bucket_on_dask_give_the_local_bytes(roots):
    """Issue 26's chain: the shards, partial sums and statistics written from the bucket to
    the bucket by 2 Dask workers are the local run's, byte for byte; an unchanged re-run
    does no image work and writes nothing (checked by the fixture: every ETag the same);
    the Dask logs hold no secret."""
    local, url, again, logs = roots
    fs = storage.filesystem(url)
    assert again.shards_written == 0 and again.shards_reused == 5
    assert not again.cluster_started  # no image work: not even a task
    files = sorted(p for p in local.rglob("*") if p.is_file() and p.suffix in (".tar", ".npz"))
    assert len(files) == 5 + 3 + 0  # 3 train shards with their sums, 2 val shards
    for p in files:
        rel = p.relative_to(local).as_posix()
        assert fs.cat_file(f"{url}/{rel}") == p.read_bytes(), rel
    for name in ("mean.npy", "pca.json"):
        assert fs.cat_file(f"{url}/stats/{name}") == (local / "stats" / name).read_bytes()
    assert fs.cat_file(f"{url}/rejects.jsonl") == (local / "rejects.jsonl").read_bytes()
    theirs = Manifest.parse(json.loads(fs.cat_file(f"{url}/manifest.json")))  # the CLI's
    mine = read_manifest(local)
    assert theirs.source["path"] == f"{BUCKET}/src" and theirs.counts == mine.counts
    for split in ("train", "val"):
        assert [s.sha256 for s in theirs.shards(split)] == [s.sha256 for s in mine.shards(split)]
    (entry,) = [json.loads(fs.cat_file(h)) for h in fs.find(f"{url}/history")]
    assert entry["shards_written"] == 5  # one object per run that changed the root
    assert SECRET.encode() not in _everything_under(logs)


def _numbers(last: dict) -> dict:
    """An epoch's metrics without its timings."""
    return {k: v for k, v in last.items() if k not in ("images_per_s", "data_wait", "seconds")}


def _everything_under(*folders: Path) -> bytes:
    return b"".join(p.read_bytes() for f in folders for p in f.rglob("*") if p.is_file())


def test_a_data_root_in_a_bucket_trains_evaluates_and_verifies_as_its_local_copy(
    roots, tmp_path, monkeypatch, capfd
):
    """The data root written to the bucket above: training and evaluation from its URL
    give the local copy's weights and errors; each shard is fetched once into the
    content-addressed cache (with every shard object then deleted, evaluation still reads
    every val shard: from the cache, no object); `verify` on the URL fetches every object
    again and names a flipped byte; the secret key is written nowhere, printed nowhere."""
    local, url, _, _ = roots
    fs = storage.filesystem(url)
    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path / "cache"))

    overrides = ["model.width=0.0625", "epochs=1", "batch_size=8", "loader_workers=1"]
    config = resolve("smoke", overrides=overrides)
    mine = train(local, "a", config, progress=False)
    theirs = train(url, "a", config, progress=False)  # its run folder: in the local view
    view = open_root(url)
    assert theirs.run_dir == view / "runs" / "a"
    for name in ("checkpoints/last.pt", "checkpoints/best.pt", "metrics.jsonl", "report.html"):
        # copied up after each epoch: the run outlives the machine that trained it
        assert fs.cat_file(f"{url}/runs/a/{name}") == (theirs.run_dir / name).read_bytes()
    assert _numbers(theirs.last) == _numbers(mine.last)
    a, b = (load_checkpoint(r.run_dir / "checkpoints/last.pt")["model"] for r in (mine, theirs))
    assert all(torch.equal(a[k], b[k]) for k in a)
    here, there = evaluate(local, "a", crops=1), evaluate(url, "a", crops=1)
    assert (here["top1_error"], here["top5_error"]) == (there["top1_error"], there["top5_error"])
    cached = sorted(p.name for p in (tmp_path / "cache/objects").glob("*.tar"))
    assert len(cached) == len(list(local.rglob("shards/*/*.tar")))  # each shard fetched once

    # another machine (a cache of its own) resumes the run from the bucket's copy of it,
    # and a third evaluates it: the same weights as resuming the local run; eval.json goes up
    more = {"resume": True, "resume_overrides": ["epochs=2"], "progress": False}
    mine = train(local, "a", **more)
    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path / "machine-2"))
    theirs = train(url, "a", **more)
    assert theirs.run_dir.is_relative_to(tmp_path / "machine-2") and theirs.epochs_done == 2
    a, b = (load_checkpoint(r.run_dir / "checkpoints/last.pt")["model"] for r in (mine, theirs))
    assert all(torch.equal(a[k], b[k]) for k in a)
    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path / "machine-3"))
    there, here = evaluate(url, "a", crops=1), evaluate(local, "a", crops=1)
    assert (here["top1_error"], here["top5_error"]) == (there["top1_error"], there["top5_error"])
    assert json.loads(fs.cat_file(f"{url}/runs/a/eval.json"))["top1_error"] == there["top1_error"]
    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path / "cache"))  # the first machine again
    (entry,) = evaluate(url, "a", crops=1, checkpoint="last")["checkpoints"]
    assert entry["sha256"] == sha256_file(theirs.run_dir / "checkpoints/last.pt")  # not its own

    for obj in fs.find(f"{url}/shards"):  # no object left to read: the cache serves them
        if obj.endswith(".tar"):
            fs.rm(obj)
    again = evaluate(url, "a", crops=1)  # every val shard read again: from the cache
    assert (again["top1_error"], again["top5_error"]) == (here["top1_error"], here["top5_error"])
    fs.put(f"{local}/shards/", f"{url}/shards", recursive=True)

    assert not verify(url).problems
    cli = str(Path(sys.executable).with_name("alexnet"))
    done = subprocess.run([cli, "verify", url], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and f"{url}: ok (" in done.stdout, done.stdout + done.stderr
    shard = next(o for o in sorted(fs.find(f"{url}/shards/val")) if o.endswith(".tar"))
    data = bytearray(fs.cat_file(shard))
    data[len(data) // 2] ^= 0x01
    fs.pipe_file(shard, bytes(data))
    problems = verify(url, deep=True).problems
    assert len(problems) == 1 and "bytes differ from the manifest's" in problems[0]
    assert not verify(local).problems  # the local copy and the cache are untouched

    # a writer killed in the middle of a large object leaves a multipart upload behind
    bucket, _, key = f"{url}/shards/train/partial.tar".removeprefix("s3://").partition("/")
    fs.call_s3("create_multipart_upload", Bucket=bucket, Key=key)
    (note,) = verify(url).notes
    assert "1 incomplete multipart upload(s)" in note and "lifecycle rule" in note

    out, err = capfd.readouterr()
    written = _everything_under(tmp_path, local)
    assert SECRET.encode() not in written and SECRET not in out + err + done.stdout + done.stderr


def test_the_lease_admits_one_writer_and_passes_on_only_after_its_holder_dies(s3, tmp_path):
    """Issue 26's lock for a data root in a bucket: of 8 racing writers one gets the
    lease and the others are told who holds it; a holder renews it (still held past its
    TTL while alive); SIGKILLed, it stops renewing and the lease passes on once its TTL
    has run out by the store's clock; the old holder's next renewal finds it lost."""
    import signal
    import threading

    from shards.lease import LeaseHeld, LeaseLost, acquire, probe, release, renew

    root = f"{BUCKET}/leased"
    probe(root)  # moto honours If-None-Match: the store is safe for leases
    results: list = []
    start = threading.Barrier(8)

    def race(i: int) -> None:
        start.wait()
        try:
            results.append(acquire(root, f"writer-{i}", ttl_s=30))
        except Exception as err:  # LeaseHeld expected; anything else fails below
            results.append(err)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = [r for r in results if not isinstance(r, Exception)]
    assert len(won) == 1 and len(results) == 8
    refused = [r for r in results if r not in won]
    assert all(isinstance(r, LeaseHeld) and won[0].holder in str(r) for r in refused), refused
    release(won[0])

    holder = (
        "import sys, time\n"
        "from shards.lease import leased\n"
        "with leased(sys.argv[1], 'victim', ttl_s=2):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(120)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", holder, root], stdout=subprocess.PIPE, text=True, cwd=tmp_path
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        time.sleep(3.5)  # past its TTL: still held, renewed
        with pytest.raises(LeaseHeld, match=rf"by victim \(pid {proc.pid} on "):
            acquire(root, "second")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    deadline = time.monotonic() + 15
    while True:
        try:
            mine = acquire(root, "second", ttl_s=30)
            break
        except LeaseHeld:
            assert time.monotonic() < deadline, "the dead holder's lease never expired"
            time.sleep(0.5)
    stale = type(mine)(mine.url, "victim", '"an old etag"', 2)  # what the dead holder had
    renew(stale)
    with pytest.raises(LeaseLost, match="another writer took the lease over"):
        stale.check()
    renew(mine)
    mine.check()  # still ours
    release(mine)


def test_the_manifest_write_is_conditional_on_the_version_the_writer_read(roots, tmp_path):
    """Two writers that both read the data root (as two would where leases are switched
    off): the first to commit wins; the second's commit is refused and writes nothing,
    not even rejects.jsonl; a writer that read the new version may replace it."""
    from shards.remote import RemoteRoot

    local, _, _, _ = roots
    url = f"{BUCKET}/raced"
    fs = storage.filesystem(url)
    manifest = json.loads((local / "manifest.json").read_text())
    first = RemoteRoot.open(url, cache=tmp_path / "a")
    second = RemoteRoot.open(url, cache=tmp_path / "b")
    assert first.commit(manifest, [], {})
    won = fs.cat_file(f"{url}/manifest.json")
    other = dict(manifest, source=dict(manifest["source"], path="s3://elsewhere/src"))
    with pytest.raises(storage.Conflict, match="changed by another writer since this one read"):
        second.commit(other, [{"path": "train/x", "reason": "r", "split": "train"}], {})
    assert fs.cat_file(f"{url}/manifest.json") == won
    assert fs.cat_file(f"{url}/rejects.jsonl") == b""  # the first writer's (none)
    third = RemoteRoot.open(url, cache=tmp_path / "c")
    assert third.commit(other, [], {})
    assert json.loads(fs.cat_file(f"{url}/manifest.json"))["source"]["path"] == "s3://elsewhere/src"


def test_preprocess_killed_mid_run_resumes_over_the_bucket_to_the_same_bytes(roots, tmp_path):
    """preprocess from the bucket into the bucket, SIGKILLed once its first shard is
    complete: the next run is told who holds the lease until the dead writer's TTL has
    run out, then keeps the complete shards, writes the rest, and gives the local run's
    bytes; nothing of the killed run is left behind (no lease, no stray object)."""
    import signal

    from shards.lease import LeaseHeld

    settings = PrepareSettings(shard_size=2)  # 17 shards: the kill lands mid-run
    local = tmp_path / "local"
    preprocess(roots[0].parent / "src", local, settings, workers=1, progress=False)
    url, src = f"{BUCKET}/killed", f"{BUCKET}/src"
    fs = storage.filesystem(url)
    env = dict(os.environ, ALEXNET_LEASE_TTL_S="3", ALEXNET_CACHE=str(tmp_path / "cache"))
    script = (
        "import sys\n"
        "from preprocessing.prepare import PrepareSettings, preprocess\n"
        "preprocess(sys.argv[1], sys.argv[2], PrepareSettings(shard_size=2), workers=1)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, src, url],
        env=env,
        cwd=Path.cwd(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not fs.exists(f"{url}/shards/train/train-000000.json"):
            assert proc.poll() is None and time.monotonic() < deadline, "no shard was written"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not fs.exists(f"{url}/manifest.json")  # killed before its end
    os.environ["ALEXNET_CACHE"] = str(tmp_path / "cache")
    try:
        with pytest.raises(LeaseHeld, match=rf"by preprocess \(pid {proc.pid} on "):
            preprocess(src, url, settings, workers=1, progress=False)
        deadline = time.monotonic() + 20
        while True:
            try:
                done = preprocess(src, url, settings, workers=1, progress=False)
                break
            except LeaseHeld:
                assert time.monotonic() < deadline, "the killed writer's lease never expired"
                time.sleep(0.5)
    finally:
        del os.environ["ALEXNET_CACHE"]
    assert done.shards_reused >= 1 and done.shards_written + done.shards_reused == 17
    mine = sorted(p.relative_to(local).as_posix() for p in local.rglob("shards/*/*") if p.is_file())
    theirs = sorted(k.split("/killed/", 1)[1] for k in fs.find(f"{url}/shards"))
    assert theirs == mine  # no stray object, no leftover lease
    for rel in mine:
        assert fs.cat_file(f"{url}/{rel}") == (local / rel).read_bytes() or rel.endswith(".json")
    assert not fs.exists(f"{url}/.lease")

    # a shard's tar deleted from the bucket (its record left): that shard, and only it,
    # is written again
    gone = "shards/train/train-000003.tar"
    fs.rm(f"{url}/{gone}")
    os.environ["ALEXNET_CACHE"] = str(tmp_path / "cache")
    try:
        again = preprocess(src, url, settings, workers=1, progress=False)
    finally:
        del os.environ["ALEXNET_CACHE"]
    assert (again.shards_written, again.shards_reused) == (1, 16)
    assert fs.cat_file(f"{url}/{gone}") == (local / gone).read_bytes()
