"""Stage ``evaluate``: retrieval (+ re-ranking) and recognition on the test split, scored and plotted.

Outputs under ``out_dir``:

- ``metrics.json``: ``revisitop`` (easy/medium/hard mAP and mP@k in percent, when the dataset has revisited
  ground truth), ``gldv2_retrieval`` (mAP@100 in percent, when it has a retrieval solution), ``recognition``
  (GAP, top-1, the "no landmark" threshold and the operating point it gives, when it has a recognition
  solution and train features), plus what ran (``rerank``, ``index``) and sizes;
- ``ranks.npy``: (n_database, n_queries) revisitop ranking (column q = database indices best first);
- ``plots/pr_<protocol>.csv`` (recall, precision) for ``dvc plots``, ``plots/precision_recall.png`` and
  ``plots/results_grid.png`` (queries with their top results, green = correct, red = wrong, grey = junk).

Also :func:`eval_revisitop`, the direct evaluation of any Revisited Oxford/Paris-format benchmark.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from landmark.config import Config
from landmark.data.atomic import atomic_path
from landmark.data.bad_images import skipped_note, usable_ids
from landmark.data.groundtruth import LandmarkDataset, QueryTruth
from landmark.errors import InputError
from landmark.retrieval.recognize import LabelledSet, LabelPrediction
from landmark.retrieval.rerank import applied_steps, rerank_for_steps

if TYPE_CHECKING:  # faiss, matplotlib and cv2 load only when a stage runs
    from landmark.retrieval.index import ShardedIndex
    from landmark.retrieval.plots import Verdict
    from landmark.retrieval.rerank import RetrievalResult, Verifier

logger = logging.getLogger(__name__)

PLOTS_DIR = "plots"
RECALL_LEVELS = np.round(np.linspace(0.0, 1.0, 21), 4)


def retrieval_ranks(db: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Full ranking of the database for each query: (n_database, n_queries), best first (revisitop layout)."""
    from landmark.retrieval.index import build_exact_index, search

    _, idx = search(build_exact_index(db), queries, k=db.shape[0])
    return idx.T.copy()


def gnd_indices(truths: Sequence[QueryTruth], db_ids: Sequence[str]) -> list[dict[str, list[int]]]:
    """Convert id-based query truths into the index-based ``gnd`` lists of the revisitop protocol."""
    position = {image_id: i for i, image_id in enumerate(db_ids)}

    def indices(ids: Sequence[str]) -> list[int]:
        return [position[i] for i in ids if i in position]

    return [{"easy": indices(t.easy), "hard": indices(t.hard), "junk": indices(t.junk)} for t in truths]


def revisitop_metrics(
    ranks: np.ndarray, gnd: Sequence[dict[str, list[int]]], kappas: Sequence[int]
) -> dict[str, Any]:
    """Revisited-protocol metrics as a JSON-ready dict, mAP and mP@k in percent."""
    from landmark.retrieval.metrics import revisitop_map

    results = revisitop_map(ranks, gnd, kappas)
    return {
        protocol: {
            "mAP": round(100.0 * r.map, 3),
            **{f"mP@{k}": round(100.0 * v, 3) for k, v in r.mp_at_k.items()},
            "queries": r.queries,
        }
        for protocol, r in results.items()
    }


def gldv2_retrieval_metrics(
    ranked: np.ndarray,
    query_ids: Sequence[str],
    db_ids: Sequence[str],
    solution: Mapping[str, Sequence[str]],
    k: int,
) -> dict[str, Any]:
    """GLDv2 mAP@k (percent) of ranked lists (n_queries, t) of database positions against a retrieval solution."""
    from landmark.retrieval.metrics import gldv2_retrieval_map

    predictions = {q: [db_ids[i] for i in row if i >= 0] for q, row in zip(query_ids, ranked, strict=True)}
    result = gldv2_retrieval_map(predictions, solution, k)
    return {
        f"mAP@{k}": round(100.0 * result.value, 3),
        "queries": result.queries,
        "excluded_no_relevant": result.excluded,
    }


