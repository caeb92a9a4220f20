"""Retrieval commands: extract global descriptors and evaluate retrieval."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from landmark.cli._app import app, out, state, user_errors

FORMAT_HELP = "auto, gldv2, revisitop, folder or imc"


@app.command()
@user_errors
def extract(
    data: Annotated[Path | None, typer.Option(help="dataset root (default: paths.synth)")] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="feature store root (default: paths.features)")
    ] = None,
    split: Annotated[list[str] | None, typer.Option(help="split(s) to extract (default: all)")] = None,
    fmt: Annotated[str, typer.Option("--format", help=FORMAT_HELP)] = "auto",
    model: Annotated[
        Path | None, typer.Option(help="trained model directory (default: off-the-shelf backbone + GeM)")
    ] = None,
) -> None:
    """Extract multi-scale global descriptors into memory-mapped shards (resumable)."""
    from landmark.stages.extract import extract as run_extract

    cfg = state.config()
    start = time.perf_counter()
    added = run_extract(
        cfg,
        data or Path(cfg.paths.synth),
        out_dir or Path(cfg.paths.features),
        splits=split or (),
        fmt=fmt,
        model_dir=model,
    )
    seconds = time.perf_counter() - start
    out.print(f"extracted {sum(added.values())} new descriptors {added} in {seconds:.1f}s")


@app.command()
@user_errors
def evaluate(
    data: Annotated[Path | None, typer.Option(help="dataset root (default: paths.synth)")] = None,
    features: Annotated[
        Path | None, typer.Option(help="feature store root (default: paths.features)")
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="output directory (default: paths.eval)")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help=FORMAT_HELP)] = "auto",
) -> None:
    """Retrieve test queries against the index and report mAP (revisited protocol)."""
    from landmark.stages.evaluate import evaluate as run_evaluate

    cfg = state.config()
    target = out_dir or Path(cfg.paths.eval)
    metrics = run_evaluate(
        cfg, data or Path(cfg.paths.synth), features or Path(cfg.paths.features), target, fmt=fmt
    )
    out.print(metrics_table(metrics))
    out.print(f"metrics written to [bold]{target / 'metrics.json'}[/]")


def metrics_table(metrics: dict[str, Any]) -> Table:
    """A rich table of the revisited-protocol metrics."""
    rev = metrics["revisitop"]
    columns = [k for k in rev["medium"] if k != "queries"]
    table = Table(
        title=f"Retrieval: {metrics['n_queries']} queries x {metrics['n_database']} database images"
    )
    table.add_column("protocol")
    for column in columns:
        table.add_column(column, justify="right")
    for protocol in ("easy", "medium", "hard"):
        table.add_row(protocol, *(f"{rev[protocol][c]:.2f}" for c in columns))
    return table


@app.command()
@user_errors
def train(
    data: Annotated[Path | None, typer.Option(help="dataset root (default: paths.synth)")] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="model directory to write (default: paths.models/candidate)")
    ] = None,
    manifest: Annotated[
        Path | None,
        typer.Option(help="cleaned train manifest (parquet) instead of the dataset's train split"),
    ] = None,
    work: Annotated[Path | None, typer.Option(help="checkpoint/log directory (default: <out>.work)")] = None,
    resume: Annotated[
        bool, typer.Option(help="continue from the last checkpoint in the work directory")
    ] = False,
    fmt: Annotated[str, typer.Option("--format", help=FORMAT_HELP)] = "auto",
) -> None:
    """Fine-tune the global model (ArcFace/CosFace + GeM); torchrun-ready for several devices."""
    from landmark.stages.train import train as run_train

    cfg = state.config()
    target = out_dir or Path(cfg.paths.models) / "candidate"
    summary = run_train(
        cfg, data or Path(cfg.paths.synth), target, manifest=manifest, work_dir=work, resume=resume, fmt=fmt
    )
    if summary.model_dir is not None:
        out.print(
            f"trained {summary.steps} steps on {summary.images} images / {summary.classes} classes "
            f"({summary.dropped_classes} classes dropped) in {summary.seconds:.0f}s: "
            f"loss {summary.final_loss:.3f}, accuracy {summary.final_accuracy:.2f}"
        )
        out.print(f"model written to [bold]{summary.model_dir}[/]")
