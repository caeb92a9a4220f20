"""Retrieval and recognition metrics (pure functions; arrays in, numbers out).

- Revisited Oxford/Paris (Radenovic et al., CVPR 2018): per-protocol mAP with junk images removed from the
  ranking, trapezoidal AP, mP@k, and interpolated precision-recall curves.
- GLDv2 retrieval (Weyand et al., CVPR 2020): mAP@100, AP divided by min(#relevant, 100).
- GLDv2 recognition: Global Average Precision (GAP, micro AP over all queries ranked by confidence) and top-1
  accuracy.
- Reports: :func:`revisitop_metrics` and :func:`gldv2_retrieval_metrics` give the JSON-ready dicts (percent)
  that ``metrics.json`` holds.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from landmark.errors import InputError

if TYPE_CHECKING:  # annotations only: the ground-truth module loads pandas
    from landmark.data.groundtruth import QueryTruth

PROTOCOLS = ("easy", "medium", "hard")


def average_precision(positive_ranks: np.ndarray, num_positives: int) -> float:
    """Trapezoidal average precision from the 0-based ranks of the retrieved positives.

    The ranks are positions in the ranking after junk images were removed. Positives that were not retrieved
    simply do not appear and contribute zero.

    Args:
        positive_ranks: 0-based ranks of retrieved positives, shape (P,), any order.
        num_positives: number of positives of the query (>= P, > 0).

    Returns:
        AP in [0, 1].
    """
    if num_positives <= 0:
        raise ValueError(f"num_positives must be > 0, got {num_positives}")
    ranks = np.sort(np.asarray(positive_ranks, dtype=np.int64))
    if ranks.size > num_positives:
        raise ValueError(f"{ranks.size} positive ranks for only {num_positives} positives")
    if ranks.size and (ranks[0] < 0 or np.any(np.diff(ranks) == 0)):
        raise ValueError("positive ranks must be distinct and >= 0")
    found = np.arange(ranks.size, dtype=np.float64)
    recall_step = 1.0 / num_positives
    precision_before = np.where(ranks == 0, 1.0, found / np.maximum(ranks, 1))
    precision_after = (found + 1.0) / (ranks + 1.0)
    return float(np.sum((precision_before + precision_after) / 2.0 * recall_step))


def _positive_ranks(ranking: np.ndarray, positives: np.ndarray, junk: np.ndarray) -> np.ndarray:
    """0-based ranks of ``positives`` in ``ranking`` after removing ``junk``."""
    keep = ~np.isin(ranking, junk)
    kept = ranking[keep]
    return np.flatnonzero(np.isin(kept, positives))


def _precision_at_k(positive_ranks: np.ndarray, k: int) -> float:
    """Revisited-protocol precision at k: positives within the first min(k, last positive rank + 1)."""
    if positive_ranks.size == 0:
        return 0.0
    positions = positive_ranks + 1
    kq = min(int(positions.max()), k)
    return float(np.sum(positions <= kq) / kq)


def protocol_truth(truth: Mapping[str, Sequence[int]], protocol: str) -> tuple[np.ndarray, np.ndarray]:
    """Positives and ignored (junk) database indices of one query under a revisited protocol.

    - easy: positives = easy; junk = junk + hard.
    - medium: positives = easy + hard; junk = junk.
    - hard: positives = hard; junk = junk + easy.

    Args:
        truth: a mapping with int index lists ``easy``, ``hard`` and ``junk`` (missing keys = empty).
        protocol: "easy", "medium" or "hard".

    Returns:
        (positives (P,), ignored (J,)) int64 arrays.
    """
    empty = np.zeros(0, dtype=np.int64)
    easy = np.asarray(truth.get("easy", empty), dtype=np.int64).reshape(-1)
    hard = np.asarray(truth.get("hard", empty), dtype=np.int64).reshape(-1)
    junk = np.asarray(truth.get("junk", empty), dtype=np.int64).reshape(-1)
    if protocol == "easy":
        return easy, np.concatenate([junk, hard])
    if protocol == "medium":
        return np.concatenate([easy, hard]), junk
    if protocol == "hard":
        return hard, np.concatenate([junk, easy])
    raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")


def _check_ranks(ranks: np.ndarray, n_queries: int) -> np.ndarray:
    ranks = np.asarray(ranks)
    if ranks.ndim != 2 or ranks.shape[1] != n_queries:
        raise ValueError(f"ranks must have shape (n_database, {n_queries}), got {ranks.shape}")
    return ranks


@dataclass(frozen=True)
class ProtocolResult:
    """mAP and mP@k (both in [0, 1]) of one protocol; ``queries`` = queries with at least one positive."""

    map: float
    mp_at_k: dict[int, float]
    queries: int


def revisitop_map(
    ranks: np.ndarray,
    gnd: Sequence[Mapping[str, Sequence[int]]],
    kappas: Sequence[int] = (1, 5, 10),
) -> dict[str, ProtocolResult]:
    """Revisited Oxford/Paris evaluation for the easy, medium and hard protocols.

    - easy: positives = easy; junk = junk + hard.
    - medium: positives = easy + hard; junk = junk.
    - hard: positives = hard; junk = junk + easy.
    Queries without positives under a protocol are left out of that protocol's mean.

    Args:
        ranks: database indices best first, shape (n_database_ranked, n_queries) (column q = query q).
        gnd: per query, a mapping with int index lists ``easy``, ``hard`` and ``junk``.
        kappas: the k of mP@k.

    Returns:
        ``{"easy"|"medium"|"hard": ProtocolResult}``.
    """
    ranks = _check_ranks(ranks, len(gnd))
    results: dict[str, ProtocolResult] = {}
    for protocol in PROTOCOLS:
        aps: list[float] = []
        precisions: list[list[float]] = []
        for q, truth in enumerate(gnd):
            positives, ignore = protocol_truth(truth, protocol)
            if positives.size == 0:
                continue
            pos_ranks = _positive_ranks(ranks[:, q], positives, ignore)
            aps.append(average_precision(pos_ranks, positives.size))
            precisions.append([_precision_at_k(pos_ranks, k) for k in kappas])
        n = len(aps)
        mean_p = np.mean(precisions, axis=0) if n else np.full(len(kappas), np.nan)
        results[protocol] = ProtocolResult(
            map=float(np.mean(aps)) if n else float("nan"),
            mp_at_k={int(k): float(v) for k, v in zip(kappas, mean_p, strict=True)},
            queries=n,
        )
    return results


def revisitop_pr_curve(
    ranks: np.ndarray,
    gnd: Sequence[Mapping[str, Sequence[int]]],
    protocol: str,
    recall_levels: Sequence[float] | np.ndarray = tuple(np.linspace(0.0, 1.0, 21)),
) -> np.ndarray:
    """Mean interpolated precision at fixed recall levels, for one revisited protocol.

    Per query (junk removed from the ranking): precision at recall level r is the highest precision reached at
    any recall >= r (0 when the query never reaches r); the curve is the mean over the queries that have
    positives under the protocol.

    Args:
        ranks: database indices best first, shape (n_database_ranked, n_queries).
        gnd: per query, a mapping with int index lists ``easy``, ``hard`` and ``junk``.
        protocol: "easy", "medium" or "hard".
        recall_levels: recall values in [0, 1], shape (L,).

    Returns:
        Precision in [0, 1] at each recall level, shape (L,); all NaN when no query has positives.
    """
    ranks = _check_ranks(ranks, len(gnd))
    levels = np.asarray(recall_levels, dtype=np.float64).reshape(-1)
    if levels.size == 0 or np.any((levels < 0) | (levels > 1)) or not np.all(np.isfinite(levels)):
        raise ValueError(f"recall_levels must be a non-empty list of values in [0, 1], got {levels}")
    curves: list[np.ndarray] = []
    for q, truth in enumerate(gnd):
        positives, ignore = protocol_truth(truth, protocol)
        if positives.size == 0:
            continue
        pos_ranks = np.sort(_positive_ranks(ranks[:, q], positives, ignore))
        found = np.arange(1, pos_ranks.size + 1, dtype=np.float64)
        precision = found / (pos_ranks + 1.0)
        recall = found / positives.size
        # interpolation: best precision at any recall >= level (a suffix maximum over the positives)
        best_from = np.maximum.accumulate(precision[::-1])[::-1] if precision.size else precision
        first = np.searchsorted(recall, levels - 1e-12, side="left")
        curve = np.zeros(levels.size)
        reached = first < recall.size
        curve[reached] = best_from[first[reached]]
        curves.append(curve)
    if not curves:
        return np.full(levels.size, np.nan)
    return np.mean(curves, axis=0)


# ---------------------------------------------------------------------------------------------------------------
# GLDv2 retrieval


def gldv2_average_precision(
    predicted: Sequence[Hashable], relevant: Collection[Hashable], k: int = 100
) -> float:
    """GLDv2 retrieval AP@k of one query.

    ``AP@k = 1 / min(m, k) * sum_{i=1..min(n, k)} P(i) rel(i)`` with m relevant images, n predictions, P(i) the
    precision of the first i predictions and rel(i) = 1 when prediction i is relevant.

    Duplicates: only the first occurrence of an id can be relevant; a repeat still occupies its position (so
    it lowers the precision of what follows) and the cut at k applies to the list as submitted. This matches
    the Kaggle scorer, so a padded or repeated list can never score higher than the de-duplicated one.

    Args:
        predicted: image ids, best first, shape (n,).
        relevant: the query's relevant image ids (non-empty).
        k: cut-off (100 in GLDv2).

    Returns:
        AP@k in [0, 1].
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    truth = set(relevant)
    if not truth:
        raise ValueError(
            "relevant must hold at least one id (queries without relevant images are not scored)"
        )
    seen: set[Hashable] = set()
    hits = 0
    total = 0.0
    for position, image_id in enumerate(list(predicted)[:k], start=1):
        if image_id in seen:
            continue
        seen.add(image_id)
        if image_id in truth:
            hits += 1
            total += hits / position
    return total / min(len(truth), k)


