"""Local-feature model commands: ``train-delf`` (the DELF attention/local-feature model)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from landmark.cli._app import app, out, state, user_errors

FORMAT_HELP = "auto, catalog, gldv2, revisitop, folder or imc"


@app.command("train-delf")
@user_errors
def train_delf(
    data: Annotated[
        Path | None, typer.Option(help="dataset root (default: paths.catalog, the validated catalog)")
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="DELF model directory to write (default: paths.models/delf)")
    ] = None,
    manifest: Annotated[
        Path | None,
        typer.Option(help="cleaned train manifest (parquet) instead of the dataset's train split"),
    ] = None,
    work: Annotated[Path | None, typer.Option(help="training-log directory (default: <out>.work)")] = None,
    fmt: Annotated[str, typer.Option("--format", help=FORMAT_HELP)] = "auto",
) -> None:
    """Train DELF: fine-tune descriptors, then the attention (backbone frozen), then fit the descriptor PCA."""
    from landmark.stages.train_delf import train_delf as run_train_delf

    cfg = state.config()
    target = out_dir or Path(cfg.paths.models) / "delf"
    summary = run_train_delf(
        cfg, data or Path(cfg.paths.catalog), target, manifest=manifest, work_dir=work, fmt=fmt
    )
    out.print(
        f"trained DELF on {summary.images} images / {summary.classes} classes "
        f"({summary.dropped_classes} classes dropped) in {summary.seconds:.0f}s: "
        f"{summary.descriptor_steps} descriptor + {summary.attention_steps} attention steps, attention loss "
        f"{summary.attention_first_loss:.3f} -> {summary.attention_last_loss:.3f}, "
        f"PCA on {summary.pca_descriptors} descriptors"
    )
    out.print(f"model written to [bold]{summary.model_dir}[/]")
