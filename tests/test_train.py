"""The training stage: it learns, resumes exactly, fails clearly, and scales out with DDP."""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from preprocessing.prepare import PrepareSettings, preprocess
from preprocessing.sample_data import SampleSpec, generate
from preprocessing.stats import compute_stats
from shards.reader import iter_samples, shard_paths
from tests.reference import read_events
from training.checkpoint import load_checkpoint, save_checkpoint
from training.config import TrainConfig, parse_overrides, resolve
from training.ranks import keys_digest
from training.train import TrainingDiverged, train

TINY = ["model.width=0.0625", "batch_size=16", "loader_workers=1", "log_every=1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    generate(
        root / "src", SampleSpec(classes=10, train_per_class=60, val_per_class=10, quirks=0, seed=2)
    )
    preprocess(
        root / "src", root / "out", PrepareSettings(shard_size=50), workers=2, progress=False
    )
    compute_stats(root / "out", workers=2)
    return root / "out"


def test_smoke_preset_learns(data):
    config = resolve("smoke", overrides=["epochs=3", "checkpoint_every=2"])
    t0 = time.perf_counter()
    result = train(data, "smoke", config, progress=False)
    wall = time.perf_counter() - t0
    metrics = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    epochs = [m for m in metrics if "val_top1_error" in m]
    assert len(epochs) == 3
    # chance is 90% top-1 error on 10 classes (measured: 45%, 6%, 4%)
    assert epochs[-1]["val_top1_error"] < 0.25, epochs
    assert epochs[-1]["val_top1_error"] < epochs[0]["val_top1_error"] - 0.25
    assert all(k in metrics[0] for k in ("step", "epoch", "loss", "lr", "images_per_s"))
    # every line, step and epoch, says whether the loader or the model was the limit
    assert all(0 <= m["data_wait"] <= 1 for m in metrics)
    # images (not batches) per second: each epoch's 600 took less than the whole run
    assert all(m["images_per_s"] > 600 / wall for m in epochs)
    steps = [m for m in metrics if "val_top1_error" not in m]
    assert steps and all(m["epoch"] >= 1 and m["step"] % 5 == 0 for m in steps)  # log_every 5
    # issue 27.9: TensorBoard finds the run by its name (its events in the run folder, not
    # in a tensorboard/ folder inside), with its settings and results as HParams
    tags = {t for t, _, _ in read_events(result.run_dir)}
    assert {"val/top1_error", "hparam/best_top1_error", "hparam/last_top5_error"} <= tags
    assert not (result.run_dir / "tensorboard").exists()
    assert sum(e["seconds"] for e in epochs) < wall  # each epoch's own time, recorded
    saved = json.loads((result.run_dir / "config.json").read_text())
    # the saved settings are the ones given, with the class count the data root has
    ten = dataclasses.replace(config, model=dataclasses.replace(config.model, num_classes=10))
    assert TrainConfig.from_dict(saved) == ten and config.model.num_classes == 1000
    ckpt = load_checkpoint(result.run_dir / "checkpoints" / "last.pt")  # weights_only=True
    assert ckpt["config"]["model"]["width"] == 0.25 and ckpt["epoch"] == 3
    assert (result.run_dir / "checkpoints" / "best.pt").is_file()
    kept = sorted(p.name for p in (result.run_dir / "checkpoints").glob("epoch-*.pt"))
    assert kept == ["epoch-002.pt"]  # every checkpoint_every epochs, and only then