@dataclass(frozen=True)
class MeanAPResult:
    """GLDv2 mAP@k (in [0, 1]; NaN when no query is scored).

    Attributes:
        value: the mean AP@k over the scored queries.
        queries: queries scored (solution queries with at least one relevant image).
        excluded: solution queries left out because they have no relevant image.
    """

    value: float
    queries: int
    excluded: int


def gldv2_retrieval_map(
    predictions: Mapping[str, Sequence[Hashable]],
    solution: Mapping[str, Collection[Hashable]],
    k: int = 100,
) -> MeanAPResult:
    """GLDv2 retrieval mAP@k: the mean of :func:`gldv2_average_precision` over the solution's queries.

    Queries whose solution lists no relevant image are excluded from the mean (GLDv2 marks them "Ignored");
    a scored query without predictions scores 0; predictions for ids that are not in the solution are ignored.

    Args:
        predictions: query id -> predicted image ids, best first.
        solution: query id -> relevant image ids.
        k: cut-off (100 in GLDv2).

    Returns:
        A :class:`MeanAPResult`.
    """
    aps: list[float] = []
    excluded = 0
    for query_id, relevant in solution.items():
        if len(relevant) == 0:
            excluded += 1
            continue
        aps.append(gldv2_average_precision(predictions.get(query_id, ()), relevant, k))
    value = float(np.mean(aps)) if aps else float("nan")
    return MeanAPResult(value=value, queries=len(aps), excluded=excluded)


