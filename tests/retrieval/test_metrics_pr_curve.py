"""Interpolated precision-recall curves of the revisited protocols on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from landmark.retrieval.metrics import protocol_truth, revisitop_pr_curve


def test_medium_curve_with_junk_removed() -> None:
    # ranking [4, 0, 3, 1, 2], junk 4 -> [0, 3, 1, 2]: hits at ranks 0 and 2 -> P = 1, 2/3 at recall 1/2, 1
    ranks = np.array([[4], [0], [3], [1], [2]])
    gnd = [{"easy": [0], "hard": [1], "junk": [4]}]
    curve = revisitop_pr_curve(ranks, gnd, "medium", [0.0, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(curve, [1.0, 1.0, 2 / 3, 2 / 3])


def test_unreached_recall_has_zero_precision_and_queries_average() -> None:
    # query 0: positives {0, 1}, only 0 ranked, at rank 1 -> P 1/2 up to recall 1/2, then 0
    # query 1: positive {1} at rank 0 -> P 1 everywhere
    ranks = np.array([[2, 1], [0, 0]])
    gnd = [{"easy": [0, 1]}, {"easy": [1]}]
    curve = revisitop_pr_curve(ranks, gnd, "easy", [0.0, 0.5, 1.0])
    np.testing.assert_allclose(curve, [(0.5 + 1) / 2, (0.5 + 1) / 2, (0 + 1) / 2])


def test_no_positive_gives_nan_and_bad_levels_raise() -> None:
    ranks = np.array([[0], [1]])
    assert np.all(np.isnan(revisitop_pr_curve(ranks, [{"easy": [0]}], "hard", [0.0, 1.0])))
    with pytest.raises(ValueError, match="recall_levels"):
        revisitop_pr_curve(ranks, [{"easy": [0]}], "easy", [1.5])
    with pytest.raises(ValueError, match="protocol"):
        protocol_truth({"easy": [0]}, "extreme")
