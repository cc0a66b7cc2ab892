"""The two deployments, served by one long-running process (`alexnet serve`).

    alexnet-pipeline/default     on demand: `prefect deployment run
                                 'alexnet-pipeline/default' --param src=... --param out=...`
    alexnet-reprocess/nightly    on a cron schedule (nightly at 03:00 by default)
                                 over a fixed SRC and OUT, and on demand

Serving needs a Prefect server (PREFECT_API_URL); the process polls it for
runs and executes each one in a subprocess of its own, in this environment.
With a work pool and worker instead, `prefect deploy --all` reads the same
two deployments from prefect.yaml at the repository root.
"""

from __future__ import annotations

from prefect.deployments.runner import EntrypointType, RunnerDeployment

from flows import NIGHTLY
from flows.pipeline import alexnet_pipeline
from flows.reprocess import alexnet_reprocess

PIPELINE = "default"
REPROCESS = "nightly"


def deployments(
    src: str | None = None,
    out: str | None = None,
    cron: str | None = NIGHTLY,
    workers: int | None = None,
    dask_address: str | None = None,
) -> list[RunnerDeployment]:
    """Both deployments. The reprocess schedule needs `src` and `out` to run unattended:
    without them (or with `cron=None`) it is deployed without a schedule."""
    defaults: dict = {k: v for k, v in (("src", src), ("out", out)) if v is not None}
    if workers is not None:
        defaults["workers"] = workers
    if dask_address is not None:
        defaults["dask_address"] = dask_address
    scheduled = cron if (src and out) else None
    return [
        alexnet_pipeline.to_deployment(
            name=PIPELINE,
            parameters=defaults,
            description="preprocess -> stats -> train -> evaluate, cached",
            tags=["alexnet"],
            entrypoint_type=EntrypointType.MODULE_PATH,
        ),
        alexnet_reprocess.to_deployment(
            name=REPROCESS,
            cron=scheduled,
            parameters=defaults,
            description="re-process what changed in the source; update the statistics",
            tags=["alexnet"],
            entrypoint_type=EntrypointType.MODULE_PATH,
        ),
    ]


def serve(**kwargs: object) -> None:
    """Serve both deployments until interrupted (Ctrl-C)."""
    from prefect import serve as prefect_serve

    prefect_serve(*deployments(**kwargs))  # type: ignore[arg-type]
