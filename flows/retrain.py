"""The nightly retraining flow: the stages of ``dvc.yaml`` from ``validate`` to ``promote``, then versioning.

Each task reproduces one DVC stage (:mod:`flows.pipeline`), so the night does exactly what ``dvc repro`` does
and ``dvc.lock`` records it. Every stage reads the validated catalog the ingestion flow keeps growing. The
``production`` stage fetches the model in production (the pretrained backbone before the first promotion); it
bootstraps the cleaning kNN and is evaluated on the same test split as the "before" the candidate must beat.

A night with nothing new (no new ok rows, no param change, no code change: ``dvc status`` reports every stage
up to date) ends at once with outcome ``unchanged`` and registers nothing.

Run it: ``python -m flows.retrain`` in the project (its ``params.yaml`` is the configuration), or let the nightly
deployment (``make schedule``) run it.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.common import (
    exit_when_unreachable,
    markdown_table,
    open_run,
    publish_markdown,
    publish_table,
    task_runner,
    version_and_push,
)
from flows.pipeline import catalog_counts, changed_stages, read_json, run_stages, stage_outputs
from flows.tasks import drift_check, headline_metrics, metrics_comparison

RETRAIN_STAGES = (
    "production",
    "bootstrap",
    "local",
    "baseline",
    "clean",
    "train",
    "extract",
    "index",
    "evaluate",
    "drift",
    "golden_production",
    "golden_candidate",
    "promote",
)


@flow(name="retrain", log_prints=True)
def retrain(project_dir: str | None = None, version: bool = True) -> dict[str, Any]:
    """Validate, clean, retrain, re-index, evaluate, check drift and gate the promotion of a new global model.

    Args:
        project_dir: the project (git + DVC repository); default: the one this file belongs to.
        version: ``dvc push`` the outputs at the end (``flows.dvc_push`` decides the push).
    """
    start = time.perf_counter()
    logger = get_run_logger()
    run = open_run(project_dir, None, [])
    gate = run_stages(run, ["validate"])
    serving = serving_drift(run)  # live traffic changes even on a night with nothing new to learn from
    pending = changed_stages(run.root, RETRAIN_STAGES)
    if not pending and not gate["validate"]["ran"]:
        summary = {**unchanged_summary(run, time.perf_counter() - start), "serving_drift": serving}
        publish_markdown("retrain-summary", summary_markdown(summary), "Nightly retraining: what happened")
        logger.info("nothing new since the last night: unchanged")
        return summary
    stages = {**gate, **run_stages(run, RETRAIN_STAGES)}
    ran = [name for name, result in stages.items() if result["ran"]]
    versions = version_and_push(run, ran) if version and ran else None
    summary = {**night_summary(run, stages, versions, time.perf_counter() - start), "serving_drift": serving}
    publish_artifacts(run, summary)
    publish_markdown("retrain-summary", summary_markdown(summary), "Nightly retraining: what happened")
    logger.info("retrain finished in %.0fs: %s", summary["seconds"], summary["outcome"])
    return summary


def serving_drift(run: Any) -> dict[str, Any] | None:
    """Drift of the day's served queries (the query log of ``landmark serve``) against the catalog's train split,
    with the production model's descriptors; None when nothing was served."""
    from landmark.serving.query_log import numbered_files, read_window

    log = run.path(run.cfg.serve.log_dir)
    if not numbered_files(log) or len(read_window(log, run.cfg.serve.log_window).stats) < 2:
        return None
    return drift_check(
        run,
        run.path(run.cfg.paths.catalog),
        log,
        run.path(run.cfg.paths.reports) / "drift_serving",
        "serving",
        reference_features=run.path(run.cfg.paths.features_boot),
    )


def unchanged_summary(run: Any, seconds: float) -> dict[str, Any]:
    """The summary of a night with nothing to do: the last night's state, outcome ``unchanged``."""
    outputs = {name: read_json(path) for name, path in stage_outputs(run).items()}
    serving = outputs["promotion"].get("production_after") or outputs["production"].get(
        "version", "pretrained"
    )
    return {
        "outcome": "unchanged",
        "reason": "no new ok rows, no param change and no code change since the last night",
        "production": serving,
        "stages": {},
        "seconds": round(seconds, 1),
    }


def night_summary(
    run: Any, stages: dict[str, dict[str, Any]], versions: dict[str, Any] | None, seconds: float
) -> dict[str, Any]:
    """What the night did, from the JSON summaries its stages wrote."""
    outputs = {name: read_json(path) for name, path in stage_outputs(run).items()}
    decision = outputs["promotion"]
    outcome = decision.get("outcome", "unknown") if stages.get("promote", {}).get("ran") else "unchanged"
    return {
        "outcome": outcome,
        "production": outputs["production"].get("version", "pretrained"),
        "data_quality": outputs["validate"],
        "catalog": catalog_counts(run),
        "cleaning": outputs["clean"],
        "training": outputs["training"].get("train", outputs["training"]),
        "metrics_before": headline_metrics(outputs["baseline"]),
        "metrics_after": headline_metrics(outputs["metrics"]),
        "comparison": metrics_comparison(outputs["baseline"], outputs["metrics"]),
        "drift": outputs["drift"],
        "decision": decision,
        "stages": stages,
        "versions": versions,
        "seconds": round(seconds, 1),
    }


