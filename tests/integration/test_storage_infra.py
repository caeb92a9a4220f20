"""The local SeaweedFS launcher through the CLI (up/status/down/restart) and the object-store client's errors."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from landmark.cli import app
from landmark.infra import SeaweedLayout, free_port_pairs, port_is_free, read_state, stop_seaweed
from landmark.prefect_services import server_healthy, stop_prefect_server
from landmark.storage import (
    ENV_ENDPOINT,
    Credentials,
    ObjectNotFoundError,
    ObjectStore,
    S3Settings,
    StorageError,
    read_credentials_file,
)

pytestmark = pytest.mark.integration

SERVICES_DIR = Path(__file__).resolve().parents[2] / "build" / "test-services"


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """A project-local run dir for a private server; the server is stopped and the dir removed afterwards."""
    SERVICES_DIR.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="infra-", dir=SERVICES_DIR))
    try:
        yield path
    finally:
        stop_seaweed(path)
        stop_prefect_server(path)
        shutil.rmtree(path, ignore_errors=True)


def test_infra_up_status_down_and_restart_keep_data(run_dir: Path) -> None:
    port = free_port_pairs(1)[0]
    prefect_port = next(p for p in range(4450, 4550) if port_is_free(p))
    env = {ENV_ENDPOINT: f"http://127.0.0.1:{port}"}
    runner = CliRunner()
    with_prefect = ["--set", f"flows.prefect_port={prefect_port}"]
    up = runner.invoke(
        app,
        [*with_prefect, "infra", "up", "--run-dir", str(run_dir), "--no-dvc"],
        env=env,
        terminal_width=200,
    )
    assert up.exit_code == 0, up.output
    assert f"http://127.0.0.1:{port}" in up.output and "bucket 'landmark' created" in up.output
    assert f"Prefect server at http://127.0.0.1:{prefect_port}" in up.output
    assert server_healthy(prefect_port)
    layout = SeaweedLayout(run_dir.resolve())
    pid = int(layout.pid_file.read_text())
    assert stat.S_IMODE(layout.credentials_file.stat().st_mode) == 0o600
    credentials = read_credentials_file(layout.credentials_file)
    store = ObjectStore(S3Settings(f"http://127.0.0.1:{port}", "landmark", "us-east-1", credentials))
    store.put_bytes("keep/me.txt", b"still here")

    status = runner.invoke(
        app, [*with_prefect, "infra", "status", "--run-dir", str(run_dir)], terminal_width=200
    )
    assert status.exit_code == 0 and f"pid {pid}" in status.output and "ready" in status.output
    assert f"Prefect server: up at http://127.0.0.1:{prefect_port}" in status.output

    down = runner.invoke(app, ["infra", "down", "--run-dir", str(run_dir)])
    assert (
        down.exit_code == 0 and "Prefect server stopped" in down.output and "SeaweedFS stopped" in down.output
    )
    assert not server_healthy(prefect_port)
    assert not layout.pid_file.exists() and not list(layout.socket_dir.glob("*.sock"))
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert runner.invoke(app, ["infra", "status", "--run-dir", str(run_dir)]).exit_code == 3
    assert (
        "no SeaweedFS server running"
        in runner.invoke(app, ["infra", "down", "--run-dir", str(run_dir)]).output
    )

    again = runner.invoke(
        app,
        ["infra", "up", "--run-dir", str(run_dir), "--no-dvc", "--no-prefect"],
        env=env,
        terminal_width=200,
    )
    assert again.exit_code == 0, again.output
    assert "created" not in again.output  # same bucket, same data
    assert read_credentials_file(layout.credentials_file) == credentials  # same generated credentials
    assert store.get_bytes("keep/me.txt") == b"still here"
    state = read_state(run_dir)
    assert state is not None and state.ports.s3 == port


def test_store_errors_are_clear(object_store: ObjectStore, s3_settings: S3Settings) -> None:
    with pytest.raises(ObjectNotFoundError, match="NoSuchKey"):
        object_store.get_bytes("no/such/key")
    assert not object_store.exists("no/such/key")
    wrong = ObjectStore(
        S3Settings(s3_settings.endpoint, s3_settings.bucket, "us-east-1", Credentials("nobody", "wrong"))
    )
    with pytest.raises(StorageError) as denied:
        wrong.put_bytes("x.txt", b"x")
    assert s3_settings.endpoint in str(denied.value) and "upload" in str(denied.value)
    port = free_port_pairs(1)[0]
    down = ObjectStore(
        S3Settings(f"http://127.0.0.1:{port}", "bucket", "us-east-1", s3_settings.credentials, retries=0)
    )
    with pytest.raises(StorageError, match="unreachable") as unreachable:
        down.ping()
    assert "landmark infra up" in str(unreachable.value)
