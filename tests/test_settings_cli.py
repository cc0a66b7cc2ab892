"""What a user of the command line sees of the training settings (issue 27.7): unknown
keys with the nearest known one, the resolved settings printed (as a TOML file that
--config reads back), every setting listed, flags that do not claim a default."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from training.config import resolve

ALEXNET = str(Path(sys.executable).with_name("alexnet"))


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([ALEXNET, *args], capture_output=True, text=True, timeout=120)


def test_an_unknown_setting_is_named_with_the_nearest_known_one(tmp_path):
    for given, hint in (
        ("epochz=1", "epochz (did you mean epochs?)"),
        ("model.widht=0.5", "model.widht (did you mean model.width?)"),
    ):
        with pytest.raises(ValueError, match="`alexnet config` lists them") as err:
            resolve("smoke", overrides=[given])
        assert hint in str(err.value)
    done = _run("train", str(tmp_path), "--run", "x", "--set", "epochz=1")
    assert done.returncode != 0 and "did you mean epochs?" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_print_config_and_config_print_what_train_would_use(tmp_path):
    shown = _run(
        "train",
        str(tmp_path / "nowhere"),
        "--run",
        "x",
        "--preset",
        "smoke",
        "--set",
        "epochs=3",
        "--set",
        "model.width=0.5",
        "--print-config",
    )
    assert shown.returncode == 0, shown.stderr
    assert "epochs = 3\n" in shown.stdout and "[model]\n" in shown.stdout
    assert "width = 0.5\n" in shown.stdout and not (tmp_path / "nowhere").exists()
    saved = tmp_path / "settings.toml"
    saved.write_text(shown.stdout)  # a file --config reads back: the same settings
    wanted = resolve("smoke", overrides=["epochs=3", "model.width=0.5"])
    assert resolve("paper", config_file=saved) == wanted
    listed = _run("config", "--preset", "smoke")
    assert listed.returncode == 0 and listed.stdout.startswith("# alexnet train settings")
    names = [line.split(" = ")[0].lstrip("# ") for line in listed.stdout.splitlines()[1:]]
    assert {"epochs", "lr", "bf16", "channels_last", "compile", "lrn", "width"} <= set(names)


def test_flags_do_not_claim_a_default():
    """`evaluate --help` said `--no-figures ... (default: True)`: it reads as skipped."""
    shown = _run("evaluate", "--help").stdout
    flag = shown[shown.index("\n  --no-figures") + 1 :].split("\n  -")[0]
    assert "default: True" not in flag and "drawn unless" in flag
    said = " ".join(_run("train", "--help").stdout.split())
    assert "--print-config print the resolved settings" in said


def test_pipeline_checks_its_source_before_starting_anything(tmp_path):
    """Issue 27.4: a wrong SRC started a temporary Prefect server, then after 84 s printed
    a traceback and left OUT/.prefect behind. Now one line at once, nothing made."""
    import os
    import time

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    (tmp_path / "not-imagenet").mkdir()
    for src, says in (("missing", "does not exist"), ("not-imagenet", "has none of train/, val/")):
        started = time.monotonic()
        done = subprocess.run(
            [ALEXNET, "pipeline", str(tmp_path / src), str(tmp_path / "out")],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert done.returncode == 2 and says in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
        assert time.monotonic() - started < 30 and not (tmp_path / "out").exists()
