"""What every flow shares: the project root, config loading, path resolution, artifacts, and run versioning.

Flows run from the project directory (a git + DVC repository) whatever the working directory of the process that
runs them (a Prefect worker starts flows in a temporary directory): every path of ``params.yaml`` is resolved
against ``project_dir``. Versioning a run = ``dvc commit`` of the stages it produced + ``dvc push`` to the S3
remote, and the git revision and the DVC output hashes recorded as labels of the flow run and as an artifact.
"""

from __future__ import annotations

import functools
import hashlib
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import httpx
import urllib3
import yaml
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.settings import get_current_settings

from landmark.config import Config, load_config
from landmark.platform.infra import InfraError, run_dvc
from landmark.platform.parallel import ClusterError, reachable_scheduler
from landmark.platform.storage import StorageError

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Run:
    """The typed config of one flow run and the project directory its relative paths are resolved against."""

    cfg: Config
    root: Path

    def path(self, relative: str | Path) -> Path:
        """``relative`` (a ``params.yaml`` path) under the project root; absolute paths stay as they are."""
        path = Path(relative)
        return path if path.is_absolute() else self.root / path


def open_run(project_dir: str | Path | None, params: str | None, overrides: Sequence[str]) -> Run:
    """Load ``params`` (default ``<project_dir>/params.yaml``) with ``--set``-style overrides; every relative
    path of the config is made absolute under the project root (stages and the store find their files)."""
    use_forkserver()
    root = Path(project_dir).resolve() if project_dir else PROJECT_ROOT
    params_path = Path(params) if params else root / "params.yaml"
    cfg = load_config(params_path if params_path.is_absolute() else root / params_path, overrides)
    return Run(absolute_paths(cfg, root), root)


def use_forkserver() -> None:
    """Start worker processes (DataLoader workers, process pools) with ``forkserver``, not ``fork``: Prefect runs
    tasks in threads next to its own event-loop threads, and forking a multi-threaded process can leave the child
    with locks held by threads that do not exist there (DataLoader workers died with exit code 1 under fork)."""
    import multiprocessing

    if multiprocessing.get_start_method(allow_none=True) != "forkserver":
        multiprocessing.set_start_method("forkserver", force=True)


def _under(root: Path, value: str) -> str:
    return value if not value or Path(value).is_absolute() else str(root / value)


def absolute_paths(cfg: Config, root: Path) -> Config:
    """``cfg`` with ``paths.*``, ``storage.run_dir``, ``drift.workspace`` and ``local.model`` under ``root``."""
    paths = replace(
        cfg.paths, **{f.name: _under(root, getattr(cfg.paths, f.name)) for f in fields(cfg.paths)}
    )
    return replace(
        cfg,
        paths=paths,
        storage=replace(cfg.storage, run_dir=_under(root, cfg.storage.run_dir)),
        drift=replace(cfg.drift, workspace=_under(root, cfg.drift.workspace)),
        local=replace(cfg.local, model=_under(root, cfg.local.model)),
    )


def task_runner(cfg: Config) -> Any:
    """A Dask task runner on ``flows.dask_address`` when configured, else None (Prefect's default threads)."""
    if not cfg.flows.dask_address:
        return None
    from prefect_dask import DaskTaskRunner

    reachable_scheduler(cfg.flows.dask_address, "flows.dask_address")  # one line now, not a crashed flow run

    return DaskTaskRunner(address=cfg.flows.dask_address)


# --- artifacts --------------------------------------------------------------------------------------------------


def _flat(prefix: str, value: Any) -> list[tuple[str, Any]]:
    if isinstance(value, Mapping):
        return [
            item
            for key, sub in value.items()
            for item in _flat(f"{prefix}.{key}" if prefix else str(key), sub)
        ]
    return [(prefix, value)]


def flatten(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists and scalars are leaves)."""
    return dict(_flat("", metrics))


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A GitHub-flavoured markdown table of ``rows`` (columns of the first row)."""
    if not rows:
        return "_(empty)_"
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def publish_markdown(key: str, markdown: str, description: str) -> None:
    """A markdown artifact on the current flow run (a no-op outside a run: stages stay usable without Prefect)."""
    if flow_run.get_id() is not None:
        create_markdown_artifact(markdown=markdown, key=key, description=description)


def publish_table(key: str, rows: Sequence[Mapping[str, Any]], description: str) -> None:
    if flow_run.get_id() is not None and rows:
        create_table_artifact(table=[dict(row) for row in rows], key=key, description=description)


# --- versioning -------------------------------------------------------------------------------------------------


