"""Landmark recognition by kNN voting over labelled (train) descriptors, with "no landmark" rejection.

- :func:`vote_labels` is the shared primitive: per query, sum a weight per neighbour label and take the best.
- :func:`predict_labels` is the soft-voting label prediction of the two-stage re-ranking (Yokoo et al. 2020):
  weights = similarities over the top-k train neighbours, confidence = score / k.
- :func:`recognize` is the recognition score: per neighbour, similarity + min(inliers, cap) / cap (the inlier
  term is 0 without a spatial verifier); confidence = the winning label's score.
- :func:`threshold_for_fpr` picks the rejection threshold on held-out non-landmark images for a target
  false-positive rate, the production setting of Boiarov & Tyantov (CIKM 2019).
- :func:`class_centroids` builds their faster index: one L2-normalised mean descriptor per class.
- :func:`recognition_metrics` scores a prediction (GAP, top-1) and the operating point of the calibrated
  threshold (:func:`operating_point`).

Missing neighbours (index -1, e.g. from approximate search) and neighbours labelled -1 never vote.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from landmark.config import IndexConfig, RecognizeConfig
from landmark.errors import ConfigError, InputError
from landmark.normalize import l2_normalize
from landmark.retrieval.metrics import Prediction, global_average_precision, top1_accuracy

NO_LABEL = -1
_ROW_BLOCK = 4096  # rows per block in vote_labels: bounds the (rows, k, k) comparison tensor


@dataclass(frozen=True)
class LabelledSet:
    """Descriptors with landmark labels (the train set), for kNN voting.

    Attributes:
        vectors: (n, d) L2-normalised descriptors.
        labels: (n,) landmark ids.
        ids: (n,) image ids (needed only to ask a spatial verifier about them).
    """

    vectors: np.ndarray
    labels: np.ndarray
    ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        shape, n_labels = np.shape(self.vectors), np.size(self.labels)
        if len(shape) != 2 or shape[0] != n_labels or (self.ids and len(self.ids) != n_labels):
            raise ValueError(
                f"vectors must be (n, d) with one label (and id) each, got {shape}, {n_labels} labels, "
                f"{len(self.ids)} ids"
            )


@dataclass(frozen=True)
class LabelPrediction:
    """Predicted label and confidence per item.

    Attributes:
        labels: (n,) int64 landmark ids; -1 when no neighbour could vote.
        confidence: (n,) float64; 0 where labels is -1.
    """

    labels: np.ndarray
    confidence: np.ndarray


def neighbour_labels(idx: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Labels of neighbours: ``labels[idx]`` with -1 where ``idx`` is -1.

    Args:
        idx: neighbour positions, shape (n, k); -1 = missing.
        labels: label of every indexed item, shape (n_items,).

    Returns:
        (n, k) int64.
    """
    idx = np.asarray(idx, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if idx.size and (idx.max() >= labels.size or idx.min() < -1):
        raise ValueError(
            f"neighbour positions must be in [-1, {labels.size}), got [{idx.min()}, {idx.max()}]"
        )
    return (
        np.where(idx >= 0, labels[np.clip(idx, 0, None)], NO_LABEL) if labels.size else np.full_like(idx, -1)
    )


def vote_labels(labels: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the label with the largest summed weight over its neighbours.

    Ties between labels go to the label of the better-ranked neighbour (the earlier column), so the result is
    deterministic. Columns with label -1 do not vote.

    Args:
        labels: neighbour labels, shape (n, k), best neighbour first; -1 = no vote.
        weights: vote of each neighbour, shape (n, k).

    Returns:
        (labels (n,) int64, scores (n,) float64); -1 and 0.0 for rows without any vote.
    """
    labels = np.asarray(labels, dtype=np.int64)
    weights = np.asarray(weights, dtype=np.float64)
    if labels.ndim != 2 or labels.shape != weights.shape:
        raise ValueError(
            f"labels and weights must be 2-d arrays of one shape, got {labels.shape}, {weights.shape}"
        )
    if not np.all(np.isfinite(weights[labels >= 0])):
        raise ValueError("weights of voting neighbours must be finite")
    out_labels = np.full(labels.shape[0], NO_LABEL, dtype=np.int64)
    out_scores = np.zeros(labels.shape[0], dtype=np.float64)
    if labels.shape[1] == 0:
        return out_labels, out_scores
    for start in range(0, labels.shape[0], _ROW_BLOCK):
        lab = labels[start : start + _ROW_BLOCK]
        valid = lab >= 0
        w = np.where(valid, weights[start : start + _ROW_BLOCK], 0.0)
        same = (lab[:, :, None] == lab[:, None, :]) & valid[:, None, :]
        # score of the label at each column: the same terms summed in the same order for every column of a
        # label, so equal labels get bit-identical scores and argmax picks the earliest column on ties
        per_column = np.where(valid, np.einsum("nij,nj->ni", same, w), -np.inf)
        best = np.argmax(per_column, axis=1)
        rows = np.arange(lab.shape[0])
        has_vote = valid.any(axis=1)
        out_labels[start : start + lab.shape[0]] = np.where(has_vote, lab[rows, best], NO_LABEL)
        out_scores[start : start + lab.shape[0]] = np.where(has_vote, per_column[rows, best], 0.0)
    return out_labels, out_scores


def predict_labels(sims: np.ndarray, labels: np.ndarray, k: int) -> LabelPrediction:
    """kNN soft-voting label prediction (Yokoo et al.): score[label] = sum of similarities of the top-k
    neighbours with that label; confidence = score / k.

    Args:
        sims: similarities to the neighbours, shape (n, >= k), best first.
        labels: the neighbours' labels, same shape; -1 = no vote.
        k: neighbours used.

    Returns:
        A :class:`LabelPrediction`.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    sims, labels = np.asarray(sims), np.asarray(labels)
    if sims.ndim != 2 or sims.shape[1] < k:
        raise ValueError(f"sims must have shape (n, >= {k}), got {sims.shape}")
    best, score = vote_labels(labels[:, :k], sims[:, :k])
    return LabelPrediction(best, score / k)


def recognize(
    sims: np.ndarray, labels: np.ndarray, inliers: np.ndarray | None = None, inlier_cap: int = 70
) -> LabelPrediction:
    """Recognition scores: per neighbour, similarity + min(inliers, inlier_cap) / inlier_cap, summed per label.

    Args:
        sims: similarities to the k train neighbours, shape (n, k), best first.
        labels: the neighbours' labels, shape (n, k); -1 = no vote.
        inliers: spatial-verification inlier counts, shape (n, k), or None (no verifier: the term is 0).
        inlier_cap: inlier count at which the inlier term saturates at 1 (70 in the paper).

    Returns:
        A :class:`LabelPrediction` whose confidence is the winning label's score.
    """
    sims = np.asarray(sims, dtype=np.float64)
    if inlier_cap < 1:
        raise ValueError(f"inlier_cap must be >= 1, got {inlier_cap}")
    weights = sims.copy()
    if inliers is not None:
        inliers = np.asarray(inliers, dtype=np.float64)
        if inliers.shape != sims.shape:
            raise ValueError(f"inliers must have the shape of sims {sims.shape}, got {inliers.shape}")
        if np.any(inliers < 0):
            raise ValueError(f"inlier counts must be >= 0, got min {inliers.min()}")
        weights += np.minimum(inliers, inlier_cap) / inlier_cap
    best, score = vote_labels(labels, weights)
    return LabelPrediction(best, score)


def threshold_for_fpr(nonlandmark_confidences: Sequence[float] | np.ndarray, target_fpr: float) -> float:
    """The lowest confidence threshold whose false-positive rate on non-landmark images is <= ``target_fpr``.

    A prediction is accepted when its confidence is strictly above the threshold. With the confidences sorted
    high to low and ``a = floor(target_fpr * n)`` false positives allowed, the threshold is the (a+1)-th highest
    confidence: everything equal to it is rejected too, so ties never push the rate over the target. Any lower
    threshold accepts more than ``a`` of them.

    Args:
        nonlandmark_confidences: confidences predicted for held-out images that show no landmark, shape (n,).
        target_fpr: allowed share of them accepted, in [0, 1].

    Returns:
        The threshold; -inf when the target allows accepting all of them.
    """
    conf = np.asarray(nonlandmark_confidences, dtype=np.float64).reshape(-1)
    if conf.size == 0:
        raise InputError("need at least one non-landmark confidence to choose a threshold")
    if not np.all(np.isfinite(conf)):
        raise ValueError(f"confidences must be finite, got {conf[~np.isfinite(conf)][:3]}")
    if not 0.0 <= target_fpr <= 1.0:
        raise ValueError(f"target_fpr must be in [0, 1], got {target_fpr}")
    allowed = int(np.floor(target_fpr * conf.size + 1e-9))
    if allowed >= conf.size:
        return float("-inf")
    return float(np.sort(conf)[::-1][allowed])


def class_centroids(vectors: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class-centroid index (Boiarov & Tyantov): the mean of the L2-normalised descriptors of each class, L2
    normalised again. Items labelled -1 are skipped.

    Args:
        vectors: descriptors, shape (n, dim).
        labels: class of each descriptor, shape (n,).

    Returns:
        (classes (C,) int64 ascending, centroids (C, dim) float32).
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if vectors.ndim != 2 or vectors.shape[0] != labels.size:
        raise ValueError(f"vectors must be (n, dim) with n = {labels.size} labels, got {vectors.shape}")
    keep = labels >= 0
    classes, inverse = np.unique(labels[keep], return_inverse=True)
    unit = l2_normalize(vectors[keep], dtype=np.float64)
    sums = np.zeros((classes.size, vectors.shape[1]))
    np.add.at(sums, inverse, unit)
    return classes, l2_normalize(sums, dtype=np.float64).astype(np.float32)


def calibration_split(ids: Sequence[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Seeded split of ids into (calibration, evaluation) parts, ``round(fraction * n)`` ids calibrating.

    The result depends only on the set of ids, the fraction and the seed, not on the input order.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    ordered = sorted(set(ids))
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(ordered))
    n_cal = round(fraction * len(ordered))
    calibration = sorted(ordered[i] for i in perm[:n_cal])
    evaluation = sorted(ordered[i] for i in perm[n_cal:])
    return calibration, evaluation


class Verifier(Protocol):
    """Spatial verification of one query against candidate index images (e.g. :class:`landmark.cleaning.verify.StoreVerifier`).

    Shared by recognition's inlier term and retrieval's spatial re-rank (:mod:`landmark.retrieval.rerank` re-exports it).
    """

    def __call__(self, query_id: str, candidate_ids: Sequence[str]) -> np.ndarray:
        """Inlier counts, shape (len(candidate_ids),), >= 0."""
        ...


def knn_recognition(
    queries: np.ndarray,
    train: LabelledSet,
    cfg: RecognizeConfig,
    index_cfg: IndexConfig,
    *,
    seed: int = 0,
    verifier: Verifier | None = None,
    query_ids: Sequence[str] = (),
) -> LabelPrediction:
    """Recognise queries by kNN voting over train images, or over class centroids (``cfg.index``).

    Args:
        queries: (n_queries, d) L2-normalised descriptors.
        train: labelled train descriptors (with ids when the inlier term is on).
        cfg: the ``recognize`` config (k, index, inliers, inlier_cap).
        index_cfg: the kind of index searched.
        seed: seeds IVF-PQ training when that kind is used.
        verifier: spatial verifier, required when ``cfg.inliers`` (only with ``index="images"``).
        query_ids: query ids for the verifier.

    Returns:
        A :class:`LabelPrediction` (confidence = summed score of the winning label).
    """
    from landmark.retrieval.index import build_in_memory

    if cfg.inliers and (verifier is None or cfg.index != "images" or len(query_ids) != len(queries)):
        raise ConfigError("recognize.inliers needs a verifier, index=images and the query ids")
    if cfg.inliers and len(train.ids) != np.size(train.labels):
        raise InputError("recognize.inliers needs the train image ids")
    if cfg.index == "centroids":
        base_labels, base = class_centroids(train.vectors, train.labels)
    else:
        base_labels, base = np.asarray(train.labels, np.int64), np.asarray(train.vectors, np.float32)
    if base.shape[0] == 0:
        raise InputError("no labelled train descriptors to recognise with")
    index = build_in_memory(base, index_cfg, seed=seed)
    sims, idx = index.search(np.asarray(queries, np.float32), min(cfg.k, index.ntotal))
    labels = neighbour_labels(idx, base_labels)
    inliers = None
    if cfg.inliers and verifier is not None:
        inliers = np.zeros(idx.shape)
        for q, query_id in enumerate(query_ids):
            valid = idx[q] >= 0
            inliers[q, valid] = verifier(query_id, [train.ids[i] for i in idx[q, valid]])
    return recognize(np.where(idx >= 0, sims, 0.0), labels, inliers, cfg.inlier_cap)


# ---------------------------------------------------------------------------------------------------------------
# Scoring


def recognition_metrics(
    prediction: LabelPrediction,
    query_ids: Sequence[str],
    solution: Mapping[str, Sequence[int]],
    *,
    target_fpr: float,
    calibration_fraction: float,
    seed: int,
) -> dict[str, Any]:
    """GAP and top-1 over the whole solution, and the "no landmark" operating point (JSON-ready, percent).

    The threshold is chosen on a seeded calibration share of the solution's images (its non-landmark images,
    for ``target_fpr``) and the operating point (FPR on non-landmark images, precision and recall of accepted
    predictions, GAP after rejection) is measured on the remaining images.

    Args:
        prediction: labels and confidences, (n_queries,) each; label -1 = no prediction.
        query_ids: (n_queries,) ids of the predictions.
        solution: query id -> the query's landmark ids (empty = not a landmark).
        target_fpr: wanted false-positive rate on non-landmark images.
        calibration_fraction: share of the solution's images that choose the threshold.
        seed: seeds the calibration split.
    """
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
    """Metrics (percent; None when undefined) of the predictions accepted above ``threshold`` on ``solution``'s
    images: accepted count, FPR on non-landmark images, precision, recall and GAP after rejection."""
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