# ---------------------------------------------------------------------------------------------------------------
# GLDv2 recognition

Prediction = tuple[int, float]
"""A recognition prediction: (landmark id, confidence)."""


def _checked_predictions(
    predictions: Mapping[str, Prediction], solution: Mapping[str, Collection[int]]
) -> list[tuple[str, int, float]]:
    scored: list[tuple[str, int, float]] = []
    for query_id, (label, confidence) in predictions.items():
        if query_id not in solution:
            continue
        if not math.isfinite(float(confidence)):
            raise ValueError(f"prediction for {query_id!r} has a non-finite confidence {confidence!r}")
        scored.append((query_id, int(label), float(confidence)))
    return scored


def _landmark_queries(solution: Mapping[str, Collection[int]]) -> int:
    count = sum(1 for labels in solution.values() if len(labels) > 0)
    if count == 0:
        raise InputError("the solution has no query with a landmark: GAP and accuracy are undefined")
    return count


def global_average_precision(
    predictions: Mapping[str, Prediction], solution: Mapping[str, Collection[int]]
) -> float:
    """GLDv2 recognition Global Average Precision (micro AP).

    All predictions of solution queries are sorted by confidence, highest first; ties are broken by query id
    in ascending string order, so the value never depends on the mapping's order. With P(i) the precision of
    the first i predictions and rel(i) = 1 when prediction i's landmark is one of its query's landmarks,
    ``GAP = 1 / M * sum_i P(i) rel(i)`` where M is the number of solution queries that show a landmark.

    A non-landmark query (empty solution entry) never counts in M; a prediction for it is always wrong and,
    ranked above correct ones, lowers their precision: abstaining (no entry in ``predictions``) is the right
    answer for it. Predictions for ids not in the solution are ignored (another Usage split, say).

    Args:
        predictions: query id -> (landmark id, confidence); at most one prediction per query.
        solution: query id -> the query's landmark ids (empty = not a landmark).

    Returns:
        GAP in [0, 1].
    """
    m = _landmark_queries(solution)
    scored = sorted(_checked_predictions(predictions, solution), key=lambda p: (-p[2], p[0]))
    correct = 0
    total = 0.0
    for i, (query_id, label, _) in enumerate(scored, start=1):
        if label in solution[query_id]:
            correct += 1
            total += correct / i
    return total / m


