"""Data commands: synthesise datasets (ingest and validate join with the data platform)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from landmark.cli._app import app, out, state, user_errors


@app.command()
@user_errors
def synth(
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="output directory (default: paths.synth)")
    ] = None,
) -> None:
    """Generate the synthetic landmark world (GLDv2 layout, solutions, gnd file)."""
    from landmark.stages.synth import synth as run_synth

    cfg = state.config()
    target = out_dir or Path(cfg.paths.synth)
    summary = run_synth(cfg, target)
    out.print(f"synthetic world written to [bold]{target}[/]")
    out.print(summary)
