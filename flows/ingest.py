"""The periodic ingestion flow: new batch -> validate -> version -> drift check of the batch.

The source (``flows.ingest_source``: CSV of id,url, folder, ``s3://bucket/prefix`` or a synthetic world) is
read incrementally: images already in the manifest are skipped, so a run with nothing new adds nothing. The
batch's drift is measured against the training data (``paths.synth``'s train split by default) and stored in the
monitoring workspace; it is reported, not enforced: the promotion gate is where drift blocks a model.

``python -m flows.ingest [--source SRC]``, or the ``ingest/periodic`` deployment (``make schedule``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from prefect import flow

from flows.common import open_run, publish_markdown, version_and_push
from flows.tasks import drift_check, ingest_batch, validate_manifests


@flow(name="ingest", log_prints=True)
def ingest(
    project_dir: str | None = None,
    params: str | None = None,
    overrides: list[str] | None = None,
    source: str | None = None,
    reference: str | None = None,
    version: bool = True,
) -> dict[str, Any]:
    """Ingest one batch, gate it with Great Expectations, version it with DVC and report its drift.

    Args:
        source: what to ingest (default ``flows.ingest_source``).
        reference: the training data the batch is compared with (default ``paths.synth``).
    """
    run = open_run(project_dir, params, overrides or [])
    cfg = run.cfg
    out_dir = run.path(cfg.paths.ingest)
    src = source or cfg.flows.ingest_source
    if "://" not in src:
        src = str(run.path(src))
    batch = ingest_batch(run, src, out_dir, cfg.flows.ingest_split)
    quality = validate_manifests(run, out_dir / "manifests", run.path(cfg.paths.reports))
    versions = version_and_push(run, ["ingest"]) if version else None
    added = int(batch.get("added", 0))
    reference_dir = run.path(reference or cfg.paths.synth)
    drift: dict[str, Any] | None = None
    if added and reference_dir.exists():
        drift = drift_check(
            run,
            reference_dir,
            out_dir,
            run.path(cfg.paths.reports) / "drift_ingest",
            "ingest",
            current_split=cfg.flows.ingest_split,
        )
    publish_markdown(
        "ingest-summary",
        f"# Ingestion of {src}\n\n- added {added}, quarantined {sum(batch.get('quarantined', {}).values())}\n"
        f"- data quality: {'passed' if quality['passed'] else 'FAILED'}\n"
        + (
            f"- drift of the batch: share {drift['drift_share']:.3f} "
            f"({'within bounds' if drift['passed'] else 'OUT OF BOUNDS'})\n"
            if drift
            else f"- drift: not checked ({'no new images' if not added else f'no training data at {reference_dir}'})\n"
        ),
        "Ingestion run",
    )
    return {"batch": batch, "quality": quality, "versions": versions, "drift": drift}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the ingestion flow once.")
    parser.add_argument("--params", default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--source", default=None, help="default: flows.ingest_source")
    parser.add_argument("--no-version", action="store_true")
    args = parser.parse_args(argv)
    result = ingest(
        params=args.params, overrides=args.overrides, source=args.source, version=not args.no_version
    )
    print({k: v for k, v in result.items() if k != "versions"})


if __name__ == "__main__":
    main()
