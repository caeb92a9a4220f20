"""Stage ``evaluate``: retrieval (+ re-ranking) and recognition on the test split, scored and plotted.

Outputs under ``out_dir``:

- ``metrics.json``: ``revisitop`` (easy/medium/hard mAP and mP@k in percent, when the dataset has revisited
  ground truth), ``gldv2_retrieval`` (mAP@100 in percent, when it has a retrieval solution), ``recognition``
  (GAP, top-1, the "no landmark" threshold and the operating point it gives, when it has a recognition
  solution and train features), plus what ran (``rerank``, ``index``) and sizes;
- ``ranks.npy``: (n_database, n_queries) revisitop ranking (column q = database indices best first);
- ``plots/pr_<protocol>.csv`` (recall, precision) for ``dvc plots``, ``plots/precision_recall.png`` and
  ``plots/results_grid.png`` (queries with their top results, green = correct, red = wrong, grey = junk).

The direct evaluation of a Revisited Oxford/Paris-format benchmark is the stage
:mod:`landmark.stages.eval_revisitop`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from landmark.cleaning.verify import StoreVerifier
from landmark.config import Config, RerankConfig
from landmark.data.atomic import write_json
from landmark.data.bad_images import skipped_note, usable_ids
from landmark.data.datasets import open_dataset
from landmark.data.groundtruth import LandmarkDataset, QueryTruth
from landmark.data.images import crop_to_bbox, decode_image
from landmark.errors import InputError
from landmark.features.store import load_features, read_meta
from landmark.retrieval.index import ShardedIndex, check_compatible, load_index
from landmark.retrieval.metrics import gldv2_retrieval_metrics, gnd_indices, revisitop_metrics
from landmark.retrieval.plots import GridRow, plot_result_grid, result_verdicts, write_pr_plots
from landmark.retrieval.recognize import LabelledSet, knn_recognition, recognition_metrics
from landmark.retrieval.rerank import (
    RetrievalResult,
    Verifier,
    applied_steps,
    label_steps_enabled,
    run_retrieval,
    without_label_steps,
)
from landmark.stages.common import load_train_set

logger = logging.getLogger(__name__)

PLOTS_DIR = "plots"


# ---------------------------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class EvaluationInputs:
    """What the stage reads: the dataset, the usable index and test descriptors and the labelled train set.

    Attributes:
        dataset: the opened dataset (its ground truth is scored against).
        db_ids / db: the index split's ids and (n_database, d) descriptors.
        test_ids / queries: the test split's ids and (n_test, d) descriptors.
        train: the labelled train descriptors, or None (then ``train_note`` says why).
        skipped: split -> ok images left out because extraction could not decode them.
    """

    dataset: LandmarkDataset
    db_ids: list[str]
    db: np.ndarray
    test_ids: list[str]
    queries: np.ndarray
    train: LabelledSet | None
    train_note: str
    skipped: dict[str, list[str]]


def _load_inputs(cfg: Config, data_dir: Path, features_dir: Path, fmt: str) -> EvaluationInputs:
    """Open the dataset and read its usable descriptors (see :class:`EvaluationInputs`).

    Raises:
        ValueError: the dataset has no ground truth.
    """
    dataset = open_dataset(cfg, Path(data_dir), fmt)
    if not (dataset.retrieval or dataset.retrieval_solution or dataset.recognition_solution):
        raise InputError(f"{data_dir} has no ground truth (gnd_*.pkl or solution CSVs): nothing to evaluate")
    db_ids, db = load_features(Path(features_dir) / "index", usable_ids(dataset, "index", features_dir)[0])
    test_ids, queries = load_features(
        Path(features_dir) / "test", usable_ids(dataset, "test", features_dir)[0]
    )
    train, train_note = load_train_set(dataset, features_dir)
    return EvaluationInputs(
        dataset, db_ids, db, test_ids, queries, train, train_note, _skipped_images(dataset, features_dir)
    )


def _skipped_images(dataset: LandmarkDataset, features_dir: Path) -> dict[str, list[str]]:
    """Split -> ok images left out of the evaluation because extraction could not decode them."""
    splits = [s for s in ("index", "test", "train") if s in dataset.splits]
    return {split: usable_ids(dataset, split, features_dir)[1] for split in splits}


def open_saved_index(
    index_dir: Path | None, db_ids: Sequence[str], features_dir: Path, gpu: str
) -> ShardedIndex | None:
    """The saved index when given, after checking it holds exactly these ids from the same model."""
    if index_dir is None:
        return None
    index = load_index(index_dir, gpu=gpu)
    if list(index.ids) != list(db_ids):
        raise InputError(f"the index at {index_dir} holds other images than the index split; rebuild it")
    check_compatible(index.meta, read_meta(Path(features_dir) / "index"))
    return index


def local_verifier(cfg: Config, local_dir: Path | None) -> tuple[Verifier | None, str]:
    """The spatial verifier ``rerank.spatial`` / ``recognize.inliers`` ask for, over the local feature stores
    ``local_dir/<split>`` (test queries, index candidates, train neighbours), and why there is none: neither is
    switched on, or a store they need is missing (then both are skipped, as the label steps are without train
    descriptors, and metrics.json says so)."""
    if not (cfg.rerank.spatial or cfg.recognize.inliers):
        return None, ""
    needed = (
        ["test"] + (["index"] if cfg.rerank.spatial else []) + (["train"] if cfg.recognize.inliers else [])
    )
    missing = [split for split in needed if local_dir is None or not (Path(local_dir) / split).is_dir()]
    if missing:
        return None, (
            f"no local features for {', '.join(missing)} in {local_dir} (run `landmark local --split SPLIT` for "
            "each)"
        )
    return StoreVerifier([Path(local_dir) / split for split in needed], cfg.verify), ""  # type: ignore[arg-type]


def _applicable_steps(
    cfg: Config, inputs: EvaluationInputs, verifier_note: str
) -> tuple[Config, RerankConfig, list[str]]:
    """The config with the steps its inputs cannot run switched off (label steps without train descriptors,
    spatial verification without local features), the re-ranking config that runs, and notes saying what was
    left out and why (also logged)."""
    rerank_cfg = cfg.rerank
    notes: list[str] = []
    skipped = skipped_note(inputs.skipped)
    if skipped:
        notes.append(skipped)
        logger.warning("evaluate: %s", skipped)
    if inputs.train is None and label_steps_enabled(rerank_cfg):
        rerank_cfg = without_label_steps(rerank_cfg)
        notes.append(f"sort/insert steps skipped: {inputs.train_note}")
        logger.warning("evaluate: sort/insert steps skipped: %s", inputs.train_note)
    if verifier_note:
        rerank_cfg = replace(rerank_cfg, spatial=False)
        cfg = replace(cfg, recognize=replace(cfg.recognize, inliers=False))
        notes.append(f"spatial verification skipped: {verifier_note}")
        logger.warning("evaluate: spatial verification skipped: %s", verifier_note)
    return cfg, rerank_cfg, notes


# ---------------------------------------------------------------------------------------------------------------
# The stage


def evaluate(
    cfg: Config,
    data_dir: Path,
    features_dir: Path,
    out_dir: Path,
    *,
    index_dir: Path | None = None,
    fmt: str = "auto",
    verifier: Verifier | None = None,
    local_dir: Path | None = None,
    plots: bool = True,
) -> dict[str, Any]:
    """Retrieve and recognise the test images, score them against the dataset's ground truth, write outputs.

    Needs features of the index and test splits; train features enable the label-based re-ranking steps and
    recognition (without them those are skipped and ``metrics.json`` says why).

    Args:
        cfg: the config (``evaluate``, ``rerank``, ``recognize``, ``index``, ``seed``).
        data_dir: dataset root.
        features_dir: feature store root with ``index/``, ``test/`` and optionally ``train/``.
        out_dir: where metrics.json, ranks.npy and plots/ go.
        index_dir: a saved index of the index split (``landmark index``); it answers DBA's neighbour search, or
            the query search while DBA is off (the DBA-augmented vectors are searched in memory); default: an
            in-memory index of the kind ``cfg.index`` selects.
        fmt: dataset format or "auto".
        verifier: spatial verifier for ``rerank.spatial`` / ``recognize.inliers``; default: one over the local
            feature stores ``local_dir/<split>`` (``landmark local``) when either is switched on.
        local_dir: local feature root (see ``verifier``).
        plots: write the plots.

    Returns:
        The metrics written to metrics.json.
    """
    verifier_note = ""
    if verifier is None:
        verifier, verifier_note = local_verifier(cfg, local_dir)
    inputs = _load_inputs(cfg, data_dir, features_dir, fmt)
    cfg, rerank_cfg, notes = _applicable_steps(cfg, inputs, verifier_note)
    first_stage = open_saved_index(index_dir, inputs.db_ids, features_dir, cfg.index.gpu)
    result = run_retrieval(
        inputs.queries,
        inputs.db,
        rerank_cfg,
        top=cfg.evaluate.topk,
        index_cfg=cfg.index,
        seed=cfg.seed,
        train=inputs.train,
        verifier=verifier,
        query_ids=inputs.test_ids,
        db_ids=inputs.db_ids,
        first_stage=first_stage,
    )
    metrics: dict[str, Any] = {
        "n_database": len(inputs.db_ids),
        "n_test": len(inputs.test_ids),
        "undecodable_left_out": {split: len(ids) for split, ids in inputs.skipped.items()},
        "rerank": {
            "steps": applied_steps(rerank_cfg),
            "notes": notes,
            "seconds": {k: round(v, 4) for k, v in result.seconds.items()},
        },
        "index": {
            "saved": str(index_dir) if first_stage is not None else None,
            "query_search": "saved" if first_stage is not None and not rerank_cfg.dba else "in-memory",
        },
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics.update(_retrieval_scores(cfg, inputs, result, out_dir, plots=plots))
    metrics["recognition"] = _recognition(cfg, inputs, verifier)
    if plots and cfg.evaluate.grid_queries > 0:
        _write_grid(cfg, inputs, result, out_dir / PLOTS_DIR / "results_grid.png")
    write_json(out_dir / "metrics.json", metrics)
    return metrics


def _scored_truths(inputs: EvaluationInputs) -> list[QueryTruth]:
    """The revisited truths of the test queries that have a descriptor (a query extraction skipped as
    undecodable is left out; it is counted in undecodable_left_out)."""
    described = set(inputs.test_ids)
    return [t for t in inputs.dataset.retrieval if t.query_id in described]


def _retrieval_scores(
    cfg: Config, inputs: EvaluationInputs, result: RetrievalResult, out_dir: Path, *, plots: bool
) -> dict[str, Any]:
    """``revisitop`` (also writing ranks.npy and the PR plots) and ``gldv2_retrieval`` scores, as the dataset's
    ground truth allows, with ``n_queries``."""
    scores: dict[str, Any] = {}
    position = {q: i for i, q in enumerate(inputs.test_ids)}
    truths = _scored_truths(inputs)
    if truths:
        rows = [position[t.query_id] for t in truths]
        full = _full_ranking(result, rows)
        gnd = gnd_indices(truths, inputs.db_ids)
        ranks = full.T.copy()
        scores["revisitop"] = revisitop_metrics(ranks, gnd, cfg.evaluate.kappas)
        scores["n_queries"] = len(rows)
        np.save(out_dir / "ranks.npy", ranks)
        if plots:
            write_pr_plots(ranks, gnd, out_dir / PLOTS_DIR)
    if inputs.dataset.retrieval_solution:
        scores["gldv2_retrieval"] = gldv2_retrieval_metrics(
            result.ranked,
            inputs.test_ids,
            inputs.db_ids,
            inputs.dataset.retrieval_solution,
            cfg.evaluate.topk,
        )
        scores.setdefault("n_queries", scores["gldv2_retrieval"]["queries"])
    return scores


def _full_ranking(result: RetrievalResult, rows: Sequence[int]) -> np.ndarray:
    subset = RetrievalResult(result.ranked[rows], result.query_vectors[rows], result.db_vectors)
    return subset.full_ranking()


def _recognition(cfg: Config, inputs: EvaluationInputs, verifier: Verifier | None) -> dict[str, Any]:
    solution = inputs.dataset.recognition_solution
    if not solution:
        return {"skipped": "the dataset has no recognition solution"}
    if inputs.train is None:
        return {"skipped": inputs.train_note}
    prediction = knn_recognition(
        inputs.queries,
        inputs.train,
        cfg.recognize,
        cfg.index,
        seed=cfg.seed,
        verifier=verifier,
        query_ids=inputs.test_ids,
    )
    return recognition_metrics(
        prediction,
        inputs.test_ids,
        solution,
        target_fpr=cfg.recognize.target_fpr,
        calibration_fraction=cfg.recognize.calibration_fraction,
        seed=cfg.seed,
    )


# ---------------------------------------------------------------------------------------------------------------
# Result grid


def _write_grid(cfg: Config, inputs: EvaluationInputs, result: RetrievalResult, path: Path) -> None:
    """The result grid of the queries with revisited truth, else of those with relevant retrieval images."""
    dataset = inputs.dataset
    grid_ids = [t.query_id for t in _scored_truths(inputs)] or [
        q for q in inputs.test_ids if dataset.retrieval_solution.get(q)
    ]
    if not grid_ids:
        return
    position = {q: i for i, q in enumerate(inputs.test_ids)}
    _write_result_grid(
        dataset,
        grid_ids,
        result.ranked[[position[q] for q in grid_ids]],
        inputs.db_ids,
        path,
        n_queries=cfg.evaluate.grid_queries,
        n_results=cfg.evaluate.grid_results,
    )


def _write_result_grid(
    dataset: LandmarkDataset,
    query_ids: Sequence[str],
    ranked: np.ndarray,
    db_ids: Sequence[str],
    path: Path,
    *,
    n_queries: int,
    n_results: int,
) -> None:
    """PNG grid of ``n_queries`` evenly spread queries with their top ``n_results`` (decoded from disk)."""
    truths = {t.query_id: t for t in dataset.retrieval}
    boxes = {t.query_id: t.bbox for t in dataset.retrieval}
    picks = np.unique(np.linspace(0, len(query_ids) - 1, min(n_queries, len(query_ids))).round().astype(int))
    rows = []
    for q in picks:
        query_id = query_ids[q]
        image = decode_image(dataset.image_path("test", query_id))
        box = boxes.get(query_id)
        if box is not None:
            image = crop_to_bbox(image, box)
        result_ids = [db_ids[i] for i in ranked[q, :n_results] if i >= 0]
        verdicts = result_verdicts(
            truths.get(query_id), dataset.retrieval_solution.get(query_id, ()), result_ids
        )
        results = [
            (decode_image(dataset.image_path("index", i)), v)
            for i, v in zip(result_ids, verdicts, strict=True)
        ]
        rows.append(GridRow(image, results, title=query_id[:12]))
    plot_result_grid(rows, path)
