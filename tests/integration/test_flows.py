"""The Prefect flows end to end against a real Prefect API, a real SeaweedFS and real DVC with git.

- the retrain flow on a tiny synthetic world: the flow run and one task run per stage end COMPLETED, the
  artifacts exist, DVC has the outputs in the S3 remote, the registry holds the promoted model, and the flow run
  carries the git/DVC revision labels;
- a deployment with a cron schedule, registered on a process work pool of a started local Prefect server, whose
  scheduled run executes on a local worker.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from landmark.infra import port_is_free
from landmark.storage import ObjectStore, S3Settings, read_credentials_file

if TYPE_CHECKING:
    from conftest import TinyWorld

    from landmark.infra import SeaweedInfo
    from landmark.registry import Registry

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]

# A tiny world and settings that make each stage take seconds on 2 CPU cores.
TINY = {
    "seed": 5,
    "device": "cpu",
    "synth": {
        "num_landmarks": 5,
        "facets_min": 1,
        "facets_max": 1,
        "train_per_landmark": 6,
        "index_per_landmark": 4,
        "queries": 5,
        "index_distractors": 4,
        "test_distractors": 2,
        "image_size": 160,
        "facet_size": 256,
        "workers": 0,
    },
    "train": {
        "epochs": 1,
        "batch_size": 8,
        "image_size": 96,
        "full_res_last_epoch": False,
        "neck_init_images": 32,
        "max_steps": 3,
        "warmup_steps": 1,
        "workers": 0,
    },
    "model": {"embedding_dim": 64},
    "extract": {"image_size": 128, "scales": [1.0], "batch_size": 8, "workers": 0},
    "local": {"image_size": 192, "workers": 0},
    "verify": {"workers": 0},
    "drift": {"sample_size": 50, "embedding_components": 4, "workers": 0},
    "promote": {"min_improvement": -100.0},  # 3 training steps: promote unless absurdly worse
}


def make_project(root: Path, seaweed: SeaweedInfo, bucket: str) -> Path:
    """A git + DVC copy of the project with the tiny settings and its DVC remote on a fresh test bucket."""
    from flows.demo import scratch_project

    settings = {**TINY, "storage": {"retries": 0}}
    return scratch_project(
        root, settings, endpoint=seaweed.endpoint, credentials_file=seaweed.credentials_file, bucket=bucket
    )


def sh(args: list[str], cwd: Path) -> str:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def prefect_api() -> Iterator[None]:
    """Prefect's own test harness: a temporary API server with its own database for this module."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@dataclass(frozen=True)
class Retrained:
    """One retraining run of the module: its project, bucket and final state."""

    project: Path
    bucket: str
    state: Any


@pytest.fixture(scope="module")
def retrained(tmp_path_factory: pytest.TempPathFactory, seaweed: SeaweedInfo, prefect_api: None) -> Retrained:
    from flows.retrain import retrain

    bucket = f"flow-{uuid.uuid4().hex[:10]}"
    project = make_project(tmp_path_factory.mktemp("retrain") / "project", seaweed, bucket)
    return Retrained(project, bucket, retrain(project_dir=str(project), return_state=True))


def registry_of(seaweed: SeaweedInfo, bucket: str) -> Registry:
    from landmark.registry import Registry

    credentials = read_credentials_file(seaweed.credentials_file)
    return Registry(
        ObjectStore(S3Settings(seaweed.endpoint, bucket, "us-east-1", credentials, 5.0, 0)), "registry"
    )


def test_retrain_flow_end_to_end(retrained: Retrained, seaweed: SeaweedInfo) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterId,
    )

    state, project = retrained.state, retrained.project
    assert state.is_completed(), state.message
    summary = state.result()
    flow_run_id = state.state_details.flow_run_id

    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    states = {}
    for run in tasks:
        states.setdefault(run.name.rsplit("-", 1)[0], []).append(run.state_type.value)
    expected = {
        "synth", "validate-data", "fetch-production", "extract", "evaluate", "local-features", "clean", "train",
        "index", "drift", "promote", "version", "push",
    }  # fmt: skip
    assert expected <= set(states), states
    assert all(s == "COMPLETED" for values in states.values() for s in values), states
    assert len(states["extract"]) == 2 and len(states["evaluate"]) == 2  # bootstrap/baseline and candidate
    keys = {a.key for a in artifacts}
    assert {
        "retrain-summary",
        "data-quality",
        "cleaning",
        "promotion",
        "versions",
        "drift-retrain",
    } <= keys, keys
    assert flow_run.labels.get("git.revision") and flow_run.labels.get("dvc.outputs")

    # DVC: every output of the run is in the S3 remote (nothing left to push)
    status = sh([sys.executable, "-m", "dvc", "status", "--cloud", "--json"], project)
    assert status.strip() in ("{}", ""), status
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    assert {"train", "clean", "index", "evaluate"} <= set(lock)

    # the registry holds the promoted model, complete, with the candidate's metrics
    assert summary["decision"]["outcome"] == "promoted", summary["decision"]
    assert any(
        " vs baseline " in reason for reason in summary["decision"]["reasons"]
    )  # pretrained, first run
    registry = registry_of(seaweed, retrained.bucket)
    pointer = registry.production()
    assert pointer is not None and registry.is_complete(pointer.version)
    assert pointer.version == summary["decision"]["production_after"]


