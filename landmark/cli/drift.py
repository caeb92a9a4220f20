"""Drift command: ``drift`` (Evidently drift report + workspace snapshot)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from landmark.cli._app import app, out, state, user_errors
from landmark.config import Config
from landmark.errors import InputError

if TYPE_CHECKING:
    from landmark.ops.drift import DriftResult
    from landmark.stages.drift import DriftSummary


def columns_table(result: DriftResult) -> Table:
    """One row per compared column: test, score, threshold and verdict."""
    table = Table(title=f"Drift: {len(result.drifted_columns)} of {len(result.columns)} columns drifted")
    for name, justify in (("column", "left"), ("test", "left"), ("score", "right"), ("threshold", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    table.add_column("drift")
    for column in result.columns:
        table.add_row(
            column.column,
            column.method,
            f"{column.score:.3g}",
            f"{column.threshold:g}",
            "[bold red]yes[/]" if column.drifted else "no",
        )
    return table


def default_current(cfg: Config, purpose: str) -> Path:
    """The current side when ``--current`` is not given: the query log (serving) or the catalog (retrain).

    Raises:
        ValueError: ingest has no default (the new batch's ingestion root or manifest).
    """
    if purpose == "serving":
        return Path(cfg.serve.log_dir)
    if purpose == "retrain":
        return Path(cfg.paths.catalog)
    raise InputError(f"give --current for purpose {purpose!r}: the new batch's ingestion root or manifest")


ReferenceOption = Annotated[
    Path | None,
    typer.Option(
        help="reference images: a dataset dir, an ingestion root or a manifest .parquet (training data; "
        "default: paths.catalog)"
    ),
]
CurrentOption = Annotated[
    Path | None,
    typer.Option(
        help="current images: the new batch (ingest) or the evaluation dataset (retrain; default: "
        "paths.catalog), same kinds; the query log for serving (default: serve.log_dir)"
    ),
]
OutOption = Annotated[
    Path | None,
    typer.Option(
        "--out", help="drift.json, report.html, evidently.json (default: <paths.reports>/drift-<purpose>)"
    ),
]
PurposeOption = Annotated[
    str,
    typer.Option(
        help="ingest: newest batch vs training data; retrain: test split vs train split; serving: the last "
        "serve.log_window logged queries vs the train split (sets the defaults below)"
    ),
]
CurrentSplitOption = Annotated[
    str | None,
    typer.Option(help="split of the current dataset (default: train for ingest, test for retrain)"),
]
CurrentBatchOption = Annotated[
    str | None,
    typer.Option(
        help="latest, all or a batch id of the current manifest (default: latest for ingest, else all)"
    ),
]
ReferenceFeaturesOption = Annotated[
    Path | None,
    typer.Option(
        help="feature store of the reference side (or its parent holding <split>/); for serving, the "
        "descriptors of the serving model (e.g. paths.features_boot)"
    ),
]
CurrentFeaturesOption = Annotated[
    Path | None,
    typer.Option(
        help="feature store of the current side (or its parent holding <split>/); not for serving (the "
        "query log holds the descriptors)"
    ),
]


def print_drift_summary(summary: DriftSummary) -> None:
    """The columns table, the notes, both sides, the verdict and where the report and snapshot went."""
    result = summary.result
    out.print(columns_table(result))
    for note in summary.notes:
        out.print(note, markup=False, soft_wrap=True)
    out.print(f"reference: {result.metadata.get('reference', '')}", markup=False, soft_wrap=True)
    out.print(f"current:   {result.metadata.get('current', '')}", markup=False, soft_wrap=True)
    style = "bold green" if result.passed else "bold red"
    out.print(result.summary, style=style, markup=False, soft_wrap=True)
    out.print(
        f"report: {summary.files['report.html']}  result: {summary.files['drift.json']}", soft_wrap=True
    )
    if summary.snapshot_id is not None:
        out.print(
            f"snapshot {summary.snapshot_id} stored in {summary.workspace} (view: make monitor)",
            soft_wrap=True,
        )
    out.print(f"done in {summary.seconds:.1f}s")


@app.command()
@user_errors
def drift(
    reference: ReferenceOption = None,
    current: CurrentOption = None,
    out_dir: OutOption = None,
    purpose: PurposeOption = "retrain",
    reference_split: Annotated[str, typer.Option(help="split of the reference dataset")] = "train",
    current_split: CurrentSplitOption = None,
    current_batch: CurrentBatchOption = None,
    reference_features: ReferenceFeaturesOption = None,
    current_features: CurrentFeaturesOption = None,
    workspace: Annotated[
        Path | None, typer.Option(help="Evidently workspace (default: drift.workspace)")
    ] = None,
    snapshot: Annotated[bool, typer.Option(help="store the snapshot in the Evidently workspace")] = True,
    fmt: Annotated[
        str, typer.Option("--format", help="dataset format: auto, gldv2, revisitop, folder or imc")
    ] = "auto",
) -> None:
    """Evidently drift report of image statistics (+ descriptor PCA columns); prints the verdict, exits 0 either way
    (the promotion gate reads drift.json and decides)."""
    from landmark.stages.drift import drift as run_drift

    cfg = state.config()
    target = out_dir or Path(cfg.paths.reports) / f"drift-{purpose}"
    summary = run_drift(
        cfg,
        reference or Path(cfg.paths.catalog),
        current or default_current(cfg, purpose),
        target,
        purpose=purpose,
        reference_split=reference_split,
        current_split=current_split,
        current_batch=current_batch,
        reference_features=reference_features,
        current_features=current_features,
        workspace=workspace,
        log_to_workspace=snapshot,
        fmt=fmt,
        progress=True,
    )
    print_drift_summary(summary)
