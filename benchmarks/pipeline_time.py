"""Wall time of each task of the demo: two nights of the pipeline on the synthetic feed (demo settings).

Starts a private SeaweedFS (and, without PREFECT_API_URL, Prefect's temporary server), builds the demo's scratch
project under ``--work``, tells the demo's story (ingest day 0, night 1, ingest the other days, night 2) and
reads every task run's start/end from the Prefect API. Writes ``benchmarks/results/pipeline_time.json`` (per
flow run: seconds, outcome, and per task: seconds).

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
from flows.demo import DEMO_SETTINGS, deep_update, scratch_project, tell_story


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

    from landmark.config import load_config
    from landmark.platform.infra import start_seaweed, stop_seaweed

    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    seaweed = start_seaweed(args.work / "s3")
    try:
        project_cfg = load_config(PROJECT_ROOT / "params.yaml")
        imc = str((PROJECT_ROOT / project_cfg.paths.imc).resolve())
        real = [str((PROJECT_ROOT / f).resolve()) for f in project_cfg.train.distill_real]
        base = deep_update({"paths": {"imc": imc}, "train": {"distill_real": real}}, DEMO_SETTINGS)
        settings = deep_update(base, parse_sets(args.sets))
        project = scratch_project(
            args.work / "project",
            settings,
            endpoint=seaweed.endpoint,
            credentials_file=seaweed.credentials_file,
            bucket="landmark",
        )
        start = time.perf_counter()
        story = tell_story(project, lambda text: None)
        total = time.perf_counter() - start
        runs = [flow_run_times(name, state) for name, state in story.runs]
    finally:
        stop_seaweed(args.work / "s3")
    write_result(
        "pipeline_time",
        {
            "what": "make demo: ingest day 0, night 1, ingest the other days, night 2 (demo settings)",
            "settings": settings,
            "total_seconds": round(total, 1),
            "flow_runs": runs,
        },
        args.out,
    )


def flow_run_times(name: str, state: Any) -> dict[str, Any]:
    """One flow run of the story: its wall seconds, outcome and tasks."""
    rows = task_times(state.state_details.flow_run_id)
    result = state.result()
    outcome = result.get("outcome") or f"+{result.get('batch', {}).get('added', 0)} images"
    seconds = sum(row["seconds"] or 0.0 for row in rows)
    return {
        "run": name,
        "outcome": outcome,
        "task_seconds": round(seconds, 1),
        "tasks": [{k: v for k, v in row.items() if k != "start"} for row in rows],
        "metrics_before_after": result.get("comparison", []),
    }


if __name__ == "__main__":
    main()
