"""Registry commands: ``promote`` (the gate), ``rollback`` and ``registry list|show``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from landmark.cli._app import app, out, state, user_errors

registry_app = typer.Typer(
    help="The model registry in the object store: versions, the production pointer, decisions.",
    no_args_is_help=True,
)
app.add_typer(registry_app, name="registry")


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"  # unreachable; keeps mypy's return check simple


@app.command()
@user_errors
def golden(
    model: Annotated[
        Path, typer.Option(help="model directory (a trained model, or <paths.production>/model)")
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="output directory (golden.json + one dir per set)")],
) -> None:
    """Score a model on the golden real-photo benchmarks (promote.golden) the promotion gate protects."""
    from landmark.stages.golden import golden as run_golden

    cfg = state.config()
    result = run_golden(cfg, model, out_dir)
    for name, scores in result["sets"].items():
        cached = " (cached)" if name in result["cached"] else ""
        out.print(f"{name}: medium {scores['medium']:.1f}, hard {scores['hard']:.1f}{cached}", soft_wrap=True)
    for note in result["notes"]:
        out.print(note, markup=False, soft_wrap=True)
    out.print(f"written to [bold]{out_dir / 'golden.json'}[/]")


@app.command("refresh-index")
@user_errors
def refresh_index(
    model: Annotated[Path, typer.Option(help="production's model directory (<paths.production>/model)")],
    index: Annotated[
        Path, typer.Option(help="an index built from that model's descriptors (landmark index)")
    ],
    out_file: Annotated[Path, typer.Option("--out", help="where the refresh record goes (JSON)")],
) -> None:
    """Serve new index images without retraining: publish production's model with the new index and switch."""
    from landmark.stages.promote import refresh_index as run_refresh

    cfg = state.config()
    record = run_refresh(cfg, model, index, out=out_file)
    out.print(
        f"index {record['outcome']}: production {record['production_before']} -> {record['production_after']}"
    )
    for reason in record["reasons"]:
        out.print(f"  {escape(reason)}", soft_wrap=True)


@app.command()
@user_errors
def production(
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="where the production model goes (default: paths.production)")
    ] = None,
) -> None:
    """Fetch the production model (verified against its MANIFEST) to bootstrap from: <out>/model, with
    <out>/production.json naming its version (``pretrained`` before the first promotion)."""
    from landmark.stages.promote import fetch_production

    cfg = state.config()
    result = fetch_production(cfg, out_dir or Path(cfg.paths.production))
    out.print(f"production model {result['version']}: [bold]{result['model_dir']}[/]", soft_wrap=True)


@app.command()
@user_errors
def promote(
    model: Annotated[Path, typer.Option("--model", help="candidate model directory")],
    index: Annotated[Path, typer.Option("--index", help="candidate index directory")],
    metrics: Annotated[Path, typer.Option("--metrics", help="candidate metrics.json (landmark evaluate)")],
    quality: Annotated[Path, typer.Option("--quality", help="data-quality report JSON (landmark validate)")],
    drift: Annotated[Path, typer.Option("--drift", help="drift report JSON (landmark drift)")],
    production_metrics: Annotated[
        Path | None,
        typer.Option(
            "--production-metrics",
            help="production re-evaluated on the same set (default: metrics stored with production)",
        ),
    ] = None,
    golden: Annotated[
        Path | None,
        typer.Option(help="the candidate's golden.json (landmark golden); needs --golden-production"),
    ] = None,
    golden_production: Annotated[
        Path | None, typer.Option(help="production's golden.json on the same golden sets")
    ] = None,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="decision file (default: decision.json next to --metrics)")
    ] = None,
) -> None:
    """Gate a candidate; when it passes, upload it to the registry and switch production to it.

    Exits 0 when a decision was made (promoted or not), 1 on errors (bad inputs, store down).
    """
    from landmark.stages.promote import promote as run_promote

    cfg = state.config()
    summary = run_promote(
        cfg,
        model,
        index,
        metrics,
        quality,
        drift,
        production_metrics_path=production_metrics,
        golden_path=golden,
        production_golden_path=golden_production,
        out=out_file,
    )
    decision = summary.decision
    verdict = "[bold green]PROMOTED[/]" if summary.promoted else "[bold yellow]NOT PROMOTED[/]"
    out.print(f"{verdict} candidate {summary.candidate_version} ({summary.outcome})")
    for reason in decision.reasons:
        mark = "[green]ok[/]" if reason.endswith(": ok") else "[red]fail[/]"
        out.print(f"  {mark}  {escape(reason)}", soft_wrap=True)
    out.print(
        f"production: {summary.previous or '(none)'} -> {summary.production or '(none)'}; "
        f"decision {summary.decision_id}; written {summary.decision_path}",
        soft_wrap=True,
    )
    if summary.pruned:
        out.print(f"pruned old versions: {', '.join(summary.pruned)}", soft_wrap=True)


