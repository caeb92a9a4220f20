"""Stage ``eval-revisitop``: the direct evaluation of a Revisited Oxford/Paris-format benchmark.

``root/name`` holds ``gnd_<name>.pkl`` and ``jpg/``; the configured model describes its database images and its
queries cropped to their bbx (the ``extract`` stage, resumable), retrieval runs with the configured re-ranking
(optionally spatial verification over local features), and ``out_dir`` receives ``ranks.npy`` and
``metrics.json`` (easy/medium/hard mAP and mP@k in percent). The golden sets of the promotion gate are scored
with it (:mod:`landmark.stages.golden`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from landmark.cleaning.verify import StoreVerifier
from landmark.config import Config, RerankConfig, resolve_device
from landmark.data.atomic import write_json
from landmark.data.groundtruth import QueryTruth
from landmark.data.revisitop import gnd_path, image_uri, read_gnd
from landmark.features.local_extract import LocalItem, extract_local_to_store
from landmark.features.store import load_features
from landmark.retrieval.metrics import gnd_indices, revisitop_metrics
from landmark.retrieval.rerank import (
    RetrievalResult,
    Verifier,
    applied_steps,
    rerank_for_steps,
    run_retrieval,
)

# the benchmark's descriptors are the extract stage's output (same stores, same resume), so it runs that stage
from landmark.stages.extract import extract


def revisitop_local_verifier(
    cfg: Config,
    dataset_dir: Path,
    db_names: Sequence[str],
    truths: Sequence[QueryTruth],
    db_store: Path,
    query_store: Path,
    *,
    progress: bool = True,
) -> tuple[Verifier, dict[str, Any]]:
    """Local features (``cfg.local``) of a Revisited-format benchmark's database images and of its queries cropped
    to their bbx, each extracted into its store unless already there (keyed by image id), and a spatial verifier
    over them (``cfg.verify``): queries come from ``query_store``, candidates from ``db_store``.

    Returns:
        The verifier and what was extracted (for metrics.json).
    """
    device = resolve_device(cfg.device)
    runs = {
        name: extract_local_to_store(
            items, store, cfg.local, device=device, desc=f"local {name}", progress=progress
        )
        for name, items, store in (
            ("database", [LocalItem(i, dataset_dir / image_uri(i)) for i in db_names], db_store),
            (
                "queries",
                [LocalItem(t.query_id, dataset_dir / image_uri(t.query_id), t.bbox) for t in truths],
                query_store,
            ),
        )
    }
    report = {
        "backend": cfg.local.backend,
        "image_size": cfg.local.image_size,
        "max_features": cfg.local.max_features,
        "stores": {"database": str(db_store), "queries": str(query_store)},
        "extracted": {name: run.extracted for name, run in runs.items()},
    }
    return StoreVerifier([db_store], cfg.verify, query_store=query_store), report


def eval_revisitop(
    cfg: Config,
    root: Path,
    name: str,
    out_dir: Path,
    *,
    model: Path | None = None,
    rerank_steps: Sequence[str] | None = None,
    spatial: bool = False,
    local_cache: Path | None = None,
    features_cache: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate retrieval on ``root/name`` (``gnd_<name>.pkl`` + ``jpg/``) with the configured model.

    Queries are cropped to their bbx; descriptors are cached (resumably) under ``out_dir/features``. Writes
    ``out_dir/ranks.npy`` (int64, (n_database, n_queries), column q = database indices best first, 0-based)
    and ``out_dir/metrics.json`` (easy/medium/hard mAP and mP@k in percent).

    Args:
        cfg: the config (``model``, ``extract``, ``rerank``, ``index``, ``evaluate``; with ``spatial`` also
            ``local`` and ``verify``).
        root: directory holding ``<name>/``.
        name: dataset name, e.g. "roxford5k".
        out_dir: output directory.
        model: a trained model directory (``landmark train``), or a checkpoint file used as
            ``model.pretrained`` (timm backbone weights); None = the off-the-shelf pretrained backbone + GeM.
        rerank_steps: re-ranking steps (see :func:`rerank_for_steps`); None = the config's (DBA/QE only).
        spatial: after them, re-rank the top ``rerank.spatial_top`` by spatial-verification inliers (the same
            step as :func:`evaluate`), with local features (``local.backend``) of the database images and of the
            cropped queries.
        local_cache: local feature root for the database images (``<local_cache>/index``, keyed by image id, so
            benchmarks over the same images share it); default ``out_dir/local``. Cropped queries always go to
            ``out_dir/local/queries``.
        features_cache: global descriptor root for the database images (``<features_cache>/index``, keyed by
            image id; one model per root); default ``out_dir/features``. Cropped queries always go to
            ``out_dir/features/test``.
        progress: show extraction progress.

    Returns:
        The metrics written.
    """
    cfg, model_dir = _with_model(cfg, model)
    rerank = rerank_for_steps(cfg.rerank, rerank_steps)  # bad steps fail before any extraction
    rerank = replace(rerank, spatial=spatial)
    db_names, query_names, truths = _read_benchmark(root, name)
    dataset_dir = Path(root) / name
    out_dir = Path(out_dir)
    db_features = Path(features_cache) if features_cache is not None else out_dir / "features"
    db, queries = _descriptors(
        cfg,
        dataset_dir,
        model_dir,
        db_features,
        out_dir / "features",
        db_names,
        query_names,
        progress=progress,
    )
    verifier, spatial_report = None, None
    if spatial:
        db_local = (Path(local_cache) if local_cache is not None else out_dir / "local") / "index"
        verifier, spatial_report = revisitop_local_verifier(
            cfg, dataset_dir, db_names, truths, db_local, out_dir / "local" / "queries", progress=progress
        )
    result = run_retrieval(
        queries,
        db,
        rerank,
        top=min(cfg.evaluate.topk, len(db_names)),
        index_cfg=cfg.index,
        seed=cfg.seed,
        verifier=verifier,
        query_ids=query_names,
        db_ids=db_names,
    )
    ranks = result.full_ranking().T.astype(np.int64)
    metrics: dict[str, Any] = {
        "dataset": name,
        "revisitop": revisitop_metrics(ranks, gnd_indices(truths, db_names), cfg.evaluate.kappas),
        "n_database": len(db_names),
        "n_queries": len(query_names),
        "model": _model_record(cfg, model_dir),
        "rerank": _rerank_record(rerank, result, spatial_report),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    np.save(out_dir / "ranks.npy", ranks)
    write_json(out_dir / "metrics.json", metrics)
    return metrics


def _with_model(cfg: Config, model: Path | None) -> tuple[Config, Path | None]:
    """The config and model directory ``--model`` asks for: a model directory is used as it is, a checkpoint file
    becomes ``model.pretrained``, None keeps the off-the-shelf backbone."""
    if model is None:
        return cfg, None
    if Path(model).is_dir():
        return cfg, Path(model)
    if Path(model).is_file():
        return replace(cfg, model=replace(cfg.model, pretrained=str(model))), None
    raise FileNotFoundError(f"--model {model}: neither a model directory nor a checkpoint file")


def _read_benchmark(root: Path, name: str) -> tuple[tuple[str, ...], tuple[str, ...], tuple[QueryTruth, ...]]:
    """(database names, query names, query truths) of ``root/name``'s ``gnd_<name>.pkl``."""
    path = gnd_path(root, name)
    if not path.is_file():
        raise FileNotFoundError(f"no revisitop ground truth at {path}")
    return read_gnd(path)


def _rerank_record(
    rerank: RerankConfig, result: RetrievalResult, spatial_report: dict[str, Any] | None
) -> dict[str, Any]:
    """What ran for metrics.json: the steps, their seconds and, with spatial verification, its local features."""
    record: dict[str, Any] = {
        "steps": applied_steps(rerank),
        "seconds": {k: round(v, 4) for k, v in result.seconds.items()},
    }
    if spatial_report is not None:
        record["spatial"] = {**spatial_report, "top": rerank.spatial_top}
    return record


def _model_record(cfg: Config, model_dir: Path | None) -> dict[str, Any]:
    if model_dir:
        return {"dir": str(model_dir)}
    return {"backbone": cfg.model.backbone, "pretrained": cfg.model.pretrained}


def _descriptors(
    cfg: Config,
    dataset_dir: Path,
    model_dir: Path | None,
    db_features: Path,
    query_features: Path,
    db_names: Sequence[str],
    query_names: Sequence[str],
    *,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """(database (n_database, d), queries (n_queries, d)) descriptors in the gnd's order, extracted into
    ``db_features/index`` and ``query_features/test`` unless already there."""
    for split, store_root in (("index", db_features), ("test", query_features)):
        extract(
            cfg,
            dataset_dir,
            store_root,
            splits=(split,),
            fmt="revisitop",
            model_dir=model_dir,
            progress=progress,
        )
    _, db = load_features(db_features / "index", db_names)
    _, queries = load_features(query_features / "test", query_names)
    return db, queries
