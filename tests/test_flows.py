"""The pipeline flow under Prefect's test harness (a real temporary API on SQLite)."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

# Prefect reads these when it starts: keep its state out of the user's home.
_HOME = tempfile.mkdtemp(prefix="alexnet-prefect-home-")
os.environ["PREFECT_HOME"] = _HOME
os.environ["DO_NOT_TRACK"] = "1"
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"

from prefect.client.orchestration import get_client  # noqa: E402
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId  # noqa: E402
from prefect.testing.utilities import prefect_test_harness  # noqa: E402

from flows.pipeline import alexnet_pipeline  # noqa: E402
from preprocessing.sample_data import SampleSpec, generate  # noqa: E402

TINY = ["model.width=0.0625", "epochs=1", "batch_size=16", "loader_workers=0"]


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=120):
        yield
    shutil.rmtree(_HOME, ignore_errors=True)


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    root = tmp_path_factory.mktemp("flow") / "src"
    generate(root, SampleSpec(classes=4, train_per_class=12, val_per_class=3, quirks=1, seed=4))
    return root


def run_flow(src, out, overrides=TINY, **kw):
    state = alexnet_pipeline(str(src), str(out), shard_size=20, crops=1, workers=1,
                             overrides=overrides, return_state=True, **kw)  # fmt: skip
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
    for task, param, upstream in (("stats", "manifest", "preprocess"), ("train", "stats", "stats"),
                                  ("evaluate", "trained", "train")):  # fmt: skip
        ids = [getattr(i, "id", None) for i in first[task].task_inputs[param]]
        assert first[upstream].id in ids, (task, first[task].task_inputs)
    assert (out / "runs/pipeline/eval.json").is_file() and result["n"] == 12

    again, _ = run_flow(src, out)  # unchanged source and settings: every task a cache hit
    assert {k: r.state.name for k, r in again.items()} == dict.fromkeys(first, "Cached")

    longer, _ = run_flow(src, out, overrides=[*TINY, "epochs=2"])  # a training setting only
    assert longer["preprocess"].state.name == "Cached" and longer["stats"].state.name == "Cached"
    assert (
        longer["train"].state.name == "Completed" and longer["evaluate"].state.name == "Completed"
    )
    assert (out / "runs/pipeline.superseded-1/eval.json").is_file()  # the earlier run is kept

    requality, _ = run_flow(src, out, quality=90)  # a preprocessing setting: everything re-runs
    assert all(r.state.name == "Completed" for r in requality.values())
