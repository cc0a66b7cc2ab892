"""A temporary Prefect server that dies with the command that started it.

`alexnet pipeline` and `alexnet reprocess` without PREFECT_API_URL need a Prefect
API for the length of one flow run. Left to itself, Prefect starts one as a child
process and stops it at exit; but a command killed with SIGKILL (or by the OOM
killer) never reaches its exit code, and that server lived on as an orphan
(ppid 1) holding its port and SQLite file. Here the server is the same one
Prefect would start (its API factory under uvicorn, no UI), started by us with
the kernel told to send it SIGTERM when its parent dies (Linux's
PR_SET_PDEATHSIG), and stopped by us when the command ends normally.

Nothing here imports Prefect: it must run before Prefect is imported, since
Prefect reads PREFECT_API_URL once, when it is.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
STARTUP_TIMEOUT_S = 180.0  # a first start migrates a new SQLite database: slow on 2 cores


def _die_with(parent: int) -> None:
    """In the child, before exec: SIGTERM when the parent dies; and if it already has
    (between fork and here), exit at once."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(api: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api}/health", timeout=2) as response:
            return response.read().strip() == b"true"
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _start(log: Path) -> tuple[subprocess.Popen, str]:
    """One try: the server on a port free a moment ago; (process, API URL) once healthy,
    or (process, "") if it exited at once (its port was taken meanwhile)."""
    spec = importlib.util.find_spec("prefect")
    assert spec is not None and spec.origin is not None, "prefect is not installed"
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--app-dir",
        str(Path(spec.origin).parent.parent),
        "--factory",
        "prefect.server.api.server:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "error",
        "--lifespan",
        "on",
    ]
    # What Prefect sets for the temporary server it would start itself: no UI, ephemeral.
    env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1"}
    parent = os.getpid()
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            command,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: _die_with(parent),  # before any thread of ours is started
        )
    api = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return proc, ""
        if _healthy(api):
            return proc, api
        time.sleep(0.5)
    _stop(proc)
    raise RuntimeError(
        f"the temporary Prefect server did not answer in {STARTUP_TIMEOUT_S:.0f} s (log: {log})"
    )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_temporary_server(home: Path) -> str:
    """Start a Prefect server, its state in `home` (PREFECT_HOME); set PREFECT_API_URL to
    its API URL and return it. It lives as long as this process, however that ends:
    stopped at exit (after Prefect's own exit handlers, registered later and so run
    first, have sent their last logs and events to it), or killed with it."""
    log = home / "temporary-server.log"
    for _ in range(3):  # the port may be taken between picking and binding it
        proc, api = _start(log)
        if api:
            break
    else:
        tail = log.read_text(errors="replace")[-2000:] if log.is_file() else ""
        raise RuntimeError(f"the temporary Prefect server did not start (log: {log}):\n{tail}")
    os.environ["PREFECT_API_URL"] = api
    atexit.register(_stop, proc)
    return api
