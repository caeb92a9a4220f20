"""The pipeline of ``dvc.yaml`` as Prefect tasks: one task per DVC stage, run with ``dvc repro --single-item``.

``dvc.yaml`` is the one definition of the pipeline; the flows only choose which stages to run and in which order,
and publish what the stages wrote (their JSON summaries) as artifacts. So ``dvc.lock`` always records the
command that produced each output, ``dvc repro`` by hand and the nightly flow do exactly the same work, and a
stage whose inputs did not change is skipped by DVC (the task says so: ``ran: false``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.common import Run
from landmark.platform.infra import run_dvc

STAGE_TIMEOUT_S = 24 * 3600.0  # a GLDv2-size training night; DVC itself has no timeout
OUTPUT_LINES = 30


def lock_entry(root: Path, stage: str) -> dict[str, Any]:
    """The stage's entry in ``dvc.lock`` (empty when it never ran)."""
    lock_file = root / "dvc.lock"
    if not lock_file.is_file():
        return {}
    lock = yaml.safe_load(lock_file.read_text()) or {}
    entry = (lock.get("stages") or {}).get(stage) or {}
    return dict(entry)


def changed_stages(root: Path, stages: Sequence[str]) -> list[str]:
    """The stages among ``stages`` that ``dvc status`` reports as changed (each checked on its own)."""
    result = run_dvc(["status", "--json", *stages], root, timeout_s=600.0)
    status = json.loads(result.stdout or "{}")
    return [stage for stage in stages if stage in status]


def _run_stage(run: Run, stage: str) -> dict[str, Any]:
    before = lock_entry(run.root, stage)
    start = time.perf_counter()
    result = run_dvc(["repro", "--single-item", stage], run.root, timeout_s=STAGE_TIMEOUT_S)
    ran = lock_entry(run.root, stage) != before
    seconds = round(time.perf_counter() - start, 1)
    logger = get_run_logger()
    logger.info("stage %s: %s in %.1fs", stage, "ran" if ran else "up to date, skipped", seconds)
    if ran:  # what the stage's command printed (progress bars go to stderr and are left out)
        logger.info("%s", "\n".join(result.stdout.strip().splitlines()[-OUTPUT_LINES:]))
    return {"stage": stage, "ran": ran, "seconds": seconds}


def stage_task(stage: str, retries: int = 0) -> Any:
    """A Prefect task (named after the stage) that reproduces one DVC stage; retried only where another
    attempt can help (talking to the object store)."""
    return task(name=stage, retries=retries, retry_delay_seconds=5, cache_policy=NO_CACHE)(_run_stage)


RETRIES = {"ingest": 2, "production": 2, "promote": 0}


def run_stages(run: Run, stages: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Reproduce ``stages`` in order, one task each; returns stage -> ``{ran, seconds}``."""
    return {stage: stage_task(stage, RETRIES.get(stage, 0))(run, stage) for stage in stages}


def read_json(path: Path) -> dict[str, Any]:
    """A stage's JSON summary, or ``{}`` when the stage did not write one."""
    return dict(json.loads(path.read_text())) if path.is_file() else {}


def stage_outputs(run: Run) -> Mapping[str, Path]:
    """The JSON summaries the retraining stages write, by name (paths from params.yaml, as dvc.yaml has them)."""
    p = run.cfg.paths
    return {
        "validate": run.path(p.reports) / "validate.json",
        "ingest": run.path(p.reports) / "ingest.json",
        "production": run.path(p.production) / "production.json",
        "clean": run.path(p.clean) / "clean.json",
        "training": run.path(p.models) / "candidate" / "metrics.json",
        "baseline": run.path(p.eval) / "baseline" / "metrics.json",
        "metrics": run.path(p.eval) / "metrics.json",
        "drift": run.path(p.reports) / "drift" / "drift.json",
        "promotion": run.path(p.reports) / "promotion.json",
    }


def catalog_counts(run: Run) -> dict[str, int]:
    """Ok images per split of the validated catalog (empty before the first gate passed)."""
    from landmark.data.catalog import is_catalog, read_catalog

    catalog = run.path(run.cfg.paths.catalog)
    if not is_catalog(catalog):
        return {}
    dataset = read_catalog(catalog)
    return {split: len(dataset.ok_ids(split)) for split in dataset.splits}
