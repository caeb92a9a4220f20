"""The Prefect flows end to end against a real Prefect API, a real SeaweedFS and real DVC with git.

- two nights of the living loop on a tiny synthetic feed: day 0 is ingested and night 1 retrains on it; a
  night right after it with nothing new ends ``unchanged`` and registers nothing; day 1 arrives (with truncated
  files, quarantined) and night 2 trains, indexes and evaluates exactly the ok rows of both batches, computing
  local features only for the new images and bootstrap descriptors anew for the new production model. Each
  flow run and one task run per DVC stage end COMPLETED, the artifacts exist, DVC has the outputs in the S3
  remote, the registry holds the promoted model, and the flow run carries the git/DVC revision labels;
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

from landmark.platform.infra import port_is_free
from landmark.platform.storage import ObjectStore, S3Settings, read_credentials_file

if TYPE_CHECKING:
    from landmark.ops.registry import Registry
    from landmark.platform.infra import SeaweedInfo

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
    # 3 training steps: promote unless absurdly worse; no golden sets (tests/integration/test_golden_gate.py)
    "promote": {"min_improvement": -100.0, "golden": []},
    "feed": {"days": 2, "shift_day": -1, "corrupt_day": 1, "corrupt_images": 2},
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
class Nights:
    """The module's story: its project, bucket, the flow states and what was on disk between them."""

    project: Path
    bucket: str
    night1: Any
    unchanged: Any
    night2: Any
    versions_after_night1: list[str]
    versions_after_unchanged: list[str]
    local_shards_before_night2: dict[str, dict[str, float]]
    boot_shards_after_night1: dict[str, float]
    day1: dict[str, Any]
    day0: dict[str, Any]

    @property
    def state(self) -> Any:
        return self.night1


def shard_times(store: Path) -> dict[str, float]:
    """Shard file -> modification time of every shard under a feature store."""
    return {str(p.relative_to(store)): p.stat().st_mtime for p in sorted(store.rglob("shard-*"))}


@pytest.fixture(scope="module")
def retrained(tmp_path_factory: pytest.TempPathFactory, seaweed: SeaweedInfo, prefect_api: None) -> Nights:
    from flows.demo import arrive
    from flows.ingest import ingest
    from flows.retrain import retrain

    bucket = f"flow-{uuid.uuid4().hex[:10]}"
    project = make_project(tmp_path_factory.mktemp("retrain") / "project", seaweed, bucket)
    registry = registry_of(seaweed, bucket)
    assert arrive(project, 1) == ["day-000"]
    day0 = ingest(project_dir=str(project))  # registers the pretrained backbone with its index: version 0
    night1 = retrain(project_dir=str(project), return_state=True)
    after1 = [v.version for v in registry.list_versions()]
    unchanged = retrain(project_dir=str(project), return_state=True)
    after_unchanged = [v.version for v in registry.list_versions()]
    local = {s: shard_times(project / "build" / "local" / s) for s in ("train", "index", "test")}
    boot = shard_times(project / "build" / "features_boot")
    assert arrive(project, 2) == ["day-001"]
    day1 = ingest(project_dir=str(project))  # also extracts the new images with production (night 1's model)
    night2 = retrain(project_dir=str(project), return_state=True)
    return Nights(
        project, bucket, night1, unchanged, night2, after1, after_unchanged, local, boot, day1, day0
    )


def registry_of(seaweed: SeaweedInfo, bucket: str) -> Registry:
    from landmark.ops.registry import Registry

    credentials = read_credentials_file(seaweed.credentials_file)
    return Registry(
        ObjectStore(S3Settings(seaweed.endpoint, bucket, "us-east-1", credentials, 5.0, 0)), "registry"
    )


