"""Create the Evidently project and its dashboard in the monitoring workspace; safe to run any number of times.

Usage (from the project root; ``make monitor`` runs it before ``evidently ui``)::

    .venv/bin/python monitoring/setup.py [--params params.yaml] [--workspace DIR] [--project NAME]

Workspace and project default to ``drift.workspace`` and ``drift.project`` in the params file. The panels are
defined in :func:`landmark.ops.drift.setup_monitoring`; panels that already exist (by title) are left as they are, and
the drift panels of earlier versions (one panel for both uses, which drew nothing for the second) are replaced.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from landmark.config import ConfigError, load_config
from landmark.ops.drift import setup_monitoring


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, set the project up, print where it is; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--params", type=Path, default=Path("params.yaml"), help="params file (default: params.yaml)"
    )
    parser.add_argument(
        "--workspace", type=Path, default=None, help="workspace dir (default: drift.workspace)"
    )
    parser.add_argument("--project", default=None, help="project name (default: drift.project)")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.params if args.params.is_file() else None)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    workspace = args.workspace or Path(cfg.drift.workspace)
    project = args.project or cfg.drift.project
    project_id = setup_monitoring(workspace, project)
    print(f"Evidently project '{project}' ({project_id}) with its dashboard in {workspace}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
