"""The periodic ingestion flow: what is new in the inbox -> catalog -> Great Expectations gate -> descriptors of
the new images with the production model -> version -> drift of the new batch against the data before it.

The steps are stages of ``dvc.yaml`` (:mod:`flows.pipeline`): ``ingest`` reads the inbox (``paths.inbox``:
dataset directories and CSVs of URLs, one per batch) batch by batch, skipping batches ingested before;
``validate`` gates the catalog and publishes the validated view (``paths.catalog``) the nightly retraining reads;
``production`` + ``bootstrap`` extract descriptors of the new images with the production model (incremental:
the night finds them done); ``index_production`` + ``refresh`` index them and publish production's model with
that index as a new registry version, so new index images are served without retraining. The newest train batch is compared with the catalog's train images that were there
before it, on image statistics and on those descriptors, and stored in the monitoring workspace; drift is
reported, not enforced: the promotion gate is where drift blocks a model.

``python -m flows.ingest``, or the ``ingest/periodic`` deployment (``make schedule``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from prefect import flow

from flows.common import exit_when_unreachable, open_run, publish_markdown, version_and_push
from flows.pipeline import catalog_counts, read_json, run_stages, stage_outputs
from flows.tasks import drift_check

INGEST_STAGES = ("ingest", "validate", "production", "bootstrap", "index_production", "refresh")


@flow(name="ingest", log_prints=True)
def ingest(project_dir: str | None = None, version: bool = True) -> dict[str, Any]:
    """Ingest the new batches of the inbox, gate them, version them and report the drift of the newest one."""
    run = open_run(project_dir, None, [])
    cfg = run.cfg
    stages = run_stages(run, INGEST_STAGES)
    outputs = stage_outputs(run)
    batch = read_json(outputs["ingest"]) if stages["ingest"]["ran"] else {}
    quality = read_json(outputs["validate"])
    ran = [name for name, result in stages.items() if result["ran"]]
    versions = version_and_push(run, ran) if version and ran else None
    added = int(batch.get("added", 0))
    new_train = [b for b in batch.get("batches", []) if b["split"] == "train" and b["added"]]
    drift: dict[str, Any] | None = None
    earlier = catalog_counts(run).get("train", 0) - sum(int(b["added"]) for b in new_train)
    if new_train and earlier > 0:  # the first batch has nothing before it to be compared with
        drift = drift_check(
            run,
            run.path(cfg.paths.catalog),
            run.path(cfg.paths.ingest),
            run.path(cfg.paths.reports) / "drift_ingest",
            "ingest",
            reference_features=run.path(cfg.paths.features_boot),
            current_features=run.path(cfg.paths.features_boot),
            current_split="train",
        )
    refresh = (
        read_json(run.path(cfg.paths.reports) / "index_refresh.json") if stages["refresh"]["ran"] else {}
    )
    quarantined = batch.get("quarantined", {})
    publish_markdown(
        "ingest-summary",
        f"# Ingestion of {cfg.paths.inbox}\n\n"
        f"- inbox batches: {batch.get('inbox_batches') or 'nothing new'}\n"
        f"- added {added}, quarantined {sum(quarantined.values())} {quarantined or ''}\n"
        f"- data quality: {'passed' if quality.get('passed') else 'FAILED'}\n"
        + (f"- index: {refresh['outcome']} ({'; '.join(refresh['reasons'])})\n" if refresh else "")
        + (
            f"- drift of the newest batch: share {drift['drift_share']:.3f} "
            f"({'within bounds' if drift['passed'] else 'OUT OF BOUNDS'})\n"
            if drift
            else f"- drift: not checked ({'no new train images' if not new_train else 'the first batch'})\n"
        ),
        "Ingestion run",
    )
    return {
        "batch": batch,
        "quality": quality,
        "stages": stages,
        "versions": versions,
        "drift": drift,
        "refresh": refresh,
    }


@exit_when_unreachable
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the ingestion flow once in this project.")
    parser.add_argument("--no-version", action="store_true")
    args = parser.parse_args(argv)
    result = ingest(version=not args.no_version)
    print({k: v for k, v in result.items() if k != "versions"})


if __name__ == "__main__":
    main()
