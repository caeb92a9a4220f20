"""Cleaning command: ``clean`` (automated train-set cleaning by spatial verification)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from landmark.cli._app import FORMAT_HELP, app, out, state, user_errors


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
