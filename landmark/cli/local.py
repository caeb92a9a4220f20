"""Local-feature commands: ``local`` (extract local features of a split) and ``train-delf`` (the DELF
attention/local-feature model)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from landmark.cli._app import FORMAT_HELP, app, out, report_left_out, state, user_errors


@app.command()
@user_errors
def local(
    data: Annotated[
        Path | None, typer.Option(help="dataset root (default: paths.catalog, the validated catalog)")
    ] = None,
    split: Annotated[str, typer.Option(help="split whose ok images to describe")] = "train",
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="local feature root; the store is <out>/<split> (default: paths.local)"),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help=FORMAT_HELP)] = "auto",
    limit: Annotated[
        int | None, typer.Option(help="extract at most this many missing images (the next run resumes)")
    ] = None,
) -> None:
    """Extract local features (local.backend: sift, delf, ...) of a split into a resumable store; undecodable
    images are skipped and listed in <out>/<split>/quarantined.json (the split fails above local.max_bad_share)."""
    from landmark.data.bad_images import reason_counts
    from landmark.stages.local import local as run_local

    cfg = state.config()
    summary = run_local(
        cfg,
        data or Path(cfg.paths.catalog),
        out_dir or Path(cfg.paths.local),
        split=split,
        fmt=fmt,
        limit=limit,
    )
    out.print(
        f"{cfg.local.backend}: extracted {summary.extracted} of {summary.images} {split} images "
        f"({summary.already_stored} already stored), {summary.mean_keypoints:.0f} keypoints/image, "
        f"{summary.bytes_per_image / 1024:.0f} KiB/image on disk, in {summary.seconds:.1f}s"
    )
    if summary.bad_images:
        out.print(
            f"skipped {len(summary.bad_images)} undecodable {split} images {reason_counts(summary.bad_images)}, "
            f"listed in {summary.quarantine}",
            markup=False, soft_wrap=True,
        )  # fmt: skip
    out.print(f"local features in [bold]{summary.store}[/]")


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
    report_left_out(summary.bad_images, summary.model_dir)
    out.print(f"model written to [bold]{summary.model_dir}[/]")
