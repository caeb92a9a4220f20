"""Cleaning commands: local feature extraction and automated train-set cleaning by spatial verification."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from landmark.cli._app import app, out, state, user_errors

FORMAT_HELP = "auto, catalog, gldv2, revisitop, folder or imc"


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


@app.command()
@user_errors
def clean(
    data: Annotated[
        Path | None, typer.Option(help="dataset root (default: paths.catalog, the validated catalog)")
    ] = None,
    features: Annotated[
        Path | None,
        typer.Option(help="bootstrap global descriptors, <features>/train (default: paths.features_boot)"),
    ] = None,
    local_dir: Annotated[
        Path | None, typer.Option("--local", help="local feature root, <local>/train (default: paths.local)")
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="output directory (default: paths.clean)")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help=FORMAT_HELP)] = "auto",
) -> None:
    """Clean the train split: kNN + spatial verification, cleaned manifest, class report, quality gate."""
    from landmark.stages.clean import clean as run_clean

    cfg = state.config()
    summary = run_clean(
        cfg,
        data or Path(cfg.paths.catalog),
        features or Path(cfg.paths.features_boot),
        local_dir or Path(cfg.paths.local),
        out_dir or Path(cfg.paths.clean),
        fmt=fmt,
    )
    dropped = ", ".join(f"{n} {reason}" for reason, n in summary.dropped.items())
    out.print(
        f"kept {summary.kept} of {summary.images} train images ({dropped}); classes "
        f"{summary.classes_kept} of {summary.classes_before}; verified {summary.verified_pairs} of "
        f"{summary.unique_pairs} unique pairs ({summary.directed_pairs} neighbour entries) in "
        f"{summary.seconds:.1f}s; cleaning gate passed"
    )
    if summary.undecodable:
        out.print(
            f"left out {sum(summary.undecodable.values())} images extract/local could not decode "
            f"{summary.undecodable} (quarantined with their reason in the cleaned manifest)",
            markup=False, soft_wrap=True,
        )  # fmt: skip
    out.print(f"cleaned manifest, reports and Data Docs in [bold]{summary.out_dir}[/]")