def top1_accuracy(predictions: Mapping[str, Prediction], solution: Mapping[str, Collection[int]]) -> float:
    """Share of the solution's landmark queries whose predicted landmark is one of theirs.

    Non-landmark queries are left out (they have no right label); a landmark query without a prediction
    counts as wrong. Confidences are not used.

    Args:
        predictions: query id -> (landmark id, confidence).
        solution: query id -> the query's landmark ids (empty = not a landmark).

    Returns:
        Accuracy in [0, 1].
    """
    m = _landmark_queries(solution)
    correct = sum(
        1
        for query_id, labels in solution.items()
        if len(labels) > 0 and query_id in predictions and int(predictions[query_id][0]) in labels
    )
    return correct / m


# ---------------------------------------------------------------------------------------------------------------
# Reports (JSON-ready, percent)


def gnd_indices(truths: Sequence[QueryTruth], db_ids: Sequence[str]) -> list[dict[str, list[int]]]:
    """Convert id-based query truths into the index-based ``gnd`` lists of the revisitop protocol.

    Ids that are not in ``db_ids`` are left out.
    """
    position = {image_id: i for i, image_id in enumerate(db_ids)}

    def indices(ids: Sequence[str]) -> list[int]:
        return [position[i] for i in ids if i in position]

    return [{"easy": indices(t.easy), "hard": indices(t.hard), "junk": indices(t.junk)} for t in truths]


def revisitop_metrics(
    ranks: np.ndarray, gnd: Sequence[dict[str, list[int]]], kappas: Sequence[int]
) -> dict[str, Any]:
    """Revisited-protocol metrics as a JSON-ready dict, mAP and mP@k in percent (see :func:`revisitop_map`)."""
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
    """GLDv2 mAP@k (percent) of ranked lists against a retrieval solution, as a JSON-ready dict.

    Args:
        ranked: (n_queries, t) database positions, best first; -1 = no result.
        query_ids: (n_queries,) ids of the rows of ``ranked``.
        db_ids: the database ids the positions refer to.
        solution: query id -> relevant database ids.
        k: cut-off.
    """
    predictions = {q: [db_ids[i] for i in row if i >= 0] for q, row in zip(query_ids, ranked, strict=True)}
    result = gldv2_retrieval_map(predictions, solution, k)
    return {
        f"mAP@{k}": round(100.0 * result.value, 3),
        "queries": result.queries,
        "excluded_no_relevant": result.excluded,
    }
