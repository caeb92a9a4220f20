"""``make demo``: the full retraining flow on the synthetic default world, in a scratch copy of the project.

The scratch project (``build/demo/project``) is a git + DVC repository holding this project's code, ``dvc.yaml``
and a ``params.yaml`` with the demo settings (below): the run is versioned with ``dvc commit`` + ``dvc push`` to
the local S3 store exactly as a nightly run is, without touching this repository's ``dvc.lock``. The flow run
appears in the Prefect UI of the local server, its drift and metrics in this project's Evidently workspace.

Demo settings (CPU-friendly; everything else is ``params.yaml``): single-scale extraction and 4 training
epochs, so that the whole run fits in about 10 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from flows.common import PROJECT_ROOT, open_run
from flows.retrain import retrain, summary_markdown

DEMO_SETTINGS: dict[str, Any] = {
    "extract": {"scales": [1.0]},
    "train": {"epochs": 4},
}


def deep_update(base: dict[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``new`` into ``base`` recursively (``new`` wins); returns ``base``."""
    for key, value in new.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


def _run(args: list[str], cwd: Path) -> None:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"`{' '.join(args)}` failed in {cwd}: {(result.stderr or result.stdout).strip()}")


def scratch_project(
    dest: Path,
    settings: Mapping[str, Any],
    *,
    endpoint: str,
    credentials_file: Path,
    bucket: str,
    source: Path = PROJECT_ROOT,
) -> Path:
    """Create a git + DVC copy of ``source`` (code, dvc.yaml, params.yaml updated with ``settings``) at ``dest``,
    its DVC remote ``s3://<bucket>/dvc`` on ``endpoint`` (the bucket is created); returns ``dest``.

    Raises:
        FileExistsError: ``dest`` exists (the caller decides whether to remove it).
    """
    from landmark.infra import configure_dvc_remote
    from landmark.storage import ObjectStore, S3Settings, read_credentials_file

    if dest.exists():
        raise FileExistsError(f"{dest} exists")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("landmark", "flows"):
        shutil.copytree(source / package, dest / package, ignore=ignore)
    shutil.copy(source / "dvc.yaml", dest / "dvc.yaml")
    params = deep_update(yaml.safe_load((source / "params.yaml").read_text()), settings)
    params["storage"].update(endpoint=endpoint, bucket=bucket, run_dir=str(credentials_file.parent.resolve()))
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (dest / ".gitignore").write_text("build/\ndata/\n__pycache__/\nmonitoring/workspace/\n")
    _run(["git", "init", "-q"], dest)
    _run(["git", "config", "user.email", "demo@landmark.local"], dest)
    _run(["git", "config", "user.name", "landmark demo"], dest)
    _run([sys.executable, "-m", "dvc", "init", "-q"], dest)
    credentials = read_credentials_file(credentials_file)
    configure_dvc_remote(dest, "local-s3", endpoint, credentials, url=f"s3://{bucket}/dvc")
    ObjectStore(S3Settings(endpoint, bucket, params["storage"]["region"], credentials)).ensure_bucket()
    _run(["git", "add", "-A"], dest)
    _run(["git", "commit", "-qm", "scratch project"], dest)
    return dest


def where_to_look(project: Path, flow_run_id: str | None, api_url: str | None) -> str:
    ui = api_url.removesuffix("/api") if api_url else None
    lines = [
        "## Where to look",
        f"- Prefect UI: {ui}/runs/flow-run/{flow_run_id}"
        if ui
        else "- Prefect UI: (temporary server; `make up` keeps one)",
        f"- Data Docs: {project}/build/reports/gx/uncommitted/data_docs/local_site/index.html",
        f"- drift report: {project}/build/reports/drift/report.html; dashboard: `make monitor` -> http://127.0.0.1:8000",
        f"- evaluation plots: {project}/build/eval/plots/ (precision_recall.png, results_grid.png)",
        f"- versions: `cd {project} && dvc status --cloud` ; registry: `landmark registry list`",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Run the retraining flow on the synthetic default (scratch project)."
    )
    parser.add_argument("--dir", default="build/demo", help="scratch directory (replaced)")
    args = parser.parse_args(argv)
    from landmark.storage import ENV_ENDPOINT

    run = open_run(None, None, [])
    base = Path(args.dir).resolve()
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    run_dir = Path(run.cfg.storage.run_dir)
    settings = deep_update(
        {"drift": {"workspace": str(run.path(run.cfg.drift.workspace))}}, DEMO_SETTINGS
    )  # one dashboard for every run
    project = scratch_project(
        base / "project",
        settings,
        endpoint=os.environ.get(ENV_ENDPOINT) or run.cfg.storage.endpoint,
        credentials_file=run_dir / "credentials.json",
        bucket=run.cfg.storage.bucket,
    )
    state = retrain(project_dir=str(project), return_state=True)
    summary = state.result()  # raises the flow's error when it failed
    print(summary_markdown(summary))
    print()
    print(where_to_look(project, str(state.state_details.flow_run_id), os.environ.get("PREFECT_API_URL")))


if __name__ == "__main__":
    main()
