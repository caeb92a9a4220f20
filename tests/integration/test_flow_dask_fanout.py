"""With ``flows.dask_address`` set, the extract and local steps of a flow map one Prefect task per store shard onto
a real Dask LocalCluster (prefect-dask's ``DaskTaskRunner``): Prefect's test harness records one completed task run
per shard, named after its stage, split and shard, and the stores equal the ones the stages write on their own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from landmark.config import load_config

pytest.importorskip("prefect_dask")

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def harness() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def test_extract_and_local_map_one_task_per_shard_on_dask(tiny_world, harness, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from dask.distributed import LocalCluster
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect_dask import DaskTaskRunner

    from flows.common import Run, task_runner
    from flows.tasks import extract_features_per_shard, local_features_per_shard
    from landmark.stages.extract import extract
    from landmark.stages.local import local

    settings = [
        "device=cpu", "extract.image_size=96", "extract.scales=[1.0]", "extract.batch_size=4",
        "extract.workers=0", "parallel.chunk_images=16", "local.image_size=128", "local.max_features=150",
        "local.workers=0",
    ]  # fmt: skip
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, host="127.0.0.1"
    ) as cluster:
        cfg = load_config(None, [*settings, f"flows.dask_address={cluster.scheduler_address}"])
        runner = task_runner(cfg)
        assert isinstance(runner, DaskTaskRunner)

        @flow(name="extract-fan-out", task_runner=runner)
        def fan_out() -> tuple[str, dict[str, int], dict[str, dict[str, object]]]:
            from prefect.runtime import flow_run

            run = Run(cfg, tmp_path)
            added = extract_features_per_shard(
                run, tiny_world.root, tmp_path / "flow", None, ["index", "test"]
            )
            described = local_features_per_shard(run, tiny_world.root, tmp_path / "flow-local", ["index"])
            return str(flow_run.id), added, described

        flow_run_id, added, described = fan_out()

    assert added == {"index": 40, "test": 8}
    assert described["index"]["extracted"] == 40 and described["index"]["already_stored"] == 0
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))  # type: ignore[list-item]
        )
    shard_runs = sorted(r.name for r in runs if r.name.startswith(("extract-", "local-")))
    # 40 index images in chunks of 16 -> 3 shards, 8 test images -> 1 shard
    assert shard_runs == [
        "extract-index-shard-00000", "extract-index-shard-00001", "extract-index-shard-00002",
        "extract-test-shard-00000",
        "local-index-shard-00000", "local-index-shard-00001", "local-index-shard-00002",
    ]  # fmt: skip
    assert all(r.state is not None and r.state.is_completed() for r in runs if r.name in shard_runs)

    here = load_config(None, settings)
    extract(here, tiny_world.root, tmp_path / "stage", splits=["index", "test"], progress=False)
    for split in ("index", "test"):
        flow_files = sorted((tmp_path / "flow" / split).glob("shard-*"))
        stage_files = sorted((tmp_path / "stage" / split).glob("shard-*"))
        assert [p.name for p in flow_files] == [p.name for p in stage_files]
        assert all(a.read_bytes() == b.read_bytes() for a, b in zip(flow_files, stage_files, strict=True))
    local(here, tiny_world.root, tmp_path / "stage-local", split="index", progress=False)
    flow_files = sorted((tmp_path / "flow-local" / "index").glob("shard-*"))
    stage_files = sorted((tmp_path / "stage-local" / "index").glob("shard-*"))
    assert len(flow_files) > 3 and [p.name for p in flow_files] == [p.name for p in stage_files]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(flow_files, stage_files, strict=True))