def test_resume_at_an_epoch_boundary_equals_an_unbroken_run(data):
    config = resolve("smoke", overrides=[*TINY, "epochs=2"])
    unbroken = train(data, "unbroken", config, progress=False)
    first = train(data, "broken", config, stop_after=1, progress=False)
    assert first.epochs_done == 1
    resumed = train(data, "broken", resume=True, progress=False)
    assert resumed.epochs_done == 2 and resumed.step == unbroken.step
    a = load_checkpoint(unbroken.run_dir / "checkpoints" / "last.pt")
    b = load_checkpoint(resumed.run_dir / "checkpoints" / "last.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for i, s in a["optimizer"]["state"].items():  # AdamW's moments and step count
        for key, value in s.items():
            assert torch.equal(value, b["optimizer"]["state"][i][key]), (i, key)

    def logged(run_dir):  # every field but the timing-dependent ones
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        timing = ("images_per_s", "data_wait", "seconds")
        return [{k: v for k, v in json.loads(x).items() if k not in timing} for x in lines]

    assert logged(resumed.run_dir) == logged(unbroken.run_dir)  # no lines lost or repeated

    def events(run_dir):  # TensorBoard's view of the run, but for the timing-dependent tags
        timing = ("train/images_per_s", "train/data_wait")
        return [(t, s, v) for t, s, v in read_events(run_dir) if t not in timing]

    seen = events(unbroken.run_dir)
    tags = {t for t, _, _ in seen}
    assert {"train/loss", "train/lr", "val/top1_error", "val/top5_error", "conv1_kernels"} <= tags
    images = [v for t, _, v in seen if t == "conv1_kernels"]
    assert len(images) == 2 and all(v.startswith(b"\x89PNG") for v in images)  # one an epoch
    assert events(resumed.run_dir) == seen  # the killed run's later events purged, none lost


def test_clear_errors_before_training(data, tmp_path):
    with pytest.raises(FileNotFoundError, match="alexnet preprocess"):
        train(tmp_path, "x", resolve("smoke"), progress=False)
    bare = tmp_path / "bare"
    (bare / "shards").mkdir(parents=True)
    (bare / "manifest.json").write_text((data / "manifest.json").read_text())
    with pytest.raises(FileNotFoundError, match="alexnet stats"):
        train(bare, "x", resolve("smoke"), progress=False)
    occupied = data / "runs" / "occupied"  # a run folder of its own: the test runs alone too
    occupied.mkdir(parents=True, exist_ok=True)
    (occupied / "config.json").write_text("{}")
    with pytest.raises(FileExistsError, match="--resume"):
        train(data, "occupied", resolve("smoke"), progress=False)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train(data, "never-started", resume=True, progress=False)
    with pytest.raises(ValueError, match=r"unknown setting: epohcs \(did you mean epochs\?\)"):
        resolve("smoke", overrides=["epohcs=3"])


BAD_RUN_NAMES = ["t2/", "../escaped", "/tmp/x", "a\nb", "", ".", "..", "-x", "a/b", "x" * 101]


@pytest.mark.parametrize("name", BAD_RUN_NAMES)
def test_a_run_name_is_one_safe_folder_name_everywhere(data, tmp_path, name):
    """Issue 22.2: `t2/` aliased `t2` under a second lock, `../escaped` and `/tmp/x` wrote
    outside OUT/runs, a newline was accepted; now each is refused before anything is made,
    by train, evaluate (as the run and as an ensemble member), predict and the command."""
    from flows.predict import predict_files
    from training.evaluate import evaluate

    before = sorted(p.name for p in data.parent.iterdir())
    runs = data / "runs"
    runs_before = sorted(p.name for p in runs.iterdir()) if runs.is_dir() else []
    for call in (
        lambda: train(data, name, resolve("smoke"), progress=False),
        lambda: evaluate(data, name),
        lambda: evaluate(data, "a", ensemble=[name]),
        lambda: predict_files(data, name, []),
    ):
        with pytest.raises(ValueError, match="not allowed: a run's name is one folder name"):
            call()
    assert sorted(p.name for p in data.parent.iterdir()) == before
    assert (sorted(p.name for p in runs.iterdir()) if runs.is_dir() else []) == runs_before
    cli = [sys.executable, "-m", "flows.cli", "train", str(data), f"--run={name}"]
    done = subprocess.run(cli, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "not allowed" in done.stderr, done.stderr


def test_non_finite_loss_stops_with_the_step_and_last_checkpoint(data):
    config = resolve("smoke", overrides=[*TINY, "epochs=3", "lr=1e6", "input_scale=1e6"])
    with pytest.raises(TrainingDiverged, match=r"at step \d+ \(epoch 1;.*is none \(no epoch"):
        train(data, "diverge", config, progress=False)
    # a run that diverges after an epoch names that epoch's checkpoint: one sane epoch, then
    # the same run resumed with a rate that cannot work
    sane = train(
        data,
        "diverge-later",
        resolve("smoke", overrides=[*TINY, "epochs=3"]),
        stop_after=1,
        progress=False,
    )
    last = sane.run_dir / "checkpoints" / "last.pt"
    state = load_checkpoint(last)
    state["config"] = {**state["config"], "lr": 1e6, "input_scale": 1e6}
    state["optimizer"]["param_groups"][0]["lr"] = 1e6
    save_checkpoint(last, state)
    with pytest.raises(TrainingDiverged, match=rf"at step \d+ \(epoch 2;.*{re.escape(str(last))}$"):
        train(data, "diverge-later", resume=True, progress=False)


def test_a_run_killed_mid_epoch_resumes_to_the_unbroken_runs_weights(data):
    config = [*TINY, "epochs=2"]
    unbroken = train(data, "kill-unbroken", resolve("smoke", overrides=config), progress=False)
    exe = str(Path(sys.executable).with_name("alexnet"))
    cmd = [
        exe,
        "train",
        str(data),
        "--run",
        "killed",
        "--preset",
        "smoke",
        *[a for kv in config for a in ("--set", kv)],
    ]
    run_dir = data / "runs" / "killed"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def in_epoch_2() -> bool:
        try:
            lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        except (OSError, ValueError):  # not there yet, or a line being written
            return False
        return any(m["epoch"] == 2 and "val_top1_error" not in m for m in lines)

    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None and not in_epoch_2():
            time.sleep(0.01)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed mid-epoch"
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["epoch"] == 1  # epoch 2 unsaved
    resumed = train(data, "killed", resume=True, progress=False)
    assert resumed.epochs_done == 2 and resumed.step == unbroken.step
    a = load_checkpoint(unbroken.run_dir / "checkpoints" / "last.pt")
    b = load_checkpoint(resumed.run_dir / "checkpoints" / "last.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [m["step"] for m in lines if "val_top1_error" not in m]
    assert steps == list(range(1, unbroken.step + 1))  # no line of the dead epoch twice


def test_none_is_a_word_for_string_settings_and_a_missing_value_for_optional_ones():
    """`--set model.lrn=none` and `--set lighting=none` switch LRN and lighting off (the
    settings are strings); `model.remove_conv=none` and `lr_milestones=none` are None."""
    config = resolve(
        "smoke",
        overrides=[
            "model.lrn=none",
            "lighting=none",
            "model.remove_conv=none",
            "lr_milestones=null",
        ],
    )
    assert (config.model.lrn, config.lighting) == ("none", "none")
    assert config.model.remove_conv is None and config.lr_milestones is None


def test_overrides_and_presets():
    assert parse_overrides(["model.width=0.5", "epochs=3", "flip=false"]) == {
        "model": {"width": 0.5},
        "epochs": 3,
        "flip": False,
    }
    paper = resolve("paper")
    assert (paper.batch_size, paper.lr, paper.momentum, paper.weight_decay) == (
        128,
        0.01,
        0.9,
        5e-4,
    )
    assert (paper.init, paper.input_scale, paper.lighting, paper.max_lr_drops) == (
        "paper",
        1.0,
        "paper",
        3,
    )
    assert paper.model.lrn == "paper" and paper.model.width == 1.0


def test_two_process_ddp_keeps_replicas_identical_on_disjoint_shards(data):
    exe = str(Path(sys.executable).with_name("alexnet"))
    # --standalone: the rendezvous store binds a port of its own choosing (no port picked
    # here and released before use, which another process could take in between)
    launch = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
    ]
    # a global batch of 20: 10 on each rank, whose 300 samples fill 30 whole batches an
    # epoch, so no surplus is skipped
    ddp = [*TINY, "epochs=2", "loader_workers=0", "batch_size=20"]
    settings = [a for kv in ddp for a in ("--set", kv)]
    cmd = [*launch, exe, "train", str(data), "--name", "ddp", "--preset", "smoke", *settings]
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    ranks = [json.loads((data / "runs/ddp/ranks" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    last = json.loads((data / "runs/ddp/metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 2 * 300 // 10  # steps of the global batch: 10 images per rank
    assert ranks[0]["world_size"] == 2 and ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    manifest = json.loads((data / "manifest.json").read_text())
    every = {s["shard"] for s in manifest["splits"]["train"]["shards"]}
    keys = [s.key for s in iter_samples(shard_paths(data, "train"))]
    for epoch in ("0", "1"):
        a, b = (set(r["shards_read"][epoch]) for r in ranks)
        assert not a & b and a | b == every
        # what the ranks really trained on: as many samples as the train split holds, and
        # key digests that add up to the digest of every train key (so: disjoint, complete)
        used = [r["consumed"][epoch] for r in ranks]
        assert sum(u["samples"] for u in used) == len(keys) and all(u["samples"] for u in used)
        assert sum(int(u["keys_digest"], 16) for u in used) % 2**64 == keys_digest(keys)


def test_the_prepared_gpu_training_check_runs(tmp_path):
    """Its CPU dry run, importing nothing the GPU host lacks once the wheel folder
    (scripts/gpu_wheels.py) is installed there: the same code paths as here."""
    from tests.gpu_host import dry_run, missing_on_gpu_host

    result, imported = dry_run("gpu_train_check.py", tmp_path)
    assert {"torch", "numpy", "simplejpeg", "isal", "tensorboardx"} <= imported
    assert not missing_on_gpu_host(imported)
    assert set(result) >= {"bare_decode", "ceiling", "loader", "steps", "train"}
    assert set(result["ceiling"]) == {"tensors", "slots"}
    train = result["train"]  # train() itself ran: 2 epochs of 480 samples at batch 16
    assert train["steps"] == 60 and len(train["epochs"]) == 2
    assert 0 <= train["data_wait"] <= 1
    limit = min(result["steps"]["batch 4"], result["bare_decode"]["images_per_s"])
    assert train["over_min_step_bare"] == round(train["images_per_s"] / limit, 3)


def _opt(lr=0.01):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_the_plateau_schedule_keeps_drops_and_stops_exactly():
    """The rule (through torch's ReduceLROnPlateau since issue 24: the same decisions as
    the hand-written rule before it, on this sequence and the one in same_results.py)."""
    from training.schedule import Plateau

    opt = _opt()
    p = Plateau(opt, patience=2, threshold=0.01, max_drops=2)  # improve: below 99% of best
    curve = [0.9, 0.8, 0.795, 0.79, 0.7, 0.71, 0.70, 0.69, 0.695, 0.7, 0.7, 0.7, 0.68]
    # .9, .8 improve; .795 misses .792 (1 bad); .79 and .7 improve; .71, .70 miss .693: drop
    # 1; .69 improves; .695, .7 miss .6831: drop 2; .7, .7: a plateau with no drop left:
    # stop; and .68, below .6831, comes too late: the rule has stopped
    got, rates = [], []
    for e in curve:
        got.append(p.step(e))
        rates.append(opt.param_groups[0]["lr"])
    assert got == [
        "keep",
        "keep",
        "keep",
        "keep",
        "keep",
        "keep",
        "drop",
        "keep",
        "keep",
        "drop",
        "keep",
        "stop",
        "keep",
    ]
    assert (p.drops, p.best, p.lowest) == (2, 0.68, 0.68)
    assert rates == pytest.approx([0.01] * 6 + [0.001] * 3 + [0.0001] * 4)  # stop: kept
    restored = Plateau(_opt(), 2, 0.01, 2)
    restored.load_state_dict(p.state_dict())
    assert restored.state_dict() == p.state_dict()
    assert (
        [p.step(0.9), p.step(0.9)]
        == [restored.step(0.9), restored.step(0.9)]
        == [
            "keep",
            "stop",
        ]
    )


def test_the_default_plateau_waits_for_a_noisy_curve_to_flatten():
    """A 90-epoch validation curve that keeps improving slowly, with noise: the defaults
    drop the rate only once it has flattened; the previous ones (patience 1, no threshold)
    dropped it within the first 15 epochs."""
    from training.schedule import Plateau

    epochs = np.arange(1, 91)
    smooth = 0.3 + 0.6 * np.exp(-epochs / 30)
    defaults = TrainConfig()
    for seed in range(4):  # noise of 1% (absolute): SGD's epoch-to-epoch wobble
        noisy = smooth + np.random.default_rng(seed).normal(0, 0.01, len(epochs))

        def first_drop(p: Plateau, noisy=noisy) -> int:
            return next(e for e, err in zip(epochs, noisy, strict=True) if p.step(err) == "drop")

        d = defaults
        new = Plateau(_opt(), d.lr_patience, d.lr_threshold, d.max_lr_drops)
        assert first_drop(new) > 50, seed  # at epoch 50 the curve still gains 4% per 5 epochs
        assert first_drop(Plateau(_opt(), 1, 0.0, 3)) < 20, seed  # old defaults: within 3-14
    gain = (smooth[:-5] - smooth[5:]) / smooth[:-5]
    assert gain[49] > 0.04


class _CtrlCWhilePickled:
    """Pickles as an empty OrderedDict (a type weights_only loading allows), pressing
    Ctrl-C as it is written: inside torch.save."""

    def __reduce__(self):
        signal.raise_signal(signal.SIGINT)
        return (collections.OrderedDict, ())


def test_a_ctrl_c_while_a_checkpoint_is_written_stops_once_it_is_whole(tmp_path):
    """Ctrl-C landing inside torch.save made it fail with its own RuntimeError ("enforce
    fail at inline_container.cc ... unexpected pos"), seen once in the Ctrl-C test: train
    ended with exit 2 and that line. Now the write finishes, then KeyboardInterrupt."""
    path = tmp_path / "last.pt"
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    try:
        with pytest.raises(KeyboardInterrupt):
            save_checkpoint(path, {"epoch": 3, "w": torch.ones(2), "x": _CtrlCWhilePickled()})
    finally:
        signal.signal(signal.SIGINT, before)
    saved = torch.load(path, weights_only=True)  # whole: weights_only loading reads it
    assert saved["epoch"] == 3 and torch.equal(saved["w"], torch.ones(2)) and saved["x"] == {}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary left


def test_fixed_milestones_drop_where_told_and_never_stop(data):
    from training.schedule import Milestones, schedule

    config = resolve("smoke", overrides=["lr_milestones=[2, 3]", "epochs=4"])
    assert isinstance(schedule(config, _opt()), Milestones)
    opt = _opt()
    m = Milestones(opt, [2, 3])
    assert [m.step(0.5) for _ in range(5)] == ["keep", "drop", "drop", "keep", "keep"]
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0001)
    with pytest.raises(ValueError, match="lr_milestones must be increasing"):
        resolve("smoke", overrides=["lr_milestones=[3, 2]"])
    result = train(
        data,
        "milestones",
        resolve("smoke", overrides=[*TINY, "epochs=4", "lr_milestones=[2, 3]", "lr=0.01"]),
        progress=False,
    )
    lines = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    rates = {m["epoch"]: m["lr"] for m in lines if "val_top1_error" not in m}
    assert rates == pytest.approx({1: 0.01, 2: 0.01, 3: 0.001, 4: 0.0001})
    assert result.epochs_done == 4 and result.stopped == "reached 4 epochs"


def test_the_cosine_schedule_glides_to_near_zero_and_resumes_where_it_was():
    from training.schedule import Cosine, schedule

    opt = _opt()
    assert isinstance(schedule(resolve("smoke", overrides=["epochs=4"]), opt), Cosine)
    c = Cosine(opt, 0.01, 4)
    rates = [opt.param_groups[0]["lr"]]
    for error in (0.5, 0.4, 0.45):
        assert c.step(error) == "keep"
        rates.append(opt.param_groups[0]["lr"])
    # epoch e (from 0) of 4 at 0.01 (1 + cos(pi e / 4)) / 2
    assert rates == pytest.approx([0.01, 0.0085355, 0.005, 0.0014645], rel=1e-4)
    again = Cosine(_opt(), 0.01, 4)
    again.load_state_dict(c.state_dict())
    assert again.step(0.3) == "keep" and again.lowest == 0.3
    assert again.opt.param_groups[0]["lr"] == pytest.approx(0.0)


def test_adamw_spares_biases_and_batch_norm_from_decay():
    from training.model import AlexNet
    from training.optim import PaperSGD, make_optimizer

    config = resolve("smoke", overrides=["model.width=0.0625", "model.num_classes=4"])
    net = AlexNet(config.model)
    opt = make_optimizer(net, config)
    assert isinstance(opt, torch.optim.AdamW)
    decayed, spared = opt.param_groups
    assert decayed["weight_decay"] == 0.05 and spared["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decayed["params"]) and spared["params"]
    assert all(p.ndim == 1 for p in spared["params"])  # biases, BatchNorm's scale and shift
    paper = resolve("paper", overrides=["model.width=0.0625", "model.num_classes=4"])
    assert isinstance(make_optimizer(AlexNet(paper.model), paper), PaperSGD)


def test_a_run_whose_rate_drops_resumes_across_the_drop_and_stops_after_the_last(data):
    # threshold 0.99: no epoch after the first can count as an improvement (that takes a
    # hundredth of the best error), so the rate drops after epoch 2 (patience 1) and
    # training stops after epoch 3 (one drop allowed)
    schedule = [*TINY, "epochs=6", "lr_patience=1", "lr_threshold=0.99", "max_lr_drops=1"]
    schedule += ["lr_schedule=plateau", "lr=0.01"]  # smoke's is a cosine
    config = resolve("smoke", overrides=schedule)
    unbroken = train(data, "drop-unbroken", config, progress=False)
    assert unbroken.epochs_done == 3 and "after 1 learning-rate drops" in unbroken.stopped
    lines = [json.loads(x) for x in (unbroken.run_dir / "metrics.jsonl").read_text().splitlines()]
    rates = {m["epoch"]: m["lr"] for m in lines if "val_top1_error" not in m}
    assert rates == {1: 0.01, 2: 0.01, 3: pytest.approx(0.001)}  # the step lines of epoch 3
    train(data, "drop-broken", config, stop_after=2, progress=False)  # stopped right after the drop
    resumed = train(data, "drop-broken", resume=True, progress=False)
    assert (resumed.epochs_done, resumed.step, resumed.stopped) == (
        unbroken.epochs_done,
        unbroken.step,
        unbroken.stopped,
    )
    a = load_checkpoint(unbroken.run_dir / "checkpoints" / "last.pt")
    b = load_checkpoint(resumed.run_dir / "checkpoints" / "last.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["optimizer"]["param_groups"][0]["lr"] == b["optimizer"]["param_groups"][0]["lr"]
    assert a["schedule"] == b["schedule"]
    # one drop made; the plateau that stopped it was counted (torch's rule then resets)
    assert (a["schedule"]["bad_epochs"], a["schedule"]["drops"]) == (0, 1)


def test_the_global_batch_is_split_across_replicas():
    from training.ranks import replica_batch

    paper = resolve("paper")
    assert replica_batch(paper, 1) == 128 and replica_batch(paper, 8) == 16
    per_replica = resolve("paper", overrides=["global_batch=false"])
    assert replica_batch(per_replica, 8) == 128
    with pytest.raises(ValueError, match="does not split across 3 replicas"):
        replica_batch(paper, 3)


def test_a_resolved_config_survives_the_file_the_pipeline_hands_to_a_launch(tmp_path):
    """The pipeline writes a run's config as JSON for `alexnet train --config` under a
    launcher; every setting comes back equal (lists and None included)."""
    config = resolve(
        "smoke",
        overrides=["lr_milestones=[2, 3]", "crop=224", "model.remove_conv=conv4", "lr=0.02"],
    )
    path = tmp_path / "launch.json"
    path.write_text(json.dumps(config.to_dict()))
    assert resolve("paper", path) == config
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not a valid settings file"):
        resolve("paper", bad)


def test_odd_inputs_are_clear_errors_not_tracebacks(data, tmp_path, monkeypatch):
    """Issue 22.12: `--set epochs.x=1` was a TypeError; an empty or pickled checkpoint an
    EOFError/UnpicklingError whose text advised weights_only=False; more ranks than train
    shards crashed every rank on a NoneType format string."""
    import pickle

    with pytest.raises(ValueError, match="epochs is a setting, not a group"):
        resolve("smoke", overrides=["epochs.x=1"])
    with pytest.raises(ValueError, match=r"model\.width is a setting, not a group"):
        resolve("smoke", overrides=["model.width.x=1"])
    empty, pickled = tmp_path / "empty.pt", tmp_path / "pickled.pt"
    empty.write_bytes(b"")
    pickled.write_bytes(pickle.dumps({"model": Path("x"), "config": {}}))
    for path in (empty, pickled):
        with pytest.raises(ValueError, match="not a checkpoint alexnet train wrote") as err:
            load_checkpoint(path)
        assert "weights_only" not in str(err.value)
    monkeypatch.setenv("WORLD_SIZE", "40")  # 600 images in shards of 50: 12 train shards
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(ValueError, match=r"40 processes but .* has 12 train shard"):
        train(data, "many-ranks", resolve("smoke", overrides=TINY), progress=False)


def test_resume_applies_the_settings_a_run_may_change_and_refuses_the_rest(data):
    """Issue 22.12: `--resume --set epochs=8` silently ignored the override."""
    config = resolve("smoke", overrides=[*TINY, "epochs=1", "log_every=5"])
    train(data, "extend", config, progress=False)
    with pytest.raises(ValueError, match="lr cannot change in the middle of a run"):
        train(data, "extend", resume=True, progress=False, resume_overrides=["lr=0.1"])
    more = train(data, "extend", resume=True, progress=False, resume_overrides=["epochs=2"])
    assert more.epochs_done == 2
    saved = json.loads((more.run_dir / "config.json").read_text())
    assert saved["epochs"] == 2 and saved["lr"] == config.lr
    cli = [sys.executable, "-m", "flows.cli", "train", str(data), "--run", "extend", "--resume"]
    done = subprocess.run([*cli, "--preset", "smoke"], capture_output=True, text=True)
    assert done.returncode != 0 and "--preset and --config do not apply" in done.stderr


def test_an_epoch_exactly_at_the_threshold_is_not_an_improvement():
    """Issue 23: `<` vs `<=` in the plateau rule survived: "improves" means strictly below
    (1 - threshold) of the best, so an error exactly there is a bad epoch."""
    from training.schedule import Plateau

    p = Plateau(_opt(), patience=1, threshold=0.01, max_drops=3)
    assert p.step(0.5) == "keep"
    assert p.step(0.5 * (1 - 0.01)) == "drop"  # exactly at the line: not an improvement
    assert p.step(0.5 * (1 - 0.01) * 0.999) == "keep" and p.best < 0.495