def test_retrain_flow_end_to_end(retrained: Nights, seaweed: SeaweedInfo) -> None:
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
        "validate", "production", "bootstrap", "local", "baseline", "clean", "train", "extract", "index",
        "evaluate", "drift", "golden_production", "golden_candidate", "promote", "version", "push",
    }  # fmt: skip
    assert expected <= set(states), states
    assert all(s == "COMPLETED" for values in states.values() for s in values), states
    keys = {a.key for a in artifacts}
    assert {"retrain-summary", "stages", "metrics", "golden"} <= keys, keys
    assert flow_run.labels.get("git.revision") and flow_run.labels.get("dvc.outputs")

    # DVC: every output of the run is in the S3 remote (nothing left to push)
    status = sh([sys.executable, "-m", "dvc", "status", "--cloud", "--json"], project)
    assert status.strip() in ("{}", ""), status
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    assert {"train", "clean", "index", "evaluate", "production", "drift", "promote"} <= set(lock)

    # the registry holds the promoted model, complete, with the candidate's metrics
    assert summary["decision"]["outcome"] == "promoted", summary["decision"]
    # production before night 1: version 0 (the pretrained backbone) that day 0's ingestion registered
    day0 = retrained.day0["refresh"]
    assert day0["outcome"] == "version 0" and day0["index_size"] > 0, day0
    assert summary["decision"]["production_before"] == day0["production_after"]
    assert any(" vs production " in reason for reason in summary["decision"]["reasons"])
    registry = registry_of(seaweed, retrained.bucket)
    pointer = registry.production()
    assert pointer is not None and registry.is_complete(pointer.version)
    night2 = retrained.night2.result()["decision"]
    assert pointer.version == night2["production_after"]  # night 2 promoted after night 1
    # between the nights, day 1's index images were served with night 1's model (an index refresh)
    refresh = retrained.day1["refresh"]
    assert refresh["outcome"] == "refreshed", refresh
    assert refresh["production_before"] == summary["decision"]["production_after"]
    assert night2["production_before"] == refresh["production_after"]
    weights = {
        v: {e.path: e.sha256 for e in registry.manifest(v)}["model/weights.pt"] for v in pointer.history
    }
    assert weights[refresh["production_after"]] == weights[refresh["production_before"]]
    assert refresh["index_size"] == len(_ok_ids(project)["index"])


def test_a_night_with_nothing_new_is_unchanged_and_registers_nothing(retrained: Nights) -> None:
    assert retrained.unchanged.is_completed(), retrained.unchanged.message
    summary = retrained.unchanged.result()
    assert summary["outcome"] == "unchanged"
    assert summary["production"] == retrained.night1.result()["decision"]["production_after"]
    assert retrained.versions_after_unchanged == retrained.versions_after_night1
    assert len(retrained.versions_after_night1) == 2  # version 0 and night 1's model


def _ok_ids(project: Path) -> dict[str, set[str]]:
    """Ok image ids per split of the raw ingestion manifests (every batch)."""
    from landmark.data.manifest import read_manifest

    ids = {}
    for path in sorted((project / "data" / "ingest" / "manifests").glob("*.parquet")):
        frame = read_manifest(path)
        ids[path.stem] = set(frame.loc[frame["status"] == "ok", "image_id"])
    return ids


def test_night_two_uses_exactly_the_ok_rows_of_both_batches(retrained: Nights) -> None:
    import numpy as np

    from landmark.data.formats import read_dataset
    from landmark.data.manifest import read_manifest
    from landmark.features.store import stored_ids
    from landmark.retrieval.index import load_index

    assert retrained.night2.is_completed(), retrained.night2.message
    project = retrained.project
    ok = _ok_ids(project)
    manifests = {
        p.stem: read_manifest(p) for p in (project / "data" / "ingest" / "manifests").glob("*.parquet")
    }
    batches = {s: set(m["batch_id"]) for s, m in manifests.items()}
    assert all(len(b) == 2 for b in batches.values()), batches  # one batch per day and split
    truncated = manifests["train"].loc[manifests["train"]["reason"].str.startswith("truncated"), "image_id"]
    assert len(truncated) == 2  # feed.corrupt_images of day 1, quarantined
    catalog = read_dataset(project / "build" / "catalog")
    assert {s: set(catalog.ok_ids(s)) for s in catalog.splits} == ok
    assert not set(truncated) & set(catalog.ok_ids("train"))
    # training set: the cleaned manifest covers every ok train row of both batches (kept or quarantined by clean)
    cleaned = read_manifest(project / "build" / "clean" / "train.parquet")
    assert set(cleaned["image_id"]) == ok["train"]
    # index: exactly the ok index images
    index = load_index(project / "build" / "index")
    assert set(index.ids) == ok["index"]
    # evaluation: one ranking column per query the catalog's ground truth keeps
    ranks = np.load(project / "build" / "eval" / "ranks.npy")
    assert ranks.shape == (len(ok["index"]), len(catalog.retrieval))
    assert {q.query_id for q in catalog.retrieval} <= ok["test"]
    summary = retrained.night2.result()
    assert summary["catalog"] == {s: len(v) for s, v in ok.items()}
    assert summary["production"] == retrained.night1.result()["decision"]["production_after"]
    # local features (same extractor): shards written before night 2 are untouched, the new shards hold
    # exactly the images that arrived with day 1
    night1_ids = _night1_ids(retrained)
    for split, before in retrained.local_shards_before_night2.items():
        store = project / "build" / "local" / split
        after = shard_times(store)
        assert all(after[name] == mtime for name, mtime in before.items()), split
        assert set(stored_ids_local(store)) == ok[split]
        assert len(stored_ids_local(store)) == len(ok[split])  # nothing computed twice
        assert night1_ids[split] < ok[split]
    # bootstrap descriptors: production changed (night 1 promoted), so every split was extracted anew (by the
    # ingestion of day 1, which the night found done)
    boot = shard_times(project / "build" / "features_boot")
    assert not set(boot.items()) & set(retrained.boot_shards_after_night1.items())
    assert not summary["stages"]["bootstrap"]["ran"]
    assert set(stored_ids(project / "build" / "features_boot" / "train")) == ok["train"]


