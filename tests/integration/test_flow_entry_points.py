"""Flow entry points with a service down: one line naming the service, its URL and how to start it; exit 1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from flows.common import PREFECT_START, STORE_START, exit_when_unreachable, task_runner, unreachable_service
from landmark.config import load_config
from landmark.platform.infra import run_dvc
from landmark.platform.storage import Credentials, ObjectStore, S3Settings, StorageError

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    "command",
    [["flows.ingest", "--no-version"], ["flows.evaluate"], ["flows.rebuild_index", "--no-version"]],
    ids=lambda c: c[0],
)
def test_a_flow_with_the_prefect_server_down_ends_in_one_line(tmp_path: Path, command: list[str]) -> None:
    api = f"http://127.0.0.1:{closed_port()}/api"
    env = {
        **os.environ,
        "PREFECT_API_URL": api,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "TMPDIR": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-m", *command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert (
        done.stderr.strip().splitlines()[-1]
        == f"error: Prefect server unreachable at {api}/: {PREFECT_START}"
    )


def test_an_unreachable_store_is_named_and_other_errors_are_not_hidden(
    capsys: pytest.CaptureFixture[str],
) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    store = ObjectStore(
        S3Settings(endpoint, "landmark", "us-east-1", Credentials("key", "secret"), retries=0)
    )

    @exit_when_unreachable
    def main() -> None:
        store.ping()

    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 1
    assert capsys.readouterr().err == f"error: S3 object store unreachable at {endpoint}: {STORE_START}\n"

    @exit_when_unreachable
    def fails() -> None:
        raise StorageError(f"cannot upload x: object store at {endpoint} denied access (AccessDenied)")

    with pytest.raises(StorageError, match="denied access"):  # reachable, refused: the real error stays
        fails()
    assert unreachable_service(ValueError("Failed to reach API at http://x/")) is None


def test_an_unreachable_dask_scheduler_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    address = f"tcp://127.0.0.1:{closed_port()}"
    cfg = load_config(None, [f"flows.dask_address={address}"])

    @exit_when_unreachable
    def main() -> None:
        task_runner(cfg)  # before any flow run starts

    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: Dask scheduler unreachable at {address} (flows.dask_address): ")
    assert "dask scheduler" in err and err.count("\n") == 1


def test_a_dvc_push_to_an_unreachable_store_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    run_dvc(["init", "-q"], tmp_path)
    run_dvc(["remote", "add", "-d", "store", "s3://landmark/dvc"], tmp_path)
    for key, value in (("endpointurl", endpoint), ("access_key_id", "key"), ("secret_access_key", "secret")):
        run_dvc(["remote", "modify", "--local", "store", key, value], tmp_path)
    (tmp_path / "data.txt").write_text("x")
    run_dvc(["add", "-q", "data.txt"], tmp_path)

    @exit_when_unreachable
    def main() -> None:
        run_dvc(["push"], tmp_path)  # what a flow's push task runs

    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 1
    assert capsys.readouterr().err == (
        f"error: S3 object store unreachable at {endpoint} (dvc push): {STORE_START}; the outputs stay committed"
        " in the workspace and `dvc push` sends them once it is up\n"
    )


def test_flows_switch_telemetry_off_unless_the_user_chose() -> None:
    # the temporary Prefect server a flow starts without PREFECT_API_URL, the demo's `dvc init` and GX must not
    # try to reach the internet
    probe = (
        "import os, flows, prefect.settings as s; print(s.get_current_settings().server.analytics_enabled,"
        " os.environ['DVC_NO_ANALYTICS'], os.environ['GX_ANALYTICS_ENABLED'])"
    )
    names = ("PREFECT_SERVER_ANALYTICS_ENABLED", "DO_NOT_TRACK", "DVC_NO_ANALYTICS", "GX_ANALYTICS_ENABLED")
    env = {k: v for k, v in os.environ.items() if k not in names}
    off = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True)
    assert off.stdout.split() == ["False", "1", "false"], off.stderr
    chosen = {**env, "PREFECT_SERVER_ANALYTICS_ENABLED": "true"}
    on = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=chosen, capture_output=True, text=True)
    assert on.stdout.split()[0] == "True", on.stderr
