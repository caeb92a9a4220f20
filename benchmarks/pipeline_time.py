"""Wall time of each stage of the demo pipeline: the retraining flow on the synthetic default (demo settings).

Starts a private SeaweedFS (and, without PREFECT_API_URL, Prefect's temporary server), builds the demo's scratch
project under ``--work``, runs the ``retrain`` flow once and reads every task run's start/end from the Prefect
API. Writes ``benchmarks/results/pipeline_time.json`` (per task: seconds; per stage name: summed seconds).

    python benchmarks/pipeline_time.py [--work build/bench/pipeline] [--set train.epochs=2 ...]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result

from flows.common import PROJECT_ROOT
from flows.demo import DEMO_SETTINGS, deep_update, scratch_project


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``a.b=1`` strings into a nested dict (YAML-parsed values)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, _, value = item.partition("=")
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return out


def task_times(flow_run_id: Any) -> list[dict[str, Any]]:
    """Every task run of the flow run with its wall seconds, in start order."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    rows = [
        {
            "task": r.name,
            "stage": r.name.rsplit("-", 1)[0],
            "seconds": round((r.end_time - r.start_time).total_seconds(), 2)
            if r.start_time and r.end_time
            else None,
            "state": r.state_type.value if r.state_type else None,
            "start": r.start_time,
        }
        for r in runs
    ]
    return sorted(rows, key=lambda row: row["start"] or 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=PROJECT_ROOT / "build" / "bench" / "pipeline")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from flows.retrain import retrain
    from landmark.infra import start_seaweed, stop_seaweed

    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    seaweed = start_seaweed(args.work / "s3")
    try:
        settings = deep_update(deep_update({}, DEMO_SETTINGS), parse_sets(args.sets))
        project = scratch_project(
            args.work / "project",
            settings,
            endpoint=seaweed.endpoint,
            credentials_file=seaweed.credentials_file,
            bucket="landmark",
        )
        start = time.perf_counter()
        state = retrain(project_dir=str(project), return_state=True)
        total = time.perf_counter() - start
        summary = state.result()
        rows = task_times(state.state_details.flow_run_id)
    finally:
        stop_seaweed(args.work / "s3")
    per_stage: dict[str, float] = {}
    for row in rows:
        per_stage[row["stage"]] = round(per_stage.get(row["stage"], 0.0) + (row["seconds"] or 0.0), 2)
    write_result(
        "pipeline_time",
        {
            "what": "retrain flow on the synthetic default with the demo settings (make demo)",
            "settings": settings,
            "flow_seconds": round(total, 1),
            "stages_seconds": per_stage,
            "tasks": [{k: v for k, v in row.items() if k != "start"} for row in rows],
            "decision": summary["decision"]["outcome"],
            "metrics_before_after": summary["comparison"],
        },
        args.out,
    )


if __name__ == "__main__":
    main()
