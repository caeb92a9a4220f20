"""Retrieval quality on a Revisited Oxford/Paris-format benchmark: descriptors, re-ranking, mAP.

``root/name`` holds ``gnd_<name>.pkl`` and ``jpg/``; the configured model describes its database images and its
queries cropped to their bbx (into feature stores, resumable), retrieval runs with the configured re-ranking
(optionally spatial verification with a verifier the caller sets up), and ``out_dir`` receives ``ranks.npy`` and
``metrics.json`` (easy/medium/hard mAP and mP@k in percent). The ``eval-revisitop`` stage runs it, and so does
the ``golden`` stage for the promotion gate's golden sets.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from landmark.config import Config, RerankConfig
from landmark.data.atomic import write_json
from landmark.data.groundtruth import QueryTruth
from landmark.data.images import bbox_pixels, read_image_size
from landmark.data.revisitop import gnd_path, image_uri, read_gnd
from landmark.features.global_extract import extract_dataset
from landmark.features.store import load_features
from landmark.retrieval.metrics import gnd_indices, revisitop_metrics
from landmark.retrieval.rerank import (
    RetrievalResult,
    Verifier,
    applied_steps,
    rerank_for_steps,
    run_retrieval,
)


@dataclass(frozen=True)
class RevisitopBenchmark:
    """One Revisited-format benchmark: where its images are and its ground truth, in the gnd's order."""

    name: str
    dataset_dir: Path  # root/name: gnd_<name>.pkl and jpg/
    db_names: tuple[str, ...]
    query_names: tuple[str, ...]
    truths: tuple[QueryTruth, ...]

    @functools.cached_property
    def whole_image_positions(self) -> np.ndarray | None:
        """:func:`whole_image_queries` of this benchmark, read once (it opens every query's image header)."""
        return whole_image_queries(self.dataset_dir, self.db_names, self.truths)


# sets up spatial verification for a benchmark: the verifier and what was extracted for it (for metrics.json)
SpatialSetup = Callable[[RevisitopBenchmark], tuple[Verifier, dict[str, Any]]]


def read_benchmark(root: Path, name: str) -> RevisitopBenchmark:
    """The benchmark at ``root/name`` (its ``gnd_<name>.pkl``).

    Raises:
        FileNotFoundError: no ground truth file.
    """
    path = gnd_path(root, name)
    if not path.is_file():
        raise FileNotFoundError(f"no revisitop ground truth at {path}")
    db_names, query_names, truths = read_gnd(path)
    return RevisitopBenchmark(name, Path(root) / name, db_names, query_names, truths)


