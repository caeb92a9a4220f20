"""Ingestion commands: ``ingest`` what is new and ``validate`` it (the Great Expectations data-quality gate)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from landmark.cli._app import app, console, out, state, user_errors
from landmark.errors import InputError


def _summary_table(summary: dict[str, object]) -> Table:
    table = Table(title=f"batch {summary['batch_id']} ({summary['split']})")
    table.add_column("count")
    table.add_column("items", justify="right")
    for key in (
        "listed",
        "known",
        "repeated",
        "unchanged",
        "resumed",
        "processed",
        "added",
        "quarantined_total",
    ):
        table.add_row(key, str(summary[key]))
    quarantined = summary["quarantined"]
    if isinstance(quarantined, dict):
        for code, count in quarantined.items():
            table.add_row(f"  quarantined: {code}", str(count))
    return table


@app.command()
@user_errors
def ingest(
    source: Annotated[
        str | None,
        typer.Argument(
            help="an inbox dir of batches (default: paths.inbox) | synth | s3://bucket/prefix | "
            "a .csv of id,url[,landmark_id] | a dataset dir"
        ),
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="ingestion root, the catalog (default: paths.ingest)")
    ] = None,
    split: Annotated[
        str, typer.Option(help="split to append to; 'all' = every split of a dataset (train for a CSV/S3)")
    ] = "all",
    kind: Annotated[str, typer.Option(help="auto, csv, folder, s3 or synth")] = "auto",
    summary: Annotated[
        Path | None, typer.Option(help="also write the run summary JSON here (e.g. a DVC metrics file)")
    ] = None,
) -> None:
    """Ingest what is new: fetch, check, store, append to the catalog's manifests (resumable).

    An inbox (a directory of batches: dataset dirs and CSVs of URLs) is read batch by batch in name order;
    batches ingested before are skipped. Ground truth a dataset carries is merged into the catalog.
    """
    from landmark.data.atomic import atomic_path
    from landmark.stages.ingest import ingest_source

    cfg = state.config()
    target = out_dir or Path(cfg.paths.ingest)
    report = ingest_source(cfg, source or cfg.paths.inbox, target, split=split, kind=kind)
    result = report.to_dict()
    for batch in result["batches"]:
        out.print(_summary_table(batch))
    if report.inbox_batches or report.skipped_batches:
        out.print(
            f"inbox: ingested {report.inbox_batches or 'nothing new'}; "
            f"{report.skipped_batches} batches ingested before",
            soft_wrap=True,
        )
    out.print(f"catalog: [bold]{target}[/] (+{result['added']} images)", soft_wrap=True)
    if summary is not None:
        with atomic_path(summary) as tmp:
            tmp.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")


@app.command()
@user_errors
def validate(
    manifests: Annotated[
        Path | None, typer.Option(help="manifest directory (default: <paths.ingest>/manifests)")
    ] = None,
    reports: Annotated[
        Path | None, typer.Option(help="reports and Data Docs directory (default: paths.reports)")
    ] = None,
    cleaned: Annotated[
        Path | None, typer.Option(help="cleaned manifest to validate instead (needs --class-report)")
    ] = None,
    class_report: Annotated[
        Path | None, typer.Option(help="per-class cleaning report (.parquet/.csv) to validate with --cleaned")
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(help="validate every split of this dataset directory instead of --manifests"),
    ] = None,
    publish: Annotated[
        Path | None,
        typer.Option(
            help="when the ingestion manifests pass, write the validated catalog (ok rows + ground truth) here; "
            "every later stage reads it (paths.catalog)"
        ),
    ] = None,
) -> None:
    """Run the Great Expectations data-quality gate; exits 1 when a critical expectation fails."""
    from landmark.ops.quality import QualityGateError
    from landmark.stages.common import validate_cleaning
    from landmark.stages.validate import validate as run_validate
    from landmark.stages.validate import validate_dataset

    cfg = state.config()
    target = reports or Path(cfg.paths.reports)
    if (cleaned is None) != (class_report is None):
        raise InputError("--cleaned and --class-report go together")
    try:
        if cleaned is not None and class_report is not None:
            report = validate_cleaning(cfg, cleaned, class_report, target)
        elif data is not None:
            report = validate_dataset(cfg, data, target)
        else:
            report = run_validate(
                cfg, manifests or Path(cfg.paths.ingest) / "manifests", target, publish=publish
            )
    except QualityGateError as exc:
        console.print(exc.report.summary(), style="bold red", markup=False, soft_wrap=True)
        raise typer.Exit(1) from None
    out.print(report.summary(), markup=False, soft_wrap=True)
    if publish is not None:
        out.print(f"validated catalog: [bold]{publish}[/]", soft_wrap=True)
