"""``make demo``: two nights of the living pipeline on the synthetic world, in a scratch copy of the project.

The scratch project (``build/demo/project``) is a git + DVC repository holding this project's code, ``dvc.yaml``
and a ``params.yaml`` with the demo settings (below); its DVC remote is the local S3 store. The story:

1. **night 1**: day 0 of the synthetic feed arrives in the inbox; the ingestion flow puts it in the catalog and
   gates it; the retraining flow cleans, trains, indexes, evaluates and gates the first candidate against the
   pretrained backbone;
2. **a day of ingestion**: day 1 arrives (new photos, new landmarks, and truncated files that are quarantined),
   then day 2 (shot at night: the drift report flags it);
3. **night 2**: the retraining flow on the grown catalog, bootstrapped from night 1's production model, with its
   own gate decision.

It prints each night's summary and what changed between them. Flow runs appear in the Prefect UI of the local
server, drift and metrics in this project's Evidently workspace. Demo settings (CPU-friendly; everything else
is ``params.yaml``): single-scale extraction at 320 px and 4 training epochs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from flows.common import PROJECT_ROOT, exit_when_unreachable, open_run
from flows.ingest import ingest
from flows.retrain import retrain, summary_markdown

DEMO_SETTINGS: dict[str, Any] = {
    "extract": {
        "scales": [1.0],
        "image_size": 320,
    },  # single scale, a bit smaller: every model extracts 3 times
    "train": {"epochs": 4},  # 3 is worse than none: the full-resolution last epoch then starts at a high rate
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
    from landmark.platform.infra import configure_dvc_remote
    from landmark.platform.storage import ObjectStore, S3Settings, read_credentials_file

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
        f"- drift reports: {project}/build/reports/drift/report.html (test vs train), "
        f"{project}/build/reports/drift_ingest/report.html (newest batch); dashboard: `make monitor` -> http://127.0.0.1:8000",
        f"- evaluation plots: {project}/build/eval/plots/ (precision_recall.png, results_grid.png)",
        f"- versions: `cd {project} && dvc status --cloud` ; registry: `landmark registry list`",
    ]
    return "\n".join(lines)


def arrive(project: Path, days: int) -> list[str]:
    """Days 0..days-1 of the synthetic feed are in the project's inbox (the world is generated once)."""
    from landmark.config import load_config
    from landmark.data.synthetic.feed import write_feed
    from landmark.stages.synth import synth

    cfg = load_config(project / "params.yaml")
    world = project / cfg.paths.synth
    if not (world / "synth_meta.parquet").is_file():
        synth(cfg, world, progress=False)
    return [p.name for p in write_feed(world, project / cfg.paths.inbox, cfg.feed, cfg.seed, days)]


def changes(first: Mapping[str, Any], second: Mapping[str, Any]) -> str:
    """What changed between two nights, in markdown."""
    rows = [
        ("catalog (ok images)", first.get("catalog"), second.get("catalog")),
        ("production before the night", first.get("production"), second.get("production")),
        ("outcome", first.get("outcome"), second.get("outcome")),
    ]
    after1, after2 = first.get("metrics_after", {}), second.get("metrics_after", {})
    rows += [(f"candidate {k}", after1.get(k), v) for k, v in after2.items()]
    lines = ["## What changed between the nights", "| | night 1 | night 2 |", "|---|---|---|"]
    lines += [f"| {name} | {a} | {b} |" for name, a, b in rows]
    return "\n".join(lines)


@dataclass
class Story:
    """The flow runs of the two nights, named (``ingest day-000``, ``night 1``, ...), in order."""

    runs: list[tuple[str, Any]] = field(default_factory=list)

    def result(self, name: str) -> Any:
        return dict(self.runs)[name].result()


def day_line(arrived: Sequence[str], result: Mapping[str, Any]) -> str:
    """One line on what a day of ingestion brought."""
    batch, drift = result["batch"], result["drift"]
    line = (
        f"# Day: {', '.join(arrived)} arrived: +{batch.get('added', 0)} images, quarantined "
        f"{batch.get('quarantined') or 'none'}"
    )
    if drift:
        verdict = "within bounds" if drift["passed"] else "OUT OF BOUNDS"
        line += f"; drift of the new train images: share {drift['drift_share']:.3f} ({verdict})"
    refresh = result.get("refresh") or {}
    if refresh.get("outcome") == "version 0":
        line += f"; the pretrained backbone serves {refresh['index_size']} images as {refresh['production_after']}"
    if refresh.get("outcome") == "refreshed":
        line += (
            f"; index refreshed without retraining: {refresh['index_size']} images served by "
            f"{refresh['production_after']}"
        )
    return line


def tell_story(project: Path, say: Callable[[str], None] = print) -> Story:
    """Night 1 on day 0, a day of ingestion (the remaining days, one by one), night 2 on the grown catalog."""
    story = Story()

    def ingest_days(days: int) -> None:
        arrived = arrive(project, days)
        state = ingest(project_dir=str(project), return_state=True)
        story.runs.append((f"ingest {', '.join(arrived)}", state))
        say(day_line(arrived, state.result()))

    def night(number: int) -> dict[str, Any]:
        state = retrain(project_dir=str(project), return_state=True)
        story.runs.append((f"night {number}", state))
        summary: dict[str, Any] = state.result()
        say(summary_markdown(summary))
        return summary

    ingest_days(1)
    first = night(1)
    for days in range(2, load_days(project) + 1):
        ingest_days(days)
    second = night(2)
    say(changes(first, second))
    return story


@exit_when_unreachable
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Two nights of the pipeline on the synthetic feed (scratch project)."
    )
    parser.add_argument("--dir", default="build/demo", help="scratch directory (replaced)")
    args = parser.parse_args(argv)
    from landmark.platform.storage import ENV_ENDPOINT

    run = open_run(None, None, [])
    base = Path(args.dir).resolve()
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    run_dir = Path(run.cfg.storage.run_dir)
    settings = deep_update(
        {
            "drift": {"workspace": str(run.path(run.cfg.drift.workspace))},  # one dashboard for every run
            "paths": {"imc": str(run.path(run.cfg.paths.imc))},  # the golden real photos, wherever they are
            "train": {"distill_real": [str(run.path(f)) for f in run.cfg.train.distill_real]},  # the same
        },
        DEMO_SETTINGS,
    )
    project = scratch_project(
        base / "project",
        settings,
        endpoint=os.environ.get(ENV_ENDPOINT) or run.cfg.storage.endpoint,
        credentials_file=run_dir / "credentials.json",
        bucket=run.cfg.storage.bucket,
    )
    story = tell_story(project, lambda text: print("\n" + text, flush=True))
    last = story.runs[-1][1]
    print()
    print(where_to_look(project, str(last.state_details.flow_run_id), os.environ.get("PREFECT_API_URL")))


def load_days(project: Path) -> int:
    from landmark.config import load_config

    return load_config(project / "params.yaml").feed.days


if __name__ == "__main__":
    main()
