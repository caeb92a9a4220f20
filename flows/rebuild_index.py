"""Rebuild the search index with the production model: fetch it, extract descriptors of the index split (and the
test/train splits evaluation needs), build the FAISS index, evaluate. Run after new index images arrive, or
``python -m flows.rebuild_index``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefect import flow

from flows.common import exit_when_unreachable, open_run, publish_markdown, task_runner, version_and_push
from flows.tasks import (
    build_search_index,
    evaluate_model,
    extract_features,
    extract_features_per_shard,
    fetch_production,
    headline_metrics,
    local_features,
    local_features_per_shard,
)


@flow(name="rebuild-index", log_prints=True)
def rebuild_index(
    project_dir: str | None = None,
    params: str | None = None,
    overrides: list[str] | None = None,
    data: str | None = None,
    version: bool = True,
) -> dict[str, Any]:
    """Descriptors with the production model (pretrained backbone when none) -> FAISS index -> evaluation."""
    run = open_run(project_dir, params, overrides or [])
    data_dir = run.path(data or run.cfg.paths.catalog)
    production = fetch_production(run)
    model = Path(production["model_dir"]) if production else None
    features, index_dir, eval_dir = (
        run.path(p) for p in (run.cfg.paths.features, run.cfg.paths.index, run.cfg.paths.eval)
    )
    local_dir = run.path(run.cfg.paths.local)  # local features of new index images, for spatial re-ranking
    if run.cfg.flows.dask_address:  # one task per shard, spread over the cluster by the Dask task runner
        extract_features_per_shard(run, data_dir, features, model)
        local_features_per_shard(run, data_dir, local_dir)
    else:
        extract_features(run, data_dir, features, model)
        local_features(run, data_dir, local_dir)
    meta = build_search_index(run, data_dir, features, index_dir)
    metrics = evaluate_model(run, data_dir, features, eval_dir, index_dir, "production", local_dir)
    if version:
        version_and_push(run, ["index"])
    publish_markdown(
        "index-summary",
        f"# Index rebuilt with {production['version'] if production else 'the pretrained backbone'}\n\n"
        f"{meta.get('count', meta.get('ntotal', '?'))} vectors, kind {meta.get('kind', '?')}",
        "Index rebuild",
    )
    return {"production": production, "index": meta, "metrics": headline_metrics(metrics)}


@exit_when_unreachable
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Rebuild the index with the production model (once).")
    parser.add_argument("--params", default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--data", default=None)
    parser.add_argument("--no-version", action="store_true")
    args = parser.parse_args(argv)
    runner = task_runner(open_run(None, args.params, args.overrides).cfg)
    flow_fn = rebuild_index.with_options(task_runner=runner) if runner is not None else rebuild_index
    print(flow_fn(params=args.params, overrides=args.overrides, data=args.data, version=not args.no_version))


if __name__ == "__main__":
    main()
