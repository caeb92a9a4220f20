"""Retrieval and recognition metrics (pure functions; arrays in, numbers out).

- Revisited Oxford/Paris (Radenovic et al., CVPR 2018): per-protocol mAP with junk images removed from the
  ranking, trapezoidal AP, and mP@k.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

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
    ranks = np.asarray(ranks)
    if ranks.ndim != 2 or ranks.shape[1] != len(gnd):
        raise ValueError(f"ranks must have shape (n_database, {len(gnd)}), got {ranks.shape}")
    empty = np.zeros(0, dtype=np.int64)
    results: dict[str, ProtocolResult] = {}
    for protocol in PROTOCOLS:
        aps: list[float] = []
        precisions: list[list[float]] = []
        for q, truth in enumerate(gnd):
            easy = np.asarray(truth.get("easy", empty), dtype=np.int64)
            hard = np.asarray(truth.get("hard", empty), dtype=np.int64)
            junk = np.asarray(truth.get("junk", empty), dtype=np.int64)
            if protocol == "easy":
                positives, ignore = easy, np.concatenate([junk, hard])
            elif protocol == "medium":
                positives, ignore = np.concatenate([easy, hard]), junk
            else:
                positives, ignore = hard, np.concatenate([junk, easy])
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