def publish_artifacts(run: Any, summary: dict[str, Any]) -> None:
    """Tables for the Prefect UI (stages, metrics before/after) and the evaluation metrics on the dashboard."""
    from landmark.ops.drift import log_metrics

    publish_table(
        "stages",
        [{"stage": k, "ran": v["ran"], "seconds": v["seconds"]} for k, v in summary["stages"].items()],
        "DVC stages of this night (ran = inputs changed)",
    )
    publish_table("metrics", summary["comparison"], "Production (before) vs candidate (after)")
    golden = summary["decision"].get("golden", [])
    golden_reasons = [r for r in summary["decision"].get("reasons", []) if r.startswith("golden")]
    publish_markdown(
        "golden",
        "## Real photos: golden sets, production vs candidate (mAP)\n\n"
        + markdown_table(golden)
        + "\n\n"
        + "\n".join(f"- {r}" for r in golden_reasons),
        "Golden real-photo sets: the gate's check that real users' results do not get worse",
    )
    numbers = {k: float(v) for k, v in summary["metrics_after"].items() if isinstance(v, int | float)}
    numbers |= golden_numbers(golden)
    if summary["stages"].get("evaluate", {}).get("ran") and numbers:
        log_metrics(numbers, run.path(run.cfg.drift.workspace), run.cfg.drift.project, tags=["candidate"])


def golden_numbers(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The candidate's golden mAPs and its worst loss to production, as dashboard metrics."""
    numbers = {f"golden.{r['set']}.{r['protocol']}": float(r["candidate"]) for r in rows}
    if rows:
        numbers["golden.worst_delta"] = min(float(r["delta"]) for r in rows)
    return numbers


def summary_markdown(summary: dict[str, Any]) -> str:
    """The night's story in one markdown page (also what the demo prints)."""
    if summary["outcome"] == "unchanged" and "decision" not in summary:
        return "\n".join(
            [
                f"# Retraining run ({summary['seconds']:.0f} s): UNCHANGED",
                f"- {summary['reason']}",
                f"- production stays **{summary['production']}**; no model trained, no version registered",
            ]
        )
    cleaning = summary["cleaning"]
    drift = summary["drift"]
    decision = summary["decision"]
    training = summary["training"]
    ran = [name for name, result in summary["stages"].items() if result["ran"]]
    lines = [
        f"# Retraining run ({summary['seconds']:.0f} s): {summary['outcome'].upper()}",
        f"- **catalog** (validated, ok images): {summary['catalog']}",
        f"- **bootstrap model** (production): {summary['production']}",
        f"- **data quality**: {'passed' if summary['data_quality'].get('passed') else 'FAILED'}",
        f"- **cleaning**: kept {cleaning.get('kept')} of {cleaning.get('images')} train images "
        f"(dropped {cleaning.get('dropped_by_reason', {})}); classes {cleaning.get('classes_kept')} of "
        f"{cleaning.get('classes_before')}",
        f"- **training**: {training.get('steps')} steps, {training.get('train_seconds', 0):.0f} s",
        f"- **drift** (test vs train): share {drift.get('drift_share', float('nan')):.3f}, bound "
        f"{drift.get('max_drift_share', float('nan')):.3f} -> "
        f"{'within bounds' if drift.get('passed') else 'OUT OF BOUNDS'}",
        f"- **promotion**: {summary['outcome'].upper()} (production {decision.get('production_before')} -> "
        f"{decision.get('production_after')})",
        f"- **stages run**: {', '.join(ran) or 'none'}",
        "",
        "## Metrics: production model (before) vs candidate (after)",
        markdown_table(summary["comparison"]),
        "",
        "## Real photos: golden sets, production vs candidate (mAP)",
        markdown_table(decision.get("golden", [])),
        "",
        "## Gate reasons",
        *[f"- {reason}" for reason in decision.get("reasons", [])],
    ]
    return "\n".join(lines)


@exit_when_unreachable
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Run the retraining flow once in this project (params.yaml is its configuration)."
    )
    parser.add_argument("--no-version", action="store_true", help="skip dvc push")
    parser.add_argument("--json", default=None, help="also write the run summary here")
    args = parser.parse_args(argv)
    run = open_run(None, None, [])
    runner = task_runner(run.cfg)
    flow_fn = retrain.with_options(task_runner=runner) if runner is not None else retrain
    summary = flow_fn(version=not args.no_version)
    print(summary_markdown(summary))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