def _night1_ids(retrained: Nights) -> dict[str, set[str]]:
    """Ids of the local-feature shards that existed before night 2 (their ids files are unchanged since)."""
    ids: dict[str, set[str]] = {}
    for split, shards in retrained.local_shards_before_night2.items():
        store = retrained.project / "build" / "local" / split
        names = [n for n in shards if n.endswith(".ids.txt")]
        ids[split] = {line for n in names for line in (store / n).read_text().splitlines() if line}
    return ids


def stored_ids_local(store: Path) -> list[str]:
    from landmark.features.local_store import stored_local_ids

    return list(stored_local_ids(store))


def render(command: str, params: dict[str, Any]) -> str:
    """A dvc.yaml command with its ``${section.key}`` references filled in from params.yaml."""
    import re

    def value(match: re.Match[str]) -> str:
        node: Any = params
        for part in match.group(1).split("."):
            node = node[part]
        return str(node)

    return re.sub(r"\$\{([a-z_.]+)\}", value, " ".join(command.split()))


def test_dvc_repro_after_the_nights_runs_nothing_and_the_lock_holds_the_commands(retrained: Nights) -> None:
    """The flows ran the stages of dvc.yaml: `dvc repro` afterwards only (re)creates the world the demo wrote
    outside DVC (the same bytes), reruns nothing else, and a second `dvc repro` runs nothing at all."""
    assert retrained.night2.is_completed(), retrained.night2.message
    project = retrained.project
    from landmark.platform.infra import run_dvc  # puts this environment's `landmark` on the stages' PATH

    first = run_dvc(["repro"], project, timeout_s=600.0).stdout
    assert "Running stage 'synth'" in first
    assert [line for line in first.splitlines() if line.startswith("Running stage")] == [
        "Running stage 'synth':"
    ], first
    second = run_dvc(["repro"], project, timeout_s=600.0).stdout
    assert "Running stage" not in second, second
    params = yaml.safe_load((project / "params.yaml").read_text())
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    assert set(lock) == set(stages)
    for name, stage in stages.items():
        assert " ".join(lock[name]["cmd"].split()) == render(stage["cmd"], params), name


def test_store_down_during_promotion_keeps_production(retrained: Nights, seaweed: SeaweedInfo) -> None:
    """The store is down when the promote task runs: the flow fails naming the store, production still names the
    complete version it named before, and once the store is back the same promotion completes."""
    from prefect import flow

    from flows.common import open_run
    from flows.tasks import promote_candidate
    from landmark.platform.infra import start_seaweed, stop_seaweed

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


def test_cron_deployment_runs_on_a_local_worker(tmp_path: Path, seaweed: SeaweedInfo) -> None:
    """`flows.deploy.register` + `prefect_services.start_worker`: a every-minute schedule fires, the worker runs it."""
    from flows.demo import arrive
    from landmark.platform.prefect_services import (
        api_url,
        start_prefect_server,
        start_worker,
        stop_prefect_server,
        stop_worker,
    )

    project = make_project(tmp_path / "project", seaweed, f"sched-{uuid.uuid4().hex[:10]}")
    arrive(project, 1)
    run_dir = tmp_path / "services"
    port = next(p for p in range(4310, 4400) if port_is_free(p))
    script = f"""
import sys
from flows.common import open_run
from flows.deploy import DeploymentSpec, register
from flows.ingest import ingest
run = open_run({str(project)!r}, None, [])
ids = register(run, [DeploymentSpec(ingest, "every-minute", "* * * * *")],
               parameters={{"version": False}})
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
