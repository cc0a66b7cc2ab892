"""Shared fixtures: small sample trees, generated once per test session."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from preprocessing.sample_data import SampleReport, SampleSpec, generate
from shards import storage


def pytest_configure(config: pytest.Config) -> None:
    """Prefect makes its home folder when it is imported: a folder of this session's,
    removed at its end, never the user's ~/.prefect (set here, before any test module is
    imported, rather than by a test module at import)."""
    home = tempfile.mkdtemp(prefix="alexnet-prefect-home-")
    config.stash[_PREFECT_HOME] = home
    os.environ.update(PREFECT_HOME=home, DO_NOT_TRACK="1", PREFECT_SERVER_ANALYTICS_ENABLED="false")


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(config.stash.get(_PREFECT_HOME, ""), ignore_errors=True)


_PREFECT_HOME = pytest.StashKey[str]()

SMALL = SampleSpec(classes=4, train_per_class=6, val_per_class=3, quirks=1, seed=7)


@pytest.fixture(scope="session")
def small_tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SampleReport]:
    """A 4-class tree with one of each quirk: (root, report)."""
    root = tmp_path_factory.mktemp("sample") / "imagenet"
    return root, generate(root, SMALL)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _group_alive(pgid: int) -> bool:
    """Whether any process of group `pgid` is still running (zombies do not count:
    in a container, orphans may wait unreaped for an init that never reaps them)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone while we looked
        if int(fields[2]) == pgid and fields[0] != "Z":  # state, ppid, pgrp
            return True
    return False


def _stop(proc: subprocess.Popen) -> None:
    """Stop a process we started in its own session, and everything it started.

    SIGTERM to the whole group; SIGKILL to what is left after 15 s; then wait
    until no process of the group remains (children can outlive the leader).
    """
    if proc.poll() is None or _group_alive(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while (proc.poll() is None or _group_alive(proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 10
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)


def start_dask(logs: Path, workers: int = 1) -> tuple[str, list[subprocess.Popen]]:
    """A real `dask scheduler` and `workers` `dask worker`s on 127.0.0.1: (address,
    processes), each process in a session of its own (stop them with `_stop`)."""
    from distributed import Client

    dask = str(Path(sys.executable).with_name("dask"))
    local = ["--host", "127.0.0.1", "--dashboard-address", "127.0.0.1:0"]
    # port 0: the scheduler binds a port of its own and writes its address to a file
    # (a port picked here and released first could be taken by another process meanwhile)
    info = logs / "scheduler.json"
    commands = {
        "scheduler": [dask, "scheduler", "--port", "0", "--scheduler-file", str(info), *local],
        "worker": [
            dask,
            "worker",
            "--scheduler-file",
            str(info),
            "--nworkers",
            str(workers),
            "--nthreads",
            "1",
            *local,
            "--local-directory",
            str(logs / "worker"),
        ],
    }
    procs: list[subprocess.Popen] = []
    try:
        for name, cmd in commands.items():
            with open(logs / f"{name}.log", "wb") as log:
                procs.append(
                    subprocess.Popen(
                        cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                    )
                )
            deadline = time.monotonic() + 60
            while name == "scheduler" and not info.is_file():
                assert time.monotonic() < deadline, (logs / "scheduler.log").read_text()[-2000:]
                time.sleep(0.1)
        address = json.loads(info.read_text())["address"]
        with Client(address, timeout="60s") as client:
            client.wait_for_workers(workers, timeout=60)
    except BaseException:
        for proc in reversed(procs):
            _stop(proc)
        raise
    return address, procs


@pytest.fixture(scope="session")
def dask_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `dask scheduler` and one `dask worker` on 127.0.0.1; yields the address."""
    address, procs = start_dask(tmp_path_factory.mktemp("dask"))
    try:
        yield address
    finally:
        for proc in reversed(procs):
            _stop(proc)


SECRET = "sentinel-Secret-7c1f0e9a"  # must never be written anywhere
BUCKET = "s3://alexnet-test"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on a free loopback port, credentials in the environment only."""
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    server = str(Path(sys.executable).with_name("moto_server"))
    with open(log, "wb") as f:
        proc = subprocess.Popen(
            [server, "-H", "127.0.0.1", "-p", str(port)],
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    endpoint = f"http://127.0.0.1:{port}"
    saved = dict(os.environ)
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY=SECRET,
        AWS_DEFAULT_REGION="us-east-1",
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(endpoint, timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        storage.filesystem(BUCKET).mkdir(BUCKET)
        yield endpoint
    finally:
        os.environ.clear()
        os.environ.update(saved)
        _stop(proc)
