"""Register the deployments on the local process work pool and (optionally) start a worker: ``make schedule``.

Deployments (entrypoints are module paths, so a worker started in the project runs the project's code):

==================  ======================  =====================================================
deployment          schedule (params.yaml)  flow
==================  ======================  =====================================================
retrain/nightly     flows.retrain_cron       clean -> train -> index -> evaluate -> drift -> promote
ingest/periodic     flows.ingest_cron        new batch -> validate -> version -> drift of the batch
rebuild-index/...   none (run on demand)     production model -> descriptors -> index -> evaluate
evaluate/...        none (run on demand)     metrics of the current features and index
==================  ======================  =====================================================

``python -m flows.deploy [--worker] [--set flows.retrain_cron="0 3 * * *"]``; the server is ``PREFECT_API_URL``
(``make up`` starts one on 127.0.0.1:4200).
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast
from uuid import UUID

from prefect import deploy
from prefect.deployments.runner import EntrypointType
from prefect.schedules import Cron

from flows.common import Run, exit_when_unreachable, open_run


@dataclass(frozen=True)
class DeploymentSpec:
    """One deployment: which flow, its name, and its cron (None = on demand)."""

    flow: Any
    name: str
    cron: str | None


def deployment_specs(run: Run) -> list[DeploymentSpec]:
    from flows.evaluate import evaluate_production
    from flows.ingest import ingest
    from flows.rebuild_index import rebuild_index
    from flows.retrain import retrain

    flows = run.cfg.flows
    return [
        DeploymentSpec(retrain, "nightly", flows.retrain_cron),
        DeploymentSpec(ingest, "periodic", flows.ingest_cron),
        DeploymentSpec(rebuild_index, "on-demand", None),
        DeploymentSpec(evaluate_production, "on-demand", None),
    ]


def accepted(flow: Any, parameters: dict[str, Any]) -> dict[str, Any]:
    """The ``parameters`` the flow's function takes (the DVC-stage flows take no ``overrides``: their config is
    the project's params.yaml, so that dvc.lock records what ran)."""
    names = inspect.signature(flow.fn).parameters
    return {k: v for k, v in parameters.items() if k in names}


def ensure_work_pool(name: str) -> None:
    """Create the local process work pool unless it exists (with the process worker's default job template)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.workers.process import ProcessWorker

    template = ProcessWorker.get_default_base_job_template()
    # an existing pool was registered by an earlier `make schedule`: keep it
    with get_client(sync_client=True) as client, contextlib.suppress(ObjectAlreadyExists):
        client.create_work_pool(WorkPoolCreate(name=name, type="process", base_job_template=template))


def register(
    run: Run,
    specs: Sequence[DeploymentSpec],
    *,
    overrides: Sequence[str] = (),
    parameters: dict[str, Any] | None = None,
) -> list[UUID]:
    """Register ``specs`` on ``flows.work_pool`` (created if missing); returns the deployment ids.

    Every run gets ``project_dir`` (this project, absolute) and, where the flow takes them, the ``--set``
    overrides given here as parameters.
    """
    flows = run.cfg.flows
    ensure_work_pool(flows.work_pool)
    base = {"project_dir": str(run.root), "overrides": list(overrides), **(parameters or {})}
    deployments = [
        spec.flow.to_deployment(
            name=spec.name,
            schedule=Cron(spec.cron, timezone=flows.timezone) if spec.cron else None,
            parameters=accepted(spec.flow, base),
            entrypoint_type=EntrypointType.MODULE_PATH,
            tags=["landmark"],
        )
        for spec in specs
    ]
    ids = deploy(
        *deployments, work_pool_name=flows.work_pool, build=False, push=False, print_next_steps_message=False
    )
    return list(cast(list[UUID], ids))


@exit_when_unreachable
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Register the scheduled deployments (and start a local worker)."
    )
    parser.add_argument("--params", default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--worker", action="store_true", help="start a background worker of flows.work_pool")
    args = parser.parse_args(argv)
    run = open_run(None, args.params, args.overrides)
    specs = deployment_specs(run)
    register(run, specs, overrides=args.overrides)
    for spec in specs:
        print(
            f"deployment {spec.flow.name}/{spec.name}: {spec.cron or 'on demand'} ({run.cfg.flows.timezone})"
        )
    if args.worker:
        from landmark.platform.prefect_services import start_worker

        pid = start_worker(
            run.path(run.cfg.storage.run_dir), run.cfg.flows.work_pool, run.cfg.flows.prefect_port, run.root
        )
        print(f"worker of pool {run.cfg.flows.work_pool!r} running (pid {pid}); `make down` stops it")


if __name__ == "__main__":
    main()