def recognition_metrics(
    prediction: LabelPrediction,
    query_ids: Sequence[str],
    solution: Mapping[str, Sequence[int]],
    *,
    target_fpr: float,
    calibration_fraction: float,
    seed: int,
) -> dict[str, Any]:
    """GAP and top-1 over the whole solution, and the "no landmark" operating point.

    The threshold is chosen on a seeded calibration share of the solution's images (its non-landmark images,
    for ``target_fpr``) and the operating point (FPR on non-landmark images, precision and recall of accepted
    predictions, GAP after rejection) is measured on the remaining images.
    """
    from landmark.retrieval.metrics import Prediction, global_average_precision, top1_accuracy
    from landmark.retrieval.recognize import calibration_split, threshold_for_fpr

    predictions: dict[str, Prediction] = {
        q: (int(label), float(conf))
        for q, label, conf in zip(query_ids, prediction.labels, prediction.confidence, strict=True)
        if label >= 0 and q in solution
    }
    report: dict[str, Any] = {
        "GAP": round(100.0 * global_average_precision(predictions, solution), 3),
        "top1": round(100.0 * top1_accuracy(predictions, solution), 3),
        "queries": len(solution),
        "landmark_queries": sum(1 for v in solution.values() if v),
        "target_fpr": target_fpr,
    }
    calibration, held_out = calibration_split(list(solution), calibration_fraction, seed)
    non_landmark_conf = [predictions[q][1] for q in calibration if not solution[q] and q in predictions]
    if not non_landmark_conf:
        report["threshold"] = None
        report["threshold_note"] = "no non-landmark image with a prediction in the calibration share"
        return report
    threshold = threshold_for_fpr(non_landmark_conf, target_fpr)
    report["threshold"] = round(threshold, 6) if np.isfinite(threshold) else None
    report["calibration"] = {"queries": len(calibration), "non_landmark": len(non_landmark_conf)}
    report["at_threshold"] = operating_point(predictions, {q: solution[q] for q in held_out}, threshold)
    return report


def operating_point(
    predictions: Mapping[str, tuple[int, float]], solution: Mapping[str, Sequence[int]], threshold: float
) -> dict[str, Any]:
    """Metrics (percent) of the predictions accepted above ``threshold`` on ``solution``'s images."""
    from landmark.retrieval.metrics import global_average_precision

    accepted = {q: p for q, p in predictions.items() if q in solution and p[1] > threshold}
    landmark = [q for q, v in solution.items() if v]
    non_landmark = [q for q, v in solution.items() if not v]
    correct = sum(1 for q, (label, _) in accepted.items() if label in solution[q])
    point: dict[str, Any] = {
        "queries": len(solution),
        "accepted": len(accepted),
        "fpr_non_landmark": _percent(sum(q in accepted for q in non_landmark), len(non_landmark)),
        "precision": _percent(correct, len(accepted)),
        "recall": _percent(correct, len(landmark)),
    }
    if landmark:
        point["GAP"] = round(100.0 * global_average_precision(accepted, solution), 3)
    return point


def _percent(num: int, den: int) -> float | None:
    return round(100.0 * num / den, 3) if den else None


# ---------------------------------------------------------------------------------------------------------------
# Inputs


def load_train_set(dataset: LandmarkDataset, features_dir: Path) -> tuple[LabelledSet | None, str]:
    """The labelled train descriptors (images extraction skipped as undecodable left out), or None with the
    reason (no train split, or no train features)."""
    from landmark.features.store import load_features

    if "train" not in dataset.splits:
        return None, f"dataset {dataset.root} has no train split"
    store = Path(features_dir) / "train"
    if not store.is_dir():
        return None, f"no train features at {store} (run `landmark extract --split train`)"
    frame = dataset.manifest("train")
    described, _ = usable_ids(dataset, "train", features_dir)
    usable = frame[
        (frame["status"] == "ok") & (frame["landmark_id"] >= 0) & frame["image_id"].isin(described)
    ]
    ids, vectors = load_features(store, list(usable["image_id"].astype(str)))
    return LabelledSet(vectors, usable["landmark_id"].to_numpy(np.int64), tuple(ids)), ""


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
    from landmark.features.store import read_meta
    from landmark.retrieval.index import check_compatible, load_index

    index = load_index(index_dir, gpu=gpu)
    if list(index.ids) != list(db_ids):
        raise InputError(f"the index at {index_dir} holds other images than the index split; rebuild it")
    check_compatible(index.meta, read_meta(Path(features_dir) / "index"))
    return index


def _verdicts(truth: QueryTruth | None, relevant: Sequence[str], result_ids: Sequence[str]) -> list[Verdict]:
    if truth is not None:
        positives, junk = set(truth.positives), set(truth.junk)
        return ["correct" if i in positives else "junk" if i in junk else "wrong" for i in result_ids]
    rel = set(relevant)
    return ["correct" if i in rel else "wrong" for i in result_ids]


