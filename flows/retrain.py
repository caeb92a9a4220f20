"""The nightly retraining flow: validate -> bootstrap -> local features -> clean -> train -> index -> evaluate ->
drift -> promote -> version.

The bootstrap model is the production model from the registry when there is one, else the pretrained backbone.
It serves twice: its train descriptors drive the cleaning kNN, and its evaluation on the same test set is the
"before" the candidate must beat (a fair comparison: same data, same protocol, same night). Every stage writes
to the paths of ``params.yaml`` (the same ones ``dvc.yaml`` uses), so the ``version`` task can ``dvc commit``
and ``dvc push`` what the run produced.

Run it: ``python -m flows.retrain`` (add ``--set section.key=value`` overrides), or let the nightly deployment
(``make schedule``) run it.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.common import Run, markdown_table, open_run, publish_markdown, task_runner, version_and_push
from flows.tasks import (
    build_search_index,
    clean_train_set,
    drift_check,
    evaluate_model,
    extract_features,
    fetch_production,
    local_features,
    metrics_comparison,
    promote_candidate,
    synth_world,
    train_candidate,
    validate_data,
)


def retrain_paths(run: Run, data: str | None) -> dict[str, Path]:
    """Every path the flow reads or writes, from ``params.yaml`` (``data`` overrides the dataset directory)."""
    p = run.cfg.paths
    models = run.path(p.models)
    return {
        "data": run.path(data or p.synth),
        "reports": run.path(p.reports),
        "features_boot": run.path(p.features_boot),
        "eval_baseline": run.path(p.eval) / "baseline",
        "local": run.path(p.local),
        "clean": run.path(p.clean),
        "candidate": models / "candidate",
        "features": run.path(p.features),
        "index": run.path(p.index),
        "eval": run.path(p.eval),
        "drift": run.path(p.reports) / "drift",
    }


@flow(name="retrain", log_prints=True)
def retrain(
    project_dir: str | None = None,
    params: str | None = None,
    overrides: list[str] | None = None,
    data: str | None = None,
    version: bool = True,
) -> dict[str, Any]:
    """Clean, retrain, re-index, evaluate, check drift and gate the promotion of a new global model.

    Args:
        project_dir: the project (git + DVC repository); default: the one this file belongs to.
        params: params file (default ``<project_dir>/params.yaml``).
        overrides: ``section.key=value`` overrides, as ``landmark --set``.
        data: dataset directory (default ``paths.synth``; generated when it is the synthetic default and missing).
        version: ``dvc commit`` + ``dvc push`` the outputs at the end (``flows.dvc_push`` decides the push).
    """
    start = time.perf_counter()
    logger = get_run_logger()
    run = open_run(project_dir, params, overrides or [])
    paths = retrain_paths(run, data)
    stages_run = []
    if not paths["data"].exists():
        if data is not None:
            raise FileNotFoundError(f"dataset directory {paths['data']} does not exist")
        synth_world(run, paths["data"])
        stages_run.append("synth")

    quality = validate_data(run, paths["data"], paths["reports"])
    production = fetch_production(run)
    boot_model = Path(production["model_dir"]) if production else None
    extract_features(run, paths["data"], paths["features_boot"], boot_model)
    local = local_features(run, paths["data"], paths["local"])
    baseline = evaluate_model(
        run, paths["data"], paths["features_boot"], paths["eval_baseline"], None, "baseline", paths["local"]
    )
    cleaning = clean_train_set(run, paths["data"], paths["features_boot"], paths["local"], paths["clean"])
    training = train_candidate(run, paths["data"], paths["clean"] / "train.parquet", paths["candidate"])
    extract_features(run, paths["data"], paths["features"], paths["candidate"])
    build_search_index(run, paths["data"], paths["features"], paths["index"])
    metrics = evaluate_model(
        run, paths["data"], paths["features"], paths["eval"], paths["index"], "candidate", paths["local"]
    )
    drift = drift_check(
        run, paths["data"], paths["data"], paths["drift"], "retrain", paths["features"], paths["features"]
    )
    decision = promote_candidate(
        run,
        paths["candidate"],
        paths["index"],
        paths["eval"] / "metrics.json",
        paths["reports"] / "validate.json",
        Path(drift["drift_json"]),
        paths["eval_baseline"] / "metrics.json",
    )
    stages_run += ["bootstrap", "local", "clean", "train", "extract", "index", "evaluate"]  # dvc.yaml names
    versions = version_and_push(run, stages_run) if version else None

    summary = {
        "bootstrap": production["version"] if production else "pretrained backbone",
        "data_quality": quality,
        "local_features": local,
        "cleaning": cleaning,
        "training": training,
        "metrics_before": baseline,
        "metrics_after": metrics,
        "comparison": metrics_comparison(baseline, metrics),
        "drift": drift,
        "decision": decision,
        "versions": versions,
        "seconds": round(time.perf_counter() - start, 1),
    }
    publish_markdown("retrain-summary", summary_markdown(summary), "Nightly retraining: what happened")
    logger.info("retrain finished in %.0fs: %s", summary["seconds"], decision["outcome"])
    return summary


def summary_markdown(summary: dict[str, Any]) -> str:
    """The run's story in one markdown page (also what the demo prints)."""
    cleaning = summary["cleaning"]
    drift = summary["drift"]
    decision = summary["decision"]
    lines = [
        f"# Retraining run ({summary['seconds']:.0f} s)",
        f"- **bootstrap model**: {summary['bootstrap']}",
        f"- **data quality**: {'passed' if summary['data_quality']['passed'] else 'FAILED'}",
        f"- **cleaning**: kept {cleaning['kept']} of {cleaning['images']} train images "
        f"({', '.join(f'{k}: {v}' for k, v in cleaning['dropped'].items()) or 'none dropped'}); "
        f"classes {cleaning['classes_kept']} of {cleaning['classes_before']}",
        f"- **training**: {summary['training']['steps']} steps, {summary['training']['seconds']:.0f} s",
        f"- **drift** (test vs train): share {drift['drift_share']:.3f}, bound {drift['max_drift_share']:.3f} -> "
        f"{'within bounds' if drift['passed'] else 'OUT OF BOUNDS'}",
        f"- **promotion**: {decision['outcome'].upper()} (production {decision['production_before']} -> "
        f"{decision['production_after']})",
        "",
        "## Metrics: bootstrap model (before) vs candidate (after)",
        markdown_table(summary["comparison"]),
        "",
        "## Gate reasons",
        *[f"- {reason}" for reason in decision["reasons"]],
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the retraining flow once (Prefect shows it in the UI).")
    parser.add_argument("--params", default=None, help="params file (default: params.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--data", default=None, help="dataset directory (default: paths.synth)")
    parser.add_argument("--no-version", action="store_true", help="skip dvc commit/push")
    parser.add_argument("--json", default=None, help="also write the run summary here")
    args = parser.parse_args(argv)
    run = open_run(None, args.params, args.overrides)
    runner = task_runner(run.cfg)
    flow_fn = retrain.with_options(task_runner=runner) if runner is not None else retrain
    summary = flow_fn(
        params=args.params, overrides=args.overrides, data=args.data, version=not args.no_version
    )
    print(summary_markdown(summary))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