def evaluate_revisitop(
    cfg: Config,
    root: Path,
    name: str,
    out_dir: Path,
    *,
    model: Path | None = None,
    rerank_steps: Sequence[str] | None = None,
    spatial: SpatialSetup | None = None,
    features_cache: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate retrieval on ``root/name`` (``gnd_<name>.pkl`` + ``jpg/``) with the configured model.

    Queries are cropped to their bbx; their descriptors are extracted (resumably) into ``out_dir/features/test``.
    Writes ``out_dir/ranks.npy`` (int64, (n_database, n_queries), column q = database indices best first,
    0-based) and ``out_dir/metrics.json`` (easy/medium/hard mAP and mP@k in percent).

    Args:
        cfg: the config (``model``, ``extract``, ``rerank``, ``index``, ``evaluate``).
        root: directory holding ``<name>/``.
        name: dataset name, e.g. "roxford5k".
        out_dir: output directory.
        model: a trained model directory (``landmark train``), or a checkpoint file used as
            ``model.pretrained`` (timm backbone weights); None = the off-the-shelf pretrained backbone + GeM.
        rerank_steps: re-ranking steps (see :func:`rerank_for_steps`); None = the config's (DBA/QE only).
        spatial: after them, re-rank the top ``rerank.spatial_top`` by the inliers of the verifier this sets up
            (after the global descriptors are extracted); None = no spatial verification.
        features_cache: global descriptor root for the database images (``<features_cache>/index``, keyed by
            image id; one model per root); default ``out_dir/features``.
        progress: show extraction progress.

    Returns:
        The metrics written.
    """
    cfg, model_dir = with_model(cfg, model)
    rerank = rerank_for_steps(cfg.rerank, rerank_steps)  # bad steps fail before any extraction
    rerank = replace(rerank, spatial=spatial is not None)
    benchmark = read_benchmark(root, name)
    out_dir = Path(out_dir)
    db_features = Path(features_cache) if features_cache is not None else out_dir / "features"
    db, queries = benchmark_descriptors(
        cfg, benchmark, model_dir, db_features, out_dir / "features", progress=progress
    )
    verifier, spatial_report = spatial(benchmark) if spatial is not None else (None, None)
    result = run_retrieval(
        queries,
        db,
        rerank,
        top=min(cfg.evaluate.topk, len(benchmark.db_names)),
        index_cfg=cfg.index,
        seed=cfg.seed,
        verifier=verifier,
        query_ids=benchmark.query_names,
        db_ids=benchmark.db_names,
    )
    ranks = result.full_ranking().T.astype(np.int64)
    metrics: dict[str, Any] = {
        "dataset": name,
        "revisitop": revisitop_metrics(
            ranks, gnd_indices(benchmark.truths, benchmark.db_names), cfg.evaluate.kappas
        ),
        "n_database": len(benchmark.db_names),
        "n_queries": len(benchmark.query_names),
        "model": _model_record(cfg, model_dir),
        "rerank": _rerank_record(rerank, result, spatial_report),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    np.save(out_dir / "ranks.npy", ranks)
    write_json(out_dir / "metrics.json", metrics)
    return metrics


def with_model(cfg: Config, model: Path | None) -> tuple[Config, Path | None]:
    """The config and model directory ``--model`` asks for: a model directory is used as it is, a checkpoint file
    becomes ``model.pretrained``, None keeps the off-the-shelf backbone."""
    if model is None:
        return cfg, None
    if Path(model).is_dir():
        return cfg, Path(model)
    if Path(model).is_file():
        return replace(cfg, model=replace(cfg.model, pretrained=str(model))), None
    raise FileNotFoundError(f"--model {model}: neither a model directory nor a checkpoint file")


def benchmark_descriptors(
    cfg: Config,
    benchmark: RevisitopBenchmark,
    model_dir: Path | None,
    db_features: Path,
    query_features: Path,
    *,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """(database (n_database, d), queries (n_queries, d)) descriptors in the gnd's order, extracted into
    ``db_features/index`` and ``query_features/test`` unless already there. When every query is a database photo
    described whole (:func:`whole_image_queries`, e.g. a leave-one-out set), its database descriptor is its query
    descriptor and nothing is extracted for the queries."""
    same = benchmark.whole_image_positions
    splits = (
        (("index", db_features),) if same is not None else (("index", db_features), ("test", query_features))
    )
    for split, store_root in splits:
        extract_dataset(
            cfg,
            benchmark.dataset_dir,
            store_root,
            splits=(split,),
            fmt="revisitop",
            model_dir=model_dir,
            progress=progress,
        )
    _, db = load_features(db_features / "index", benchmark.db_names)
    if same is not None:
        return db, db[same]
    _, queries = load_features(query_features / "test", benchmark.query_names)
    return db, queries


def whole_image_queries(
    dataset_dir: Path, db_names: Sequence[str], truths: Sequence[QueryTruth]
) -> np.ndarray | None:
    """Database positions of the queries when every query is a database photo whose bbx (if any) covers the
    whole image, so the crop is the photo itself; None otherwise (then the queries are extracted)."""
    position = {name: i for i, name in enumerate(db_names)}
    for truth in truths:
        if truth.query_id not in position:
            return None
        if truth.bbox is not None:
            width, height = read_image_size(Path(dataset_dir) / image_uri(truth.query_id))
            if bbox_pixels(truth.bbox, width, height) != (0, 0, width, height):
                return None
    return np.array([position[t.query_id] for t in truths], dtype=np.int64)


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
