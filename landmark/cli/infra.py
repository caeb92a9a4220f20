"""Local services: ``infra up|down|status`` (the S3 store and the Prefect server/worker)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import typer

from landmark.cli._app import app, out, state, user_errors
from landmark.errors import InputError

infra_app = typer.Typer(
    help="Local services: the SeaweedFS S3 store and the Prefect server/worker (production: infra/docker-compose.yml).",
    no_args_is_help=True,
)
app.add_typer(infra_app, name="infra")


def _local_port(endpoint: str) -> int:
    parts = urlsplit(endpoint)
    if parts.hostname not in ("127.0.0.1", "localhost") or parts.port is None:
        raise InputError(
            f"`landmark infra up` runs a local server on 127.0.0.1 and needs an explicit port; "
            f"the storage endpoint is {endpoint!r}"
        )
    return parts.port


@infra_app.command("up")
@user_errors
def infra_up(
    run_dir: Annotated[
        Path | None, typer.Option(help="server data/logs/pid/credentials (default: storage.run_dir)")
    ] = None,
    dvc: Annotated[bool, typer.Option(help="write endpoint + credentials to .dvc/config.local")] = True,
    prefect: Annotated[
        bool, typer.Option(help="also start the local Prefect server (flows.prefect_port)")
    ] = True,
) -> None:
    """Start the local SeaweedFS S3 store (generated credentials, bucket) and the local Prefect server.

    Every run also checks that the files holding secrets (credentials, the store's configs, .dvc/config.local)
    are readable by their owner only, and fixes them when they are not.
    """
    from landmark.platform.infra import DVC_LOCAL_CONFIG, SeaweedLayout, configure_dvc_remote, start_seaweed
    from landmark.platform.private_files import ensure_private
    from landmark.platform.storage import ENV_ENDPOINT, ObjectStore, S3Settings, read_credentials_file

    cfg = state.config()
    directory = run_dir or Path(cfg.storage.run_dir)
    endpoint = os.environ.get(ENV_ENDPOINT) or cfg.storage.endpoint
    for path in ensure_private([*SeaweedLayout(directory.resolve()).private_paths, DVC_LOCAL_CONFIG]):
        out.print(f"{path} was readable by other users: mode set to owner-only", soft_wrap=True)
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
    if prefect:
        from landmark.platform.prefect_services import start_prefect_server, ui_url

        api = start_prefect_server(directory, cfg.flows.prefect_port)
        out.print(f"Prefect server at [bold]{ui_url(cfg.flows.prefect_port)}[/] (set PREFECT_API_URL={api})")


@infra_app.command("down")
@user_errors
def infra_down(
    run_dir: Annotated[Path | None, typer.Option(help="server directory (default: storage.run_dir)")] = None,
) -> None:
    """Stop the local Prefect worker and server and the SeaweedFS server (data and credentials are kept)."""
    from landmark.platform.infra import stop_seaweed
    from landmark.platform.prefect_services import stop_prefect_server, stop_worker

    directory = run_dir or Path(state.config().storage.run_dir)
    for name, stop in (("Prefect worker", stop_worker), ("Prefect server", stop_prefect_server)):
        if stop(directory):
            out.print(f"{name} stopped")
    stopped = stop_seaweed(directory)
    out.print("SeaweedFS stopped" if stopped else f"no SeaweedFS server running for {directory}")


@infra_app.command("status")
@user_errors
def infra_status(
    run_dir: Annotated[Path | None, typer.Option(help="server directory (default: storage.run_dir)")] = None,
) -> None:
    """Say whether the local services run (S3 store, Prefect server and worker); exit 3 when the store is down."""
    from landmark.platform.infra import is_ready, seaweed_status
    from landmark.platform.prefect_services import server_healthy, ui_url, worker_pid

    cfg = state.config()
    directory = run_dir or Path(cfg.storage.run_dir)
    port = cfg.flows.prefect_port
    out.print(f"Prefect server: {'up at ' + ui_url(port) if server_healthy(port) else 'not running'}")
    pid = worker_pid(directory)
    out.print(
        f"Prefect worker: {f'running, pid {pid}' if pid else 'not running'} (pool {cfg.flows.work_pool})"
    )
    info = seaweed_status(directory)
    if info is None:
        out.print(f"SeaweedFS: not running ({directory})")
        raise typer.Exit(3)
    health = "ready" if is_ready(info) else "starting or unhealthy"
    out.print(
        f"SeaweedFS: running, pid {info.pid}, {info.endpoint} ({health}); data {directory}/data",
        soft_wrap=True,
    )