@app.command()
@user_errors
def rollback() -> None:
    """Switch the production pointer back to the previous version (and record the decision)."""
    from landmark.stages.promote import rollback as run_rollback

    summary = run_rollback(state.config())
    out.print(
        f"production rolled back: {summary.previous} -> [bold]{summary.production}[/] "
        f"(decision {summary.decision_id}; {len(summary.history)} earlier version(s) left for rollback)",
        soft_wrap=True,
    )


@registry_app.command("list")
@user_errors
def registry_list() -> None:
    """Every version in the registry, oldest first, marking production and the rollback history."""
    from landmark.stages.promote import open_registry

    registry = open_registry(state.config())
    pointer = registry.production()
    history = () if pointer is None else pointer.history
    table = Table(title=f"registry {registry.store.uri(registry.prefix)}/")
    for column in ("version", "status", "files", "size", "role"):
        table.add_column(column, justify="right" if column in ("files", "size") else "left")
    for info in registry.list_versions():
        role = ""
        if pointer is not None and info.version == pointer.version:
            role = "production"
        elif info.version in history:
            role = f"rollback #{history.index(info.version) + 1}"
        status = "complete" if info.complete else "incomplete (ignored)"
        table.add_row(info.version, status, str(info.files), _human_bytes(info.bytes), role)
    out.print(table)
    if pointer is None:
        out.print("no production model yet")


@registry_app.command("show")
@user_errors
def registry_show(
    version: Annotated[str | None, typer.Argument(help="version id (default: production)")] = None,
    decisions: Annotated[int, typer.Option(help="recent decisions to show")] = 5,
) -> None:
    """The production pointer, one version's files and metrics, and the latest decisions."""
    from landmark.ops.gate import metric_value
    from landmark.stages.promote import open_registry

    cfg = state.config()
    registry = open_registry(cfg)
    pointer = registry.production()
    if pointer is None:
        out.print("production: (none)")
    else:
        out.print(
            f"production: [bold]{pointer.version}[/] since {pointer.switched_at} "
            f"(decision {pointer.decision_id}); history: {', '.join(pointer.history) or '(none)'}",
            soft_wrap=True,
        )
    target = version or (pointer.version if pointer is not None else None)
    if target is not None:
        registry.require_complete(target)
        entries = registry.manifest(target)
        total = sum(e.size for e in entries)
        out.print(f"version {target}: {len(entries)} files, {_human_bytes(total)} at {registry.uri(target)}")
        stored = registry.metrics(target)
        for name in cfg.promote.metrics:
            try:
                out.print(f"  {name} = {metric_value(stored, name):.3f}")
            except ValueError:
                out.print(f"  {name}: (not in its metrics)")
    for record in registry.decisions(decisions):
        reasons = "; ".join(record.get("reasons", []))
        out.print(f"decision {record.get('id')}: {record.get('outcome')}: {escape(reasons)}", soft_wrap=True)
