"""Offline evaluation flow: mAP/GAP of the current descriptors and index, published as Prefect artifacts and logged
to the Evidently workspace (the mAP/GAP-over-time panels). ``python -m flows.evaluate``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from prefect import flow

from flows.common import exit_when_unreachable, open_run
from flows.tasks import evaluate_model, headline_metrics


@flow(name="evaluate", log_prints=True)
def evaluate_production(
    project_dir: str | None = None,
    params: str | None = None,
    overrides: list[str] | None = None,
    data: str | None = None,
) -> dict[str, Any]:
    """Offline mAP/GAP of the current features and index (``paths.features``/``paths.index``), as artifacts."""
    run = open_run(project_dir, params, overrides or [])
    data_dir = run.path(data or run.cfg.paths.catalog)
    index_dir = run.path(run.cfg.paths.index)
    metrics = evaluate_model(
        run,
        data_dir,
        run.path(run.cfg.paths.features),
        run.path(run.cfg.paths.eval),
        index_dir if index_dir.is_dir() else None,
        "current",
        run.path(run.cfg.paths.local),
    )
    return headline_metrics(metrics)


@exit_when_unreachable
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Evaluate the current features and index (once).")
    parser.add_argument("--params", default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--data", default=None)
    args = parser.parse_args(argv)
    print(evaluate_production(params=args.params, overrides=args.overrides, data=args.data))


if __name__ == "__main__":
    main()