def git(root: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    return result.stdout.strip() if result.returncode == 0 else ""


def git_revision(root: Path) -> str:
    """Short HEAD revision, with ``-dirty`` when tracked files changed; ``unknown`` outside a git repository."""
    revision = git(root, "rev-parse", "--short", "HEAD") or "unknown"
    dirty = git(root, "status", "--porcelain", "--untracked-files=no")
    return f"{revision}-dirty" if dirty else revision


def locked_outputs(root: Path, stages: Sequence[str]) -> dict[str, str]:
    """Output path -> md5 of each of ``stages`` as recorded in ``dvc.lock``."""
    lock_file = root / "dvc.lock"
    if not lock_file.is_file():
        return {}
    lock = yaml.safe_load(lock_file.read_text()) or {}
    found: dict[str, str] = {}
    for stage in stages:
        for out in (lock.get("stages", {}).get(stage, {}) or {}).get("outs", []) or []:
            found[str(out["path"])] = str(out.get("md5", ""))
    return found


def data_version(outputs: Mapping[str, str]) -> str:
    """One short hash of a run's DVC outputs (what the flow-run label ``dvc.outputs`` shows)."""
    digest = hashlib.sha256("\n".join(f"{k}={v}" for k, v in sorted(outputs.items())).encode()).hexdigest()
    return digest[:12]


@task(name="version", cache_policy=NO_CACHE)
def version_outputs(run: Run, stages: Sequence[str]) -> dict[str, Any]:
    """``dvc commit`` the stages this run produced (dvc.lock records their hashes) and label the flow run with
    the git revision and a hash of those outputs. Not retried: a commit that fails fails the same way again."""
    run_dvc(["commit", "--force", *stages], run.root, timeout_s=600.0)
    outputs = locked_outputs(run.root, stages)
    labels = {"git.revision": git_revision(run.root), "dvc.outputs": data_version(outputs)}
    label_flow_run(labels)
    rows = [{"output": path, "md5": md5} for path, md5 in sorted(outputs.items())]
    publish_markdown(
        "versions",
        f"git revision `{labels['git.revision']}`, DVC outputs `{labels['dvc.outputs']}`\n\n"
        + markdown_table(rows),
        "Data and model versions of this run",
    )
    get_run_logger().info(
        "versioned %d outputs of %s (git %s)", len(outputs), ", ".join(stages), labels["git.revision"]
    )
    return {**labels, "outputs": outputs}


@task(name="push", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def push_outputs(run: Run, stages: Sequence[str]) -> None:
    """``dvc push`` the stages' outputs to the S3 remote. Retried: the store may be briefly unreachable, and
    pushing again only sends what is missing."""
    run_dvc(["push", *stages], run.root, timeout_s=1800.0)


def version_and_push(run: Run, stages: Sequence[str]) -> dict[str, Any]:
    """Commit the outputs, push them when ``flows.dvc_push`` says so; returns the version labels."""
    versions = version_outputs(run, stages)
    if run.cfg.flows.dvc_push:
        push_outputs(run, stages)
    return {**versions, "pushed": run.cfg.flows.dvc_push}


def label_flow_run(labels: Mapping[str, str]) -> None:
    """Add key-value labels to the current flow run (shown in the Prefect UI)."""
    run_id = flow_run.get_id()
    if run_id is None:
        return
    from uuid import UUID

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.update_flow_run_labels(UUID(run_id), dict(labels))


# ---------------------------------------------------------------------------------------------------------------
# Entry points: a service that cannot be reached is one line, not a traceback

P = ParamSpec("P")
R = TypeVar("R")
PREFECT_START = "start it with `make up`, or unset PREFECT_API_URL to run the flow on a temporary server"
STORE_START = "start it with `make up` (`landmark infra up`)"
_PREFECT_DOWN = re.compile(r"^Failed to reach API at (\S+)")
_STORE_DOWN = re.compile(r"object store at (\S+) is unreachable")
_DVC_STORE_DOWN = re.compile(r'Could not connect to the endpoint URL: "(\w+://[^/"]+)')  # DVC's S3 remote
_CONNECT_ERRORS = (
    ConnectionError,
    httpx.ConnectError,
    httpx.ConnectTimeout,
    urllib3.exceptions.ConnectTimeoutError,
)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions that caused it (``__cause__``, else ``__context__``), each once."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _could_not_connect(exc: BaseException) -> bool:
    """True when ``exc`` comes from a connection that could not be made (refused, timed out, no route)."""
    for error in _causes(exc):
        if isinstance(error, _CONNECT_ERRORS):  # urllib3's NewConnectionError is a ConnectTimeoutError
            return True
        reason = error.reason if isinstance(error, urllib3.exceptions.MaxRetryError) else None
        if reason is not None and _could_not_connect(reason):
            return True
    return False


def _request_url(error: httpx.RequestError) -> str:
    try:
        return str(error.request.url)
    except RuntimeError:  # an error raised without its request
        return ""


def unreachable_service(exc: BaseException) -> str | None:
    """One line naming the service ``exc`` could not reach, its URL and the command that starts it.

    Recognised: the Prefect API (``PREFECT_API_URL`` set, server down), the S3 object store (ours, and DVC's
    remote in ``dvc push``) and the Dask scheduler. Returns None for any other error (it is not hidden).
    """
    api = get_current_settings().api.url or ""
    for error in _causes(exc):
        if isinstance(error, ClusterError):
            return str(error)
        found = _PREFECT_DOWN.match(str(error)) if isinstance(error, RuntimeError) else None
        if found:
            return f"Prefect server unreachable at {found.group(1)}: {PREFECT_START}"
        if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout):
            url = _request_url(error)
            if api and url.startswith(api.rstrip("/")):
                return f"Prefect server unreachable at {api}: {PREFECT_START}"
        if isinstance(error, StorageError) and _could_not_connect(error):
            store = _STORE_DOWN.search(str(error))
            return (
                f"S3 object store unreachable at {store.group(1) if store else 'its endpoint'}: {STORE_START}"
            )
        remote = _DVC_STORE_DOWN.search(str(error)) if isinstance(error, InfraError) else None
        if remote:
            return (
                f"S3 object store unreachable at {remote.group(1)} (dvc push): {STORE_START}; the outputs stay"
                " committed in the workspace and `dvc push` sends them once it is up"
            )
    return None


def exit_when_unreachable(main: Callable[P, R]) -> Callable[P, R]:
    """Decorate a flow entry point's ``main``: when a service it needs cannot be reached, the process ends with
    exit status 1 and one line on stderr (:func:`unreachable_service`) instead of a traceback."""

    @functools.wraps(main)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return main(*args, **kwargs)
        except Exception as exc:
            message = unreachable_service(exc)
            if message is None:
                raise
            print(f"error: {message}", file=sys.stderr)
            raise SystemExit(1) from None

    return wrapper