def test_store_down_during_promotion_keeps_production(retrained: Retrained, seaweed: SeaweedInfo) -> None:
    """The store is down when the promote task runs: the flow fails naming the store, production still names the
    complete version it named before, and once the store is back the same promotion completes."""
    from prefect import flow

    from flows.common import open_run
    from flows.tasks import promote_candidate
    from landmark.infra import start_seaweed, stop_seaweed

    assert retrained.state.is_completed(), retrained.state.message
    project = retrained.project
    run = open_run(project, None, [])
    build = project / "build"
    args = (
        build / "models" / "candidate",
        build / "index",
        build / "eval" / "metrics.json",
        build / "reports" / "validate.json",
        build / "reports" / "drift" / "drift.json",
        build / "eval" / "baseline" / "metrics.json",
    )

    @flow(name="promote-only")
    def promote_only() -> dict[str, Any]:
        return promote_candidate(run, *args)

    registry = registry_of(seaweed, retrained.bucket)
    before = registry.production()
    assert before is not None
    stop_seaweed(seaweed.run_dir)
    try:
        failed = promote_only(return_state=True)
    finally:
        start_seaweed(seaweed.run_dir)
    assert failed.is_failed()
    assert f"127.0.0.1:{seaweed.ports.s3}" in str(failed.message), failed.message
    after = registry.production()
    assert after is not None and after.version == before.version and registry.is_complete(after.version)
    again = promote_only(return_state=True)
    assert again.is_completed(), again.message
    assert again.result()["production_after"] == before.version


def test_cron_deployment_runs_on_a_local_worker(
    tmp_path: Path, seaweed: SeaweedInfo, tiny_world: TinyWorld
) -> None:
    """`flows.deploy.register` + `prefect_services.start_worker`: a every-minute schedule fires, the worker runs it."""
    from landmark.prefect_services import (
        api_url,
        start_prefect_server,
        start_worker,
        stop_prefect_server,
        stop_worker,
    )

    project = make_project(tmp_path / "project", seaweed, f"sched-{uuid.uuid4().hex[:10]}")
    run_dir = tmp_path / "services"
    port = next(p for p in range(4310, 4400) if port_is_free(p))
    script = f"""
import sys
from flows.common import open_run
from flows.deploy import DeploymentSpec, register
from flows.ingest import ingest
run = open_run({str(project)!r}, None, [])
ids = register(run, [DeploymentSpec(ingest, "every-minute", "* * * * *")],
               parameters={{"source": {str(tiny_world.root)!r}, "reference": {str(tiny_world.root)!r}, "version": False}})
print(ids[0])
"""
    env_api = api_url(port)
    try:
        start_prefect_server(run_dir, port)
        env = {**os.environ, "PREFECT_API_URL": env_api}
        deployment_id = (
            subprocess.run(
                [sys.executable, "-c", script],
                cwd=project,
                env=env,
                capture_output=True,
                text=True,
                timeout=180,
                check=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        start_worker(run_dir, "landmark-local", port, project)
        state = _wait_for_scheduled_run(env_api, deployment_id, timeout_s=240)
        assert state == "COMPLETED", (state, (run_dir / "prefect" / "worker.log").read_text()[-3000:])
    finally:
        stop_worker(run_dir)
        stop_prefect_server(run_dir)


def _wait_for_scheduled_run(api: str, deployment_id: str, timeout_s: float) -> str:
    """Poll the API until a run of the deployment reaches a final state; returns that state's type."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    deadline = time.monotonic() + timeout_s
    last = "none"
    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[uuid.UUID(deployment_id)]))
            )
            finals = [
                r.state_type.value
                for r in runs
                if r.state_type and r.state_type.value in ("COMPLETED", "FAILED", "CRASHED")
            ]
            if finals:
                return finals[0]
            last = ",".join(sorted({r.state_type.value for r in runs if r.state_type})) or "none"
            time.sleep(3)
    return f"timeout (runs: {last})"
