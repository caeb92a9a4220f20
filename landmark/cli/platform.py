"""Data-platform commands: ``ingest``, ``validate`` and ``infra up|down|status`` (the local S3 store)."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar
from urllib.parse import urlsplit

import typer
from rich.markup import escape
from rich.table import Table

from landmark.cli._app import app, console, out, state, user_errors

P = ParamSpec("P")
R = TypeVar("R")

infra_app = typer.Typer(
    help="Local services: the SeaweedFS S3 object store (MinIO in production: infra/docker-compose.yml).",
    no_args_is_help=True,
)
app.add_typer(infra_app, name="infra")


def service_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn object-store and local-service failures into a one-line error, exit 1 (``--debug``: traceback)."""
    from landmark.infra import InfraError
    from landmark.storage import StorageError

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except (StorageError, InfraError) as exc:
            if state.debug:
                raise
            console.print(f"[bold red]error:[/] {type(exc).__name__}: {escape(str(exc))}", soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


def _summary_table(summary: dict[str, object]) -> Table:
    table = Table(title=f"batch {summary['batch_id']} ({summary['split']})")
    table.add_column("count")
    table.add_column("items", justify="right")
    for key in (
        "listed",
        "known",
        "repeated",
        "unchanged",
        "resumed",
        "processed",
        "added",
        "quarantined_total",
    ):
        table.add_row(key, str(summary[key]))
    quarantined = summary["quarantined"]
    if isinstance(quarantined, dict):
        for code, count in quarantined.items():
            table.add_row(f"  quarantined: {code}", str(count))
    return table


@app.command()
@user_errors
@service_errors
def ingest(
    source: Annotated[
        str,
        typer.Argument(help="synth | s3://bucket/prefix | a .csv of id,url[,landmark_id] | a dataset dir"),
    ],
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="ingestion root (default: paths.ingest)")
    ] = None,
    split: Annotated[str, typer.Option(help="manifest (split) to append to")] = "train",
    kind: Annotated[str, typer.Option(help="auto, csv, folder, s3 or synth")] = "auto",
    summary: Annotated[
        Path | None, typer.Option(help="also write the batch summary JSON here (e.g. a DVC metrics file)")
    ] = None,
) -> None:
    """Ingest one batch of new images: fetch, check, store, append to the manifest (resumable)."""
    from landmark.data.atomic import atomic_path
    from landmark.stages.ingest import ingest as run_ingest

    cfg = state.config()
    target = out_dir or Path(cfg.paths.ingest)
    result = run_ingest(cfg, source, target, split=split, kind=kind).to_dict()
    out.print(_summary_table(result))
    out.print(f"manifest: [bold]{result['manifest']}[/] ({result['seconds']}s)", soft_wrap=True)
    if summary is not None:
        with atomic_path(summary) as tmp:
            tmp.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")


@app.command()
@user_errors
def validate(
    manifests: Annotated[
        Path | None, typer.Option(help="manifest directory (default: <paths.ingest>/manifests)")
    ] = None,
    reports: Annotated[
        Path | None, typer.Option(help="reports and Data Docs directory (default: paths.reports)")
    ] = None,
    cleaned: Annotated[
        Path | None, typer.Option(help="cleaned manifest to validate instead (needs --class-report)")
    ] = None,
    class_report: Annotated[
        Path | None, typer.Option(help="per-class cleaning report (.parquet/.csv) to validate with --cleaned")
    ] = None,
) -> None:
    """Run the Great Expectations data-quality gate; exits 1 when a critical expectation fails."""
    from landmark.quality import QualityGateError
    from landmark.stages.validate import validate as run_validate
    from landmark.stages.validate import validate_cleaning

    cfg = state.config()
    target = reports or Path(cfg.paths.reports)
    if (cleaned is None) != (class_report is None):
        raise ValueError("--cleaned and --class-report go together")
    try:
        if cleaned is not None and class_report is not None:
            report = validate_cleaning(cfg, cleaned, class_report, target)
        else:
            report = run_validate(cfg, manifests or Path(cfg.paths.ingest) / "manifests", target)
    except QualityGateError as exc:
        console.print(exc.report.summary(), style="bold red", markup=False, soft_wrap=True)
        raise typer.Exit(1) from None
    out.print(report.summary(), markup=False, soft_wrap=True)


def _local_port(endpoint: str) -> int:
    parts = urlsplit(endpoint)
    if parts.hostname not in ("127.0.0.1", "localhost") or parts.port is None:
        raise ValueError(
            f"`landmark infra up` runs a local server on 127.0.0.1 and needs an explicit port; "
            f"the storage endpoint is {endpoint!r}"
        )
    return parts.port


@infra_app.command("up")
@user_errors
@service_errors
def infra_up(
    run_dir: Annotated[
        Path | None, typer.Option(help="server data/logs/pid/credentials (default: storage.run_dir)")
    ] = None,
    dvc: Annotated[bool, typer.Option(help="write endpoint + credentials to .dvc/config.local")] = True,
) -> None:
    """Start the local SeaweedFS S3 store (generated credentials), wait for health, create the bucket."""
    from landmark.infra import configure_dvc_remote, start_seaweed
    from landmark.storage import ENV_ENDPOINT, ObjectStore, S3Settings, read_credentials_file

    cfg = state.config()
    directory = run_dir or Path(cfg.storage.run_dir)
    endpoint = os.environ.get(ENV_ENDPOINT) or cfg.storage.endpoint
    info = start_seaweed(directory, s3_port=_local_port(endpoint))
    credentials = read_credentials_file(info.credentials_file)
    store = ObjectStore(S3Settings(info.endpoint, cfg.storage.bucket, cfg.storage.region, credentials))
    created = store.ensure_bucket()
    out.print(
        f"SeaweedFS S3 at [bold]{info.endpoint}[/] (pid {info.pid}); bucket '{store.bucket}'"
        + (" created" if created else "")
    )
    out.print(f"credentials: {info.credentials_file} (git-ignored; mode 0600)", soft_wrap=True)
    if dvc and Path(".dvc").is_dir():
        configure_dvc_remote(Path("."), cfg.storage.dvc_remote, info.endpoint, credentials)
        out.print(f"DVC remote '{cfg.storage.dvc_remote}': endpoint and credentials in .dvc/config.local")


@infra_app.command("down")
@user_errors
@service_errors
def infra_down(
    run_dir: Annotated[Path | None, typer.Option(help="server directory (default: storage.run_dir)")] = None,
) -> None:
    """Stop the local SeaweedFS server (data and credentials are kept for the next `up`)."""
    from landmark.infra import stop_seaweed

    directory = run_dir or Path(state.config().storage.run_dir)
    stopped = stop_seaweed(directory)
    out.print("SeaweedFS stopped" if stopped else f"no SeaweedFS server running for {directory}")


@infra_app.command("status")
@user_errors
@service_errors
def infra_status(
    run_dir: Annotated[Path | None, typer.Option(help="server directory (default: storage.run_dir)")] = None,
) -> None:
    """Say whether the local SeaweedFS server runs, where, and whether it is healthy; exit 3 when down."""
    from landmark.infra import is_ready, seaweed_status

    directory = run_dir or Path(state.config().storage.run_dir)
    info = seaweed_status(directory)
    if info is None:
        out.print(f"SeaweedFS: not running ({directory})")
        raise typer.Exit(3)
    health = "ready" if is_ready(info) else "starting or unhealthy"
    out.print(
        f"SeaweedFS: running, pid {info.pid}, {info.endpoint} ({health}); data {directory}/data",
        soft_wrap=True,
    )
