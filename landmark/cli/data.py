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


@app.command("imc-benchmark")
@user_errors
def imc_benchmark(
    imc: Annotated[
        Path, typer.Option(help="IMC photos: <scene>/images, calibration.csv, pair_covisibility.csv")
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="where the imc_<scene>/ sets are written")],
    queries_per_scene: Annotated[int, typer.Option(help="queries drawn from each held-out scene")] = 20,
    leave_one_out: Annotated[
        bool,
        typer.Option(
            help="every eligible photo is a query and stays in the database, junk to itself "
            "(many more queries; --queries-per-scene is ignored)"
        ),
    ] = False,
    seed: Annotated[
        int | None, typer.Option(help="seed of the query draws (default: the config's seed)")
    ] = None,
) -> None:
    """Build Revisited-format sets from IMC photos with the pose-based easy/hard/junk protocol, one per scene."""
    from rich.table import Table

    from landmark.data.imc_benchmark import build_imc_sets

    summaries = build_imc_sets(
        imc,
        out_dir,
        queries_per_scene="all" if leave_one_out else queries_per_scene,
        seed=state.config().seed if seed is None else seed,
    )
    table = Table(title=f"Revisited-format IMC sets in {out_dir}")
    for column in ("set", "queries", "database", "distractors", "easy", "hard", "junk"):
        table.add_column(column, justify="left" if column == "set" else "right")
    for s in summaries:
        table.add_row(
            s.name, *(str(v) for v in (s.queries, s.database, s.distractors, s.easy, s.hard, s.junk))
        )
    out.print(table)
    out.print(
        f"evaluate with: landmark eval-revisitop --root {out_dir} --dataset {summaries[0].name} --out DIR"
    )
