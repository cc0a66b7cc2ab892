"""The deployments against a real `prefect server start` on 127.0.0.1, driven by the CLI.

Starts the server and `alexnet serve` in sessions of their own, triggers the
pipeline with `prefect deployment run ... --watch`, checks the outputs on disk
and the server's records, registers prefect.yaml's deployments with `prefect
deploy --all`, and stops everything it started by process group.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from preprocessing.sample_data import SampleSpec, generate
from tests.conftest import _free_port, _group_alive, _stop

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
TINY = '["model.width=0.0625", "epochs=1", "batch_size=16", "loader_workers=0"]'


def _pipeline_params(src: Path, out: Path) -> list[str]:
    """`prefect deployment run` parameters of a small, quick pipeline run."""
    params = {"src": src, "out": out, "shard_size": 20, "crops": 1, "workers": 1, "overrides": TINY}
    return [a for k, v in params.items() for a in ("--param", f"{k}={v}")]


def _api(url: str, body: dict | None = None) -> dict | list:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _wait_healthy(api: str, server: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"prefect server exited ({server.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if _api(f"{api}/health") is True:
                return
        except (urllib.error.URLError, OSError, ValueError):
            pass
        time.sleep(1)
    pytest.fail(f"prefect server not healthy after {timeout} s:\n{log.read_text()[-3000:]}")


def _start_server(env: dict, log_path: Path) -> tuple[subprocess.Popen, str]:
    """`prefect server start` on a free port; (process, API URL) once healthy.

    The port is picked, released, then bound by the server: another process may take
    it in between. Then the server exits saying so, and another port is tried.
    """
    for _ in range(3):
        api = f"http://127.0.0.1:{(port := _free_port())}/api"
        with open(log_path, "w") as log:
            server = subprocess.Popen(
                [BIN / "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                env={**env, "PREFECT_SERVER_UI_API_URL": api},  # where its UI finds the API
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            _wait_healthy(api, server, log_path)
            return server, api
        except pytest.fail.Exception:
            _stop(server)
            if "address already in use" not in log_path.read_text().lower():
                raise
    pytest.fail("no free port for the Prefect server after 3 tries")


def _gone(proc: subprocess.Popen) -> bool:
    return proc.poll() is not None and not _group_alive(proc.pid)


def test_served_deployment_run_from_the_cli(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    generate(src, SampleSpec(classes=3, train_per_class=10, val_per_class=2, quirks=0, seed=7))
    home = tmp_path / "prefect-home"
    home.mkdir()
    base = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_CLI_PROMPT": "false",
    }
    base.pop("PREFECT_API_URL", None)
    server, api = _start_server(base, tmp_path / "server.log")
    client = {**base, "PREFECT_API_URL": api, "PREFECT_RUNNER_POLL_FREQUENCY": "2"}
    try:
        run_out = _run_served_deployment(api, client, src, out, tmp_path)
        _deploy_prefect_yaml(api, client, src, out, run_out)
    finally:
        _stop(server)
    assert _gone(server)


def _run_served_deployment(api: str, client: dict, src: Path, out: Path, tmp_path: Path) -> Path:
    """`alexnet serve`, then `prefect deployment run --watch`; outputs and records checked.
    Returns the run's data root."""
    serve_log = tmp_path / "serve.log"
    with open(serve_log, "w") as log:
        serve = subprocess.Popen(
            [
                *(BIN / "alexnet", "serve", "--src", str(src), "--out", str(out), "--workers", "1"),
                *("--reports-port", str(reports := _free_port())),
            ],
            env=client,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        run_out = out.with_name("run-out")  # --param overrides the served defaults
        command = [
            BIN / "prefect",
            "deployment",
            "run",
            "alexnet-pipeline/default",
            *_pipeline_params(src, run_out),
            "--watch",
            "--watch-timeout",
            "420",
        ]
        deadline = time.monotonic() + 120
        while True:  # until `alexnet serve` has registered the deployment
            done = subprocess.run(command, env=client, capture_output=True, text=True, timeout=500)
            said = done.stdout + done.stderr
            if "not found" not in said or time.monotonic() > deadline or serve.poll() is not None:
                break
            time.sleep(2)
        assert done.returncode == 0, f"{said}\n--- serve:\n{serve_log.read_text()[-3000:]}"
        assert "Completed" in said

        result = json.loads((run_out / "runs/pipeline/eval.json").read_text())
        assert result["n"] == 6 and 0 <= result["top1_error"] <= 1
        manifest = json.loads((run_out / "manifest.json").read_text())
        assert manifest["splits"]["train"]["count"] == 30
        assert not out.exists()  # the served default was overridden

        pipeline = _api(f"{api}/deployments/name/alexnet-pipeline/default")
        nightly = _api(f"{api}/deployments/name/alexnet-reprocess/nightly")
        assert [s["schedule"]["cron"] for s in nightly["schedules"]] == ["0 3 * * *"]
        assert nightly["parameters"] == {"src": str(src), "out": str(out), "workers": 1}
        deadline = time.monotonic() + 90
        while True:  # the server's scheduler fills in the nightly runs on its own loop
            runs = _api(f"{api}/flow_runs/filter", {})
            scheduled = [r for r in runs if r["deployment_id"] == nightly["id"]]
            if scheduled or time.monotonic() > deadline:
                break
            time.sleep(2)
        ran = [r for r in runs if r["deployment_id"] == pipeline["id"]]
        assert [r["state_type"] for r in ran] == ["COMPLETED"], runs
        ui = api.removesuffix("/api")
        _open_the_report_from_the_ui(ui, ran[0]["id"], f"http://127.0.0.1:{reports}", tmp_path)
        assert scheduled, "no scheduled runs of alexnet-reprocess/nightly after 90 s"
        assert all(r["state_type"] == "SCHEDULED" for r in scheduled), scheduled
        assert all(r["expected_start_time"][11:19] == "03:00:00" for r in scheduled), scheduled
    finally:
        _stop(serve)
    assert _gone(serve)
    return run_out


def _open_the_report_from_the_ui(ui: str, flow_run: str, reports: str, tmp_path: Path) -> None:
    """Issue 27.1, as a user in a browser: the flow run's page in the Prefect UI, its
    Artifacts tab, the results artifact (its headline, the errors, readable on the card
    without a click), then one click on its report.html link: the run's report loads,
    served over HTTP by `alexnet serve` (a file:// link would be refused from the UI)."""
    from tests.browser import Chromium

    tabs = "[...document.querySelectorAll('.p-tab')]"
    with Chromium(tmp_path) as page:
        # a window tall enough for the UI's virtual scroller to draw the artifact cards
        page.send(
            "Emulation.setDeviceMetricsOverride",
            width=1400,
            height=1600,
            deviceScaleFactor=1,
            mobile=False,
        )
        page.goto(f"{ui}/runs/flow-run/{flow_run}")
        page.wait_for(f"{tabs}.some(t => t.innerText.trim() === 'Artifacts')")
        page.value(f"{tabs}.find(t => t.innerText.trim() === 'Artifacts').click()")
        card = page.wait_for(
            "[...document.querySelectorAll('a[href^=\"/artifacts/artifact/\"]')]"
            ".map(a => a.innerText).find(t => t.includes('alexnet-results'))"
        )
        assert card
        shown = page.value("document.querySelector('.flow-run-artifacts').innerText")
        assert "top-1 error" in shown and "top-5 error" in shown and "epoch" in shown, shown
        page.value("document.querySelector('a[href^=\"/artifacts/artifact/\"]').click()")
        link = "[...document.querySelectorAll('a')].find(a => a.href.includes('report.html'))"
        href = page.wait_for(f"{link} && {link}.href")
        assert href.startswith(f"{reports}/run/"), href
        page.value(f"(a => {{ a.removeAttribute('target'); a.click(); }})({link})")  # same tab
        page.wait_for("document.title.startsWith('AlexNet run pipeline')")
        assert page.value("location.href") == href
        shown = page.value("document.body.innerText")
        assert "top-1 error" in shown.lower() and "Figures" in shown, shown[:500]
        page.wait_for("[...document.images].every(i => i.complete && i.naturalWidth > 0)", 30)


def _deploy_prefect_yaml(api: str, client: dict, src: Path, out: Path, done: Path) -> None:
    """The other way: prefect.yaml's deployments in a process work pool; its worker runs
    the pipeline on `done`, the data root the served deployment's run made (an unchanged
    pipeline: every stage a cache hit, which keeps the test short)."""
    subprocess.run(
        [BIN / "prefect", "work-pool", "create", "alexnet", "--type", "process"],
        env=client,
        check=True,
        capture_output=True,
        timeout=120,
    )
    deployed = subprocess.run(
        [BIN / "prefect", "deploy", "--all"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**client, "ALEXNET_SRC": str(src), "ALEXNET_OUT": str(out)},
        timeout=300,
    )
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    pipeline = _api(f"{api}/deployments/name/alexnet-pipeline/default")
    nightly = _api(f"{api}/deployments/name/alexnet-reprocess/nightly")
    assert pipeline["work_pool_name"] == nightly["work_pool_name"] == "alexnet"
    assert nightly["parameters"] == {"src": str(src), "out": str(out)}
    assert [s["schedule"]["cron"] for s in nightly["schedules"]] == ["0 3 * * *"]

    # and a worker of the pool really runs one: a flow run of the deployment, picked up by
    # `prefect worker start --run-once`, run in a process of its own, to COMPLETED
    before = (done / "runs/pipeline/eval.json").read_bytes()
    queued = subprocess.run(
        [
            BIN / "prefect",
            "deployment",
            "run",
            "alexnet-pipeline/default",
            *_pipeline_params(src, done),
        ],
        env=client,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert queued.returncode == 0, queued.stdout + queued.stderr
    worker = subprocess.run(
        [BIN / "prefect", "worker", "start", "--pool", "alexnet", "--run-once"],
        env=client,
        capture_output=True,
        text=True,
        timeout=600,
        start_new_session=True,
    )
    assert worker.returncode == 0, (worker.stdout + worker.stderr)[-3000:]
    runs = _api(f"{api}/flow_runs/filter", {})
    by_pool = [r for r in runs if r["deployment_id"] == pipeline["id"] and r["work_pool_name"]]
    assert [r["state_type"] for r in by_pool] == ["COMPLETED"], by_pool
    assert (done / "runs/pipeline/eval.json").read_bytes() == before  # not trained again
    assert "cached" in (worker.stdout + worker.stderr).lower(), worker.stdout[-3000:]


def test_pipeline_without_a_server_keeps_its_state_in_out(tmp_path):
    """`alexnet pipeline` with no PREFECT_API_URL: a temporary local server, state in OUT."""
    src, out = tmp_path / "src", tmp_path / "out"
    generate(src, SampleSpec(classes=3, train_per_class=10, val_per_class=2, quirks=0, seed=8))
    env = {**os.environ, "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    for name in ("PREFECT_API_URL", "PREFECT_HOME"):
        env.pop(name, None)
    settings = [a for kv in json.loads(TINY) for a in ("--set", kv)]
    cmd = [
        BIN / "alexnet",
        "pipeline",
        str(src),
        str(out),
        "--shard-size",
        "20",
        "--crops",
        "1",
        "--workers",
        "1",
        *settings,
    ]
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        said, _ = proc.communicate(timeout=600)
    finally:
        _stop(proc)
    assert proc.returncode == 0, said[-3000:]
    assert (out / ".prefect").is_dir() and any((out / ".prefect").iterdir())
    assert json.loads((out / "runs/pipeline/eval.json").read_text())["n"] == 6


def test_serve_says_what_is_missing(monkeypatch, capsys, tmp_path):
    from flows.cli import main

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    assert main(["serve"]) == 2
    assert "needs a running Prefect server" in capsys.readouterr().err
    monkeypatch.setenv("PREFECT_API_URL", f"http://127.0.0.1:{_free_port()}/api")  # nobody there
    assert main(["serve"]) == 2
    assert "no Prefect server answers" in capsys.readouterr().err
    assert main(["pipeline", str(tmp_path / "src"), str(tmp_path / "out")]) == 2  # the same check
    assert not (tmp_path / "out").exists()
    assert "no Prefect server answers" in capsys.readouterr().err
