"""Training command: ``train`` (fine-tune the global model)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer

from landmark.cli._app import FORMAT_HELP, app, out, report_left_out, state, user_errors


@app.command()
@user_errors
def train(
    data: Annotated[
        Path | None, typer.Option(help="dataset root (default: paths.catalog, the validated catalog)")
    ] = None,
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
    auto_resume: Annotated[
        bool,
        typer.Option(
            help="resume a checkpoint a killed run left when it still fits the data and config, else start over "
            "(what the pipeline uses)"
        ),
    ] = False,
    fmt: Annotated[str, typer.Option("--format", help=FORMAT_HELP)] = "auto",
) -> None:
    """Fine-tune the global model (ArcFace/CosFace + GeM); torchrun-ready for several devices. Undecodable images
    are left out and listed in <out>/quarantined.json (training fails above train.max_bad_share)."""
    from landmark.stages.train import train as run_train

    cfg = state.config()
    target = out_dir or Path(cfg.paths.models) / "candidate"
    from landmark.training.trainer import CheckpointError

    dataset = data or Path(cfg.paths.catalog)
    work_dir = work or target.with_name(target.name + ".work")
    resume = resume or (auto_resume and (work_dir / "checkpoint.pt").is_file())
    try:
        summary = run_train(
            cfg, dataset, target, manifest=manifest, work_dir=work_dir, resume=resume, fmt=fmt
        )
    except CheckpointError as exc:
        if not auto_resume:
            raise
        out.print(f"discarding the checkpoint of an earlier run: {exc}", markup=False, soft_wrap=True)
        shutil.rmtree(work_dir, ignore_errors=True)
        summary = run_train(cfg, dataset, target, manifest=manifest, work_dir=work_dir, fmt=fmt)
    if summary.model_dir is not None:
        out.print(
            f"trained {summary.steps} steps on {summary.images} images / {summary.classes} classes "
            f"({summary.dropped_classes} classes dropped) in {summary.seconds:.0f}s: "
            f"loss {summary.final_loss:.3f}, accuracy {summary.final_accuracy:.2f}"
        )
        report_left_out(summary.bad_images, summary.model_dir)
        out.print(f"model written to [bold]{summary.model_dir}[/]")
