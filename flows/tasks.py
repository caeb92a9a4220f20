"""Prefect tasks that call ``landmark`` stage functions in-process, for the on-demand flows (rebuild-index,
evaluate) and the drift checks; the retraining and ingestion flows run the stages of ``dvc.yaml`` instead
(:mod:`flows.pipeline`).

Retries only where another attempt can help: talking to the object store (fetching the production model,
pushing versions). Stages over local data get none: a corrupt image or a failed quality gate fails the same way
twice. Tasks take a :class:`~flows.common.Run` (typed config + project root) and absolute paths, and never cache
across runs (inputs on disk change under the same arguments).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.common import Run, flatten, publish_markdown, publish_table
from landmark.features.global_extract import (
    GlobalChunk,
    GlobalChunkResult,
    extract_global_chunk,
    finish_split,
    plan_extract,
)
from landmark.features.local_extract import LocalChunk, LocalChunkResult, extract_local_chunk
from landmark.stages.local import LocalSummary, finish_local, plan_local


def _stage_task(name: str, retries: int = 0) -> Any:
    return task(name=name, retries=retries, retry_delay_seconds=5, cache_policy=NO_CACHE)


def _shard_task(stage: str) -> Any:
    """A task of one chunk (one store shard) of ``stage``, its run named ``<stage>-<split>-shard-NNNNN``: run on
    whatever worker the task runner picks, a failed or lost attempt is retried and shows on its task run."""
    return task(
        name=f"{stage}-shard",
        task_run_name=stage + "-{chunk.store_name}-shard-{chunk.number:05d}",
        retries=2,
        retry_delay_seconds=5,
        cache_policy=NO_CACHE,
    )


@_stage_task("fetch-production", retries=2)
def fetch_production(run: Run) -> dict[str, Any] | None:
    """Download the production model (and its index) from the registry, or None when nothing is in production.

    Reuses an earlier download of the same version (the registry verifies checksums while downloading).
    """
    from landmark.stages.promote import open_registry

    registry = open_registry(run.cfg)
    pointer = registry.production()
    if pointer is None:
        get_run_logger().info("no production model yet: bootstrapping from the pretrained backbone")
        return None
    dest = run.path(run.cfg.paths.models) / "production" / pointer.version
    if not (dest / "MANIFEST.json").is_file():
        registry.download(pointer.version, dest)
    return {"version": pointer.version, "model_dir": str(dest / "model"), "index_dir": str(dest / "index")}


@_stage_task("extract")
def extract_features(
    run: Run, data_dir: Path, out_dir: Path, model_dir: Path | None, splits: Sequence[str] = ()
) -> dict[str, int]:
    """Global descriptors of ``splits`` (all when empty) with ``model_dir`` (None = pretrained backbone)."""
    from landmark.stages.extract import extract

    return extract(run.cfg, data_dir, out_dir, splits=splits, model_dir=model_dir, progress=False)


@_shard_task("extract")
def extract_shard(chunk: GlobalChunk) -> GlobalChunkResult:
    """One chunk of the extract stage (one store shard)."""
    return extract_global_chunk(chunk)


def extract_features_per_shard(
    run: Run, data_dir: Path, out_dir: Path, model_dir: Path | None, splits: Sequence[str] = ()
) -> dict[str, int]:
    """The extract stage with one Prefect task per shard (``flows.dask_address`` set: the Dask task runner spreads
    them over the cluster, and the UI shows the fan-out and each shard's retries). Same store as
    :func:`extract_features`: the stage's own plan, chunk function and bookkeeping."""
    plans = plan_extract(run.cfg, data_dir, out_dir, splits=splits, model_dir=model_dir)
    added: dict[str, int] = {}
    for plan in plans:
        results = extract_shard.map(list(plan.chunks)).result() if plan.chunks else []
        added[plan.split], bad = finish_split(run.cfg, plan, results)
        get_run_logger().info(
            "extract %s: %d shards, %d descriptors added, %d images skipped",
            plan.split, len(plan.chunks), added[plan.split], len(bad),
        )  # fmt: skip
    return added


@_stage_task("local-features")
def local_features(run: Run, data_dir: Path, out_dir: Path) -> dict[str, Any]:
    """Local features (``local.backend``) of every split, resumable: train for the cleaning, index and test for
    spatial re-ranking, train and test for the recognition inlier term."""
    from landmark.stages.local import local

    summaries = {
        split: local(run.cfg, data_dir, out_dir, split=split, progress=False) for split in LOCAL_SPLITS
    }
    return {split: _summary_dict(summary) for split, summary in summaries.items()}


LOCAL_SPLITS = ("train", "index", "test")


@_shard_task("local")
def local_shard(chunk: LocalChunk) -> LocalChunkResult:
    """One chunk of the local stage (one local-store shard)."""
    return extract_local_chunk(chunk)


def local_features_per_shard(
    run: Run, data_dir: Path, out_dir: Path, splits: Sequence[str] = LOCAL_SPLITS
) -> dict[str, dict[str, Any]]:
    """The local stage with one Prefect task per shard (``flows.dask_address`` set: the Dask task runner spreads
    them over the cluster). Same store as :func:`local_features`: the stage's own plan, chunk function and
    bookkeeping."""
    out: dict[str, dict[str, Any]] = {}
    for split in splits:
        plan = plan_local(run.cfg, data_dir, out_dir, split=split)
        chunks = list(plan.work.chunks)
        summary = finish_local(run.cfg, plan, local_shard.map(chunks).result() if chunks else [])
        get_run_logger().info(
            "local %s: %d shards, %d images extracted, %d skipped",
            split, len(chunks), summary.extracted, len(summary.bad_images),
        )  # fmt: skip
        out[split] = _summary_dict(summary)
    return out


def _summary_dict(summary: LocalSummary) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(summary).items()}


