"""The local SeaweedFS launcher through the CLI (up/status/down/restart) and the object-store client's errors."""

from __future__ import annotations

import os
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from landmark.cli import app
from landmark.platform.infra import SeaweedLayout, free_port_pairs, port_is_free, read_state, stop_seaweed
from landmark.platform.prefect_services import server_healthy, stop_prefect_server
from landmark.platform.storage import (
    ENV_ENDPOINT,
    Credentials,
    ObjectNotFoundError,
    ObjectStore,
    S3Settings,
    StorageError,
    read_credentials_file,
    write_credentials_file,
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


def _cmdlines_with(secret: bytes, found: dict[int, bytes], stop: threading.Event) -> None:
    """Record every process whose command line contains ``secret`` until ``stop`` is set."""
    while not stop.is_set():
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                args = cmdline.read_bytes()
            except OSError:  # the process is gone
                continue
            if secret in args:
                found[int(cmdline.parent.name)] = args.replace(b"\0", b" ")
        time.sleep(0.005)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_infra_up_keeps_secrets_private_and_the_filer_closed(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    project = tmp_path / "project"
    project.mkdir()
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=project, env=env, check=True)
    # left by an older version: world-readable credentials and DVC local config (with a setting to keep)
    secret = "s3cret-" + secrets.token_urlsafe(20)
    write_credentials_file(run_dir / "credentials.json", Credentials("LMTESTACCESSKEY", secret))
    (run_dir / "credentials.json").chmod(0o644)
    local_config = project / ".dvc" / "config.local"
    local_config.write_text("[core]\n    autostage = true\n")
    local_config.chmod(0o644)
    monkeypatch.chdir(project)
    port = free_port_pairs(1)[0]

    found: dict[int, bytes] = {}
    stop = threading.Event()
    watcher = threading.Thread(target=_cmdlines_with, args=(secret.encode(), found, stop), daemon=True)
    watcher.start()
    try:
        up = CliRunner().invoke(
            app,
            ["infra", "up", "--run-dir", str(run_dir), "--no-prefect"],
            env={ENV_ENDPOINT: f"http://127.0.0.1:{port}"},
            terminal_width=300,
        )
    finally:
        stop.set()
        watcher.join(timeout=10)
    assert up.exit_code == 0, up.output
    assert not found, f"the secret was on a command line: {found}"
    assert "credentials.json was readable by other users" in up.output
    assert "config.local was readable by other users" in up.output
    layout = SeaweedLayout(run_dir.resolve())
    for path in (layout.credentials_file, layout.s3_config, layout.security_file, local_config):
        assert _mode(path) == 0o600, f"{path}: {oct(_mode(path))}"
    assert _mode(layout.data_dir) == 0o700

    # DVC reads the file written without it: the remote's endpoint and keys, and the setting kept
    listed = subprocess.run(
        [sys.executable, "-m", "dvc", "config", "--local", "--list"], env=env, capture_output=True, text=True
    )
    assert listed.returncode == 0, listed.stderr
    assert f"remote.local-s3.secret_access_key={secret}" in listed.stdout.splitlines()
    assert f"remote.local-s3.endpointurl=http://127.0.0.1:{port}" in listed.stdout.splitlines()
    assert "core.autostage=true" in listed.stdout.splitlines()

    # the S3 API serves an object to the credentials; the filer and volume ports serve nothing without them
    store = ObjectStore(
        S3Settings(
            f"http://127.0.0.1:{port}", "landmark", "us-east-1", Credentials("LMTESTACCESSKEY", secret)
        )
    )
    store.put_bytes("private/object.txt", b"only through S3")
    assert store.get_bytes("private/object.txt") == b"only through S3"
    state = read_state(run_dir)
    assert state is not None
    for url in (
        f"http://127.0.0.1:{state.ports.filer}/buckets/landmark/private/object.txt",
        f"http://127.0.0.1:{state.ports.filer}/buckets/landmark/",
        f"http://127.0.0.1:{state.ports.volume}/1,0000000100000000",
    ):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=5)
        assert refused.value.code == 401, url
