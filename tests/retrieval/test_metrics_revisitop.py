"""Revisited Oxford/Paris metrics on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from landmark.retrieval.metrics import average_precision, revisitop_map


def test_ap_perfect_and_trapezoid() -> None:
    assert average_precision(np.array([0, 1]), 2) == pytest.approx(1.0)
    # positives at ranks 0 and 2 (0-based): steps (1+1)/2*0.5 + (1/2 + 2/3)/2*0.5 = 0.5 + 0.291666...
    assert average_precision(np.array([0, 2]), 2) == pytest.approx(0.5 + (0.5 + 2 / 3) / 4)
    # single positive at rank 1: (0/1 + 1/2)/2 = 0.25
    assert average_precision(np.array([1]), 1) == pytest.approx(0.25)


def test_ap_missing_positive_counts_as_zero() -> None:
    # 2 positives, only one retrieved at rank 0: 0.5
    assert average_precision(np.array([0]), 2) == pytest.approx(0.5)
    assert average_precision(np.array([], dtype=int), 3) == 0.0


def test_ap_bad_input() -> None:
    with pytest.raises(ValueError):
        average_precision(np.array([0]), 0)
    with pytest.raises(ValueError):
        average_precision(np.array([1, 1]), 2)
    with pytest.raises(ValueError):
        average_precision(np.array([0, 1, 2]), 2)


def test_revisitop_protocols_and_junk() -> None:
    # database of 5; one query ranking [4, 0, 3, 1, 2]
    ranks = np.array([[4], [0], [3], [1], [2]])
    gnd = [{"easy": [0], "hard": [1], "junk": [4]}]
    res = revisitop_map(ranks, gnd, kappas=(1, 2))
    # medium: junk 4 removed -> ranking [0, 3, 1, 2]; positives {0, 1} at ranks 0, 2
    assert res["medium"].map == pytest.approx(0.5 + (0.5 + 2 / 3) / 4)
    # easy: junk {4, 1} removed -> [0, 3, 2]; positive 0 at rank 0
    assert res["easy"].map == pytest.approx(1.0)
    # hard: junk {4, 0} removed -> [3, 1, 2]; positive 1 at rank 1 -> 0.25
    assert res["hard"].map == pytest.approx(0.25)
    # mP@k (revisited definition): kq = min(last positive position, k)
    assert res["medium"].mp_at_k[1] == pytest.approx(1.0)
    assert res["medium"].mp_at_k[2] == pytest.approx(0.5)
    assert res["hard"].mp_at_k[1] == pytest.approx(0.0)
    assert res["hard"].mp_at_k[2] == pytest.approx(0.5)


def test_queries_without_positives_are_skipped_per_protocol() -> None:
    ranks = np.array([[0, 1], [1, 0]])
    gnd = [{"easy": [0], "hard": [], "junk": []}, {"easy": [], "hard": [], "junk": [0]}]
    res = revisitop_map(ranks, gnd)
    assert res["easy"].queries == 1 and res["easy"].map == pytest.approx(1.0)
    assert res["hard"].queries == 0 and np.isnan(res["hard"].map)


def test_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="ranks must have shape"):
        revisitop_map(np.zeros((3, 2), dtype=int), [{"easy": [0]}])