@_stage_task("index")
def build_search_index(run: Run, data_dir: Path, features_dir: Path, out_dir: Path) -> dict[str, Any]:
    from landmark.stages.index import build_index

    return build_index(run.cfg, data_dir, features_dir, out_dir)


@_stage_task("evaluate")
def evaluate_model(
    run: Run,
    data_dir: Path,
    features_dir: Path,
    out_dir: Path,
    index_dir: Path | None,
    label: str,
    local_dir: Path | None = None,
) -> dict[str, Any]:
    """Offline retrieval + recognition metrics of one model's features; a table artifact per model."""
    from landmark.ops.drift import log_metrics
    from landmark.stages.evaluate import evaluate

    metrics = evaluate(run.cfg, data_dir, features_dir, out_dir, index_dir=index_dir, local_dir=local_dir)
    headline = headline_metrics(metrics)
    numbers = {k: float(v) for k, v in headline.items() if isinstance(v, int | float)}
    if numbers and label != "baseline":  # the dashboard's mAP/GAP-over-time panels follow the new models
        log_metrics(numbers, run.path(run.cfg.drift.workspace), run.cfg.drift.project, tags=[label])
    publish_table(
        f"metrics-{label}", [{"metric": k, "value": v} for k, v in headline.items()], f"{label} metrics"
    )
    return metrics


HEADLINE = (
    "revisitop.easy.mAP",
    "revisitop.medium.mAP",
    "revisitop.hard.mAP",
    "gldv2_retrieval.mAP@100",
    "recognition.GAP",
    "recognition.top1",
)


def headline_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The metrics people look at first, from a ``metrics.json`` (those the dataset has)."""
    flat = flatten(metrics)
    return {name: flat[name] for name in HEADLINE if name in flat}


@_stage_task("drift")
def drift_check(
    run: Run,
    reference: Path,
    current: Path,
    out_dir: Path,
    purpose: str,
    reference_features: Path | None = None,
    current_features: Path | None = None,
    current_split: str | None = None,
) -> dict[str, Any]:
    """Evidently drift report of ``current`` vs ``reference`` (image statistics + embeddings): HTML, drift.json,
    and a snapshot in the monitoring workspace. Drift is reported, not raised: the promotion gate decides."""
    from landmark.stages.drift import drift

    summary = drift(
        run.cfg,
        reference,
        current,
        out_dir,
        purpose=purpose,
        reference_features=reference_features,
        current_features=current_features,
        current_split=current_split,
        workspace=run.path(run.cfg.drift.workspace),
    )
    result = summary.result.to_dict()
    verdict = "within bounds" if result["passed"] else "OUT OF BOUNDS"
    publish_markdown(
        f"drift-{purpose}",
        f"## Drift ({purpose}): {verdict}\n\n"
        f"drifted share {result['drift_share']:.3f} (bound {result['max_drift_share']:.3f})\n\n"
        + "\n".join(f"- {name}: `{path}`" for name, path in summary.files.items()),
        "Evidently drift report",
    )
    return {**result, "files": dict(summary.files), "drift_json": str(out_dir / "drift.json")}


@_stage_task("promote")
def promote_candidate(
    run: Run,
    model_dir: Path,
    index_dir: Path,
    metrics_path: Path,
    quality_path: Path,
    drift_path: Path,
    baseline_metrics_path: Path | None,
) -> dict[str, Any]:
    """The promotion gate; publishes and switches production when it passes. Not retried: a promotion that lost
    the store fails clearly, production still names a complete version, and the next run promotes."""
    from landmark.stages.promote import promote

    summary = promote(
        run.cfg,
        model_dir,
        index_dir,
        metrics_path,
        quality_path,
        drift_path,
        production_metrics_path=baseline_metrics_path,
    )
    record = summary.record()
    publish_markdown(
        "promotion",
        f"## Promotion: {summary.outcome.upper()}\n\n"
        + "\n".join(f"- {reason}" for reason in summary.decision.reasons)
        + f"\n\nproduction: `{summary.previous}` -> `{summary.production}` (decision `{summary.decision_id}`)",
        "Promotion gate decision",
    )
    return record


def metrics_comparison(before: dict[str, Any] | None, after: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows metric / before / after / delta for the headline metrics."""
    old = headline_metrics(before) if before else {}
    new = headline_metrics(after)
    return [
        {
            "metric": name,
            "before": old.get(name, ""),
            "after": value,
            "delta": round(value - old[name], 3) if isinstance(old.get(name), (int, float)) else "",
        }
        for name, value in new.items()
    ]