def write_result_grid(
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
    from landmark.data.images import crop_to_bbox, decode_image
    from landmark.retrieval.plots import GridRow, plot_result_grid

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
        verdicts = _verdicts(truths.get(query_id), dataset.retrieval_solution.get(query_id, ()), result_ids)
        results = [
            (decode_image(dataset.image_path("index", i)), v)
            for i, v in zip(result_ids, verdicts, strict=True)
        ]
        rows.append(GridRow(image, results, title=query_id[:12]))
    plot_result_grid(rows, path)


def write_pr_plots(ranks: np.ndarray, gnd: Sequence[Mapping[str, Sequence[int]]], plots_dir: Path) -> None:
    """Per-protocol precision-recall CSVs (``pr_<protocol>.csv``) and one PNG with all three curves."""
    from landmark.retrieval.metrics import PROTOCOLS, revisitop_pr_curve
    from landmark.retrieval.plots import plot_precision_recall, write_curve_csv

    curves = {}
    for protocol in PROTOCOLS:
        precision = np.nan_to_num(revisitop_pr_curve(ranks, gnd, protocol, RECALL_LEVELS))
        write_curve_csv(plots_dir / f"pr_{protocol}.csv", RECALL_LEVELS, precision)
        curves[protocol] = (RECALL_LEVELS, precision)
    plot_precision_recall(
        curves, plots_dir / "precision_recall.png", title="Precision-recall (revisited protocols)"
    )


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


# ---------------------------------------------------------------------------------------------------------------
# The stage


def local_verifier(cfg: Config, local_dir: Path | None) -> tuple[Verifier | None, str]:
    """The spatial verifier ``rerank.spatial`` / ``recognize.inliers`` ask for, over the local feature stores
    ``local_dir/<split>`` (test queries, index candidates, train neighbours), and why there is none: neither is
    switched on, or a store they need is missing (then both are skipped, as the label steps are without train
    descriptors, and metrics.json says so)."""
    if not (cfg.rerank.spatial or cfg.recognize.inliers):
        return None, ""
    from landmark.cleaning.verify import StoreVerifier

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
    from landmark.data.datasets import open_dataset
    from landmark.features.store import load_features
    from landmark.retrieval.rerank import label_steps_enabled, run_retrieval, without_label_steps

    verifier_note = ""
    if verifier is None:
        verifier, verifier_note = local_verifier(cfg, local_dir)
    dataset = open_dataset(cfg, Path(data_dir), fmt)
    if not (dataset.retrieval or dataset.retrieval_solution or dataset.recognition_solution):
        raise InputError(f"{data_dir} has no ground truth (gnd_*.pkl or solution CSVs): nothing to evaluate")
    db_ids, db = load_features(Path(features_dir) / "index", usable_ids(dataset, "index", features_dir)[0])
    test_ids, queries = load_features(
        Path(features_dir) / "test", usable_ids(dataset, "test", features_dir)[0]
    )
    train, train_note = load_train_set(dataset, features_dir)
    rerank_cfg = cfg.rerank
    notes: list[str] = []
    skipped = _skipped_images(dataset, features_dir)
    if skipped_note(skipped):
        notes.append(skipped_note(skipped))
        logger.warning("evaluate: %s", skipped_note(skipped))
    if train is None and label_steps_enabled(rerank_cfg):
        rerank_cfg = without_label_steps(rerank_cfg)
        notes.append(f"sort/insert steps skipped: {train_note}")
        logger.warning("evaluate: sort/insert steps skipped: %s", train_note)
    if verifier_note:
        rerank_cfg = replace(rerank_cfg, spatial=False)
        cfg = replace(cfg, recognize=replace(cfg.recognize, inliers=False))
        notes.append(f"spatial verification skipped: {verifier_note}")
        logger.warning("evaluate: spatial verification skipped: %s", verifier_note)
    first_stage = open_saved_index(index_dir, db_ids, features_dir, cfg.index.gpu)
    result = run_retrieval(
        queries,
        db,
        rerank_cfg,
        top=cfg.evaluate.topk,
        index_cfg=cfg.index,
        seed=cfg.seed,
        train=train,
        verifier=verifier,
        query_ids=test_ids,
        db_ids=db_ids,
        first_stage=first_stage,
    )
    metrics: dict[str, Any] = {
        "n_database": len(db_ids),
        "n_test": len(test_ids),
        "undecodable_left_out": {split: len(ids) for split, ids in skipped.items()},
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
    position = {q: i for i, q in enumerate(test_ids)}
    # a query extraction skipped as undecodable has no descriptor: left out (counted in undecodable_left_out)
    truths = [t for t in dataset.retrieval if t.query_id in position]
    if truths:
        rows = [position[t.query_id] for t in truths]
        full = _full_ranking(result, rows)
        gnd = gnd_indices(truths, db_ids)
        ranks = full.T.copy()
        metrics["revisitop"] = revisitop_metrics(ranks, gnd, cfg.evaluate.kappas)
        metrics["n_queries"] = len(rows)
        np.save(out_dir / "ranks.npy", ranks)
        if plots:
            write_pr_plots(ranks, gnd, out_dir / PLOTS_DIR)
    if dataset.retrieval_solution:
        metrics["gldv2_retrieval"] = gldv2_retrieval_metrics(
            result.ranked, test_ids, db_ids, dataset.retrieval_solution, cfg.evaluate.topk
        )
        metrics.setdefault("n_queries", metrics["gldv2_retrieval"]["queries"])
    metrics["recognition"] = _recognition(cfg, dataset, train, train_note, queries, test_ids, verifier)
    if plots and cfg.evaluate.grid_queries > 0:
        grid_ids = [t.query_id for t in truths] or [q for q in test_ids if dataset.retrieval_solution.get(q)]
        if grid_ids:
            write_result_grid(
                dataset,
                grid_ids,
                result.ranked[[position[q] for q in grid_ids]],
                db_ids,
                out_dir / PLOTS_DIR / "results_grid.png",
                n_queries=cfg.evaluate.grid_queries,
                n_results=cfg.evaluate.grid_results,
            )
    _write_json(out_dir / "metrics.json", metrics)
    return metrics


def _full_ranking(result: RetrievalResult, rows: Sequence[int]) -> np.ndarray:
    from landmark.retrieval.rerank import RetrievalResult

    subset = RetrievalResult(result.ranked[rows], result.query_vectors[rows], result.db_vectors)
    return subset.full_ranking()


def _recognition(
    cfg: Config,
    dataset: LandmarkDataset,
    train: LabelledSet | None,
    train_note: str,
    queries: np.ndarray,
    test_ids: Sequence[str],
    verifier: Verifier | None,
) -> dict[str, Any]:
    from landmark.retrieval.recognize import knn_recognition

    solution = dataset.recognition_solution
    if not solution:
        return {"skipped": "the dataset has no recognition solution"}
    if train is None:
        return {"skipped": train_note}
    prediction = knn_recognition(
        queries, train, cfg.recognize, cfg.index, seed=cfg.seed, verifier=verifier, query_ids=test_ids
    )
    return recognition_metrics(
        prediction,
        test_ids,
        solution,
        target_fpr=cfg.recognize.target_fpr,
        calibration_fraction=cfg.recognize.calibration_fraction,
        seed=cfg.seed,
    )


# ---------------------------------------------------------------------------------------------------------------
# Revisited Oxford/Paris-format benchmarks


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
    from landmark.cleaning.verify import StoreVerifier
    from landmark.config import resolve_device
    from landmark.data.revisitop import image_uri
    from landmark.features.local_extract import LocalItem, extract_local_to_store

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
    from landmark.data.revisitop import gnd_path, read_gnd
    from landmark.features.store import load_features
    from landmark.retrieval.rerank import run_retrieval
    from landmark.stages.extract import extract

    model_dir = None
    if model is not None:
        if Path(model).is_dir():
            model_dir = Path(model)
        elif Path(model).is_file():
            cfg = replace(cfg, model=replace(cfg.model, pretrained=str(model)))
        else:
            raise FileNotFoundError(f"--model {model}: neither a model directory nor a checkpoint file")
    rerank = rerank_for_steps(cfg.rerank, rerank_steps)  # bad steps fail before any extraction
    rerank = replace(rerank, spatial=spatial)
    path = gnd_path(root, name)
    if not path.is_file():
        raise FileNotFoundError(f"no revisitop ground truth at {path}")
    db_names, query_names, truths = read_gnd(path)
    dataset_dir = Path(root) / name
    out_dir = Path(out_dir)
    db_features = Path(features_cache) if features_cache is not None else out_dir / "features"
    for split, store_root in (("index", db_features), ("test", out_dir / "features")):
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
    _, queries = load_features(out_dir / "features" / "test", query_names)
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
        "model": {"dir": str(model_dir)}
        if model_dir
        else {"backbone": cfg.model.backbone, "pretrained": cfg.model.pretrained},
        "rerank": {
            "steps": applied_steps(rerank),
            "seconds": {k: round(v, 4) for k, v in result.seconds.items()},
        },
    }
    if spatial_report is not None:
        metrics["rerank"]["spatial"] = {**spatial_report, "top": rerank.spatial_top}
    out_dir.mkdir(parents=True, exist_ok=True)
    np.save(out_dir / "ranks.npy", ranks)
    _write_json(out_dir / "metrics.json", metrics)
    return metrics
