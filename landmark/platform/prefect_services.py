"""Local Prefect services as background processes: the API/UI server on 127.0.0.1 and a process-pool worker.

``start_prefect_server(run_dir, port)`` starts ``prefect server start`` in its own session with a project-local
``PREFECT_HOME`` (SQLite database, logs) under ``<run_dir>/prefect`` and waits for ``/api/health``;
``start_worker(run_dir, pool, api_url)`` starts ``prefect worker start`` for a local process work pool. Both
record a pid file, are idempotent (a running one is reused) and stop with SIGTERM (SIGKILL after a grace period).
Nothing here imports Prefect: the services are separate processes, so ``landmark`` stays free of Prefect imports.

Layout of ``<run_dir>/prefect``::

    home/          PREFECT_HOME (prefect.db, profiles)      server.pid  server.log
    worker.pid     worker.log
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from landmark.platform.infra import HOST, InfraError, log_tail, port_is_free, process_alive, terminate_process

ANALYTICS_OFF = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}


def api_url(port: int) -> str:
    """The local Prefect API URL for ``port`` (what ``PREFECT_API_URL`` must be set to)."""
    return f"http://{HOST}:{port}/api"


def ui_url(port: int) -> str:
    return f"http://{HOST}:{port}"


@dataclass(frozen=True)
class Service:
    """One background process of ``<run_dir>/prefect``: its pid file and log."""

    run_dir: Path
    name: str  # "server" or "worker"

    @property
    def root(self) -> Path:
        return self.run_dir / "prefect"

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def pid_file(self) -> Path:
        return self.root / f"{self.name}.pid"

    @property
    def log(self) -> Path:
        return self.root / f"{self.name}.log"

    def pid(self) -> int | None:
        """The pid of the running process, or None (a stale pid file is removed)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if process_alive(pid) and _runs_prefect(pid):
            return pid
        self.pid_file.unlink(missing_ok=True)
        return None

    def environment(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {**os.environ, **ANALYTICS_OFF, "PREFECT_HOME": str(self.home), **(extra or {})}

    def spawn(self, args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
        self.root.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "prefect", *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,  # outlives the command that started it
            )
        self.pid_file.write_text(f"{process.pid}\n")
        return process

    def stop(self, grace_s: float = 15.0) -> bool:
        """Stop the process; True when one was running."""
        pid = self.pid()
        if pid is not None:
            terminate_process(pid, grace_s)
        self.pid_file.unlink(missing_ok=True)
        return pid is not None


def _runs_prefect(pid: int) -> bool:
    """True when ``pid`` runs ``prefect`` (guards against recycled pids; trusts the pid file without /proc)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    return b"prefect" in cmdline


def server_healthy(port: int, timeout_s: float = 1.0) -> bool:
    """True when a Prefect API answers ``/api/health`` on 127.0.0.1:``port``."""
    try:
        with urllib.request.urlopen(f"{api_url(port)}/health", timeout=timeout_s) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def server_environment(service: Service, port: int) -> dict[str, str]:
    """The server's environment: its project-local home, and its own address as the one the UI calls.

    ``--port`` alone moves the API but not the UI: the UI's API URL comes from ``PREFECT_API_URL`` or
    ``PREFECT_SERVER_API_HOST``/``PORT`` (default 127.0.0.1:4200), so a server on another port served a UI that
    showed the runs of whatever answered on 4200 (or nothing).
    """
    return service.environment(
        {
            "PREFECT_SERVER_API_HOST": HOST,
            "PREFECT_SERVER_API_PORT": str(port),
            "PREFECT_SERVER_UI_API_URL": api_url(port),
        }
    )


def start_prefect_server(run_dir: str | Path, port: int, *, timeout_s: float = 90.0) -> str:
    """Start (or find running) the local Prefect server and wait for its health endpoint; returns the API URL.

    Raises:
        InfraError: the port is taken by something that is not a Prefect API, or the server did not become
            healthy in time (the message carries the end of its log).
    """
    service = Service(Path(run_dir).resolve(), "server")
    if server_healthy(port):
        return api_url(port)
    if service.pid() is None and not port_is_free(port):
        raise InfraError(f"port {port} on {HOST} is in use by something that is not a Prefect server")
    process = None
    if service.pid() is None:
        process = service.spawn(
            ["server", "start", "--host", HOST, "--port", str(port)],
            server_environment(service, port),
            service.root,
        )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            service.pid_file.unlink(missing_ok=True)
            raise InfraError(
                f"the Prefect server exited with status {process.returncode} while starting; "
                f"log {service.log}:\n{log_tail(service.log)}"
            )
        if server_healthy(port):
            return api_url(port)
        time.sleep(0.5)
    service.stop(grace_s=5.0)
    raise InfraError(
        f"the Prefect server on port {port} was not healthy within {timeout_s:.0f}s; "
        f"log {service.log}:\n{log_tail(service.log)}"
    )


def stop_prefect_server(run_dir: str | Path) -> bool:
    """Stop the local Prefect server of ``run_dir``; True when one was running (its database is kept)."""
    return Service(Path(run_dir).resolve(), "server").stop()


def start_worker(run_dir: str | Path, pool: str, port: int, project_dir: str | Path) -> int:
    """Start (or find running) a process worker of ``pool`` that runs flows from ``project_dir``; returns its pid.

    Raises:
        InfraError: no healthy Prefect server on ``port`` (start it first with ``landmark infra up``).
    """
    if not server_healthy(port):
        raise InfraError(f"no Prefect server answers on port {port}: run `landmark infra up` first")
    service = Service(Path(run_dir).resolve(), "worker")
    running = service.pid()
    if running is not None:
        return running
    env = service.environment(
        {"PREFECT_API_URL": api_url(port), "PYTHONPATH": str(Path(project_dir).resolve())}
    )
    process = service.spawn(
        ["worker", "start", "--pool", pool, "--type", "process"], env, Path(project_dir).resolve()
    )
    time.sleep(1.0)
    if process.poll() is not None:
        service.pid_file.unlink(missing_ok=True)
        raise InfraError(
            f"the Prefect worker exited with status {process.returncode}; log {service.log}:\n{log_tail(service.log)}"
        )
    return process.pid


def stop_worker(run_dir: str | Path) -> bool:
    """Stop the local worker of ``run_dir``; True when one was running."""
    return Service(Path(run_dir).resolve(), "worker").stop()


def worker_pid(run_dir: str | Path) -> int | None:
    return Service(Path(run_dir).resolve(), "worker").pid()
