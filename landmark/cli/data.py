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
    feed_days: Annotated[
        int, typer.Option(help="also write the first N days of the daily feed into --inbox (0 = none)")
    ] = 0,
    inbox: Annotated[Path | None, typer.Option(help="the inbox of the feed (default: paths.inbox)")] = None,
) -> None:
    """Generate the synthetic landmark world (GLDv2 layout, solutions, gnd file), optionally as a daily feed."""
    from landmark.stages.synth import synth as run_synth

    cfg = state.config()
    target = out_dir or Path(cfg.paths.synth)
    summary = run_synth(cfg, target)
    out.print(f"synthetic world written to [bold]{target}[/]")
    out.print(summary)
    if feed_days:
        _write_feed(target, inbox or Path(cfg.paths.inbox), feed_days)


@app.command()
@user_errors
def feed(
    days: Annotated[int, typer.Option(help="days of the feed that have arrived (1..feed.days)")],
    world: Annotated[Path | None, typer.Option(help="the synthetic world (default: paths.synth)")] = None,
    inbox: Annotated[Path | None, typer.Option(help="the inbox (default: paths.inbox)")] = None,
) -> None:
    """Let the synthetic world's days arrive: write days 0..N-1 into the inbox (days already there are kept)."""
    cfg = state.config()
    _write_feed(world or Path(cfg.paths.synth), inbox or Path(cfg.paths.inbox), days)


def _write_feed(world: Path, inbox: Path, days: int) -> None:
    from landmark.data.synthetic.feed import write_feed

    cfg = state.config()
    written = write_feed(world, inbox, cfg.feed, cfg.seed, days)
    names = ", ".join(p.name for p in written) or "nothing new"
    out.print(f"inbox [bold]{inbox}[/]: wrote {names}", soft_wrap=True)
