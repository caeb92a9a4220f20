"""GLDv2 retrieval mAP@100, recognition GAP and top-1 accuracy on hand-computed cases."""

from __future__ import annotations

import math

import pytest

from landmark.retrieval.metrics import (
    gldv2_average_precision,
    gldv2_retrieval_map,
    global_average_precision,
    top1_accuracy,
)

# ------------------------------------------------------------------------------------------------ retrieval


def test_ap_precision_at_each_hit_over_num_relevant() -> None:
    # hits at positions 1 and 3: (1/1 + 2/3) / 2
    assert gldv2_average_precision(["a", "x", "b"], {"a", "b"}) == pytest.approx(5 / 6)
    assert gldv2_average_precision(["a", "b"], {"a", "b"}) == pytest.approx(1.0)
    assert gldv2_average_precision(["x", "y"], {"a"}) == 0.0


def test_ap_missing_relevant_counts_in_denominator() -> None:
    # one of three relevant found at position 1: 1 / 3
    assert gldv2_average_precision(["a"], {"a", "b", "c"}) == pytest.approx(1 / 3)


def test_ap_divides_by_min_relevant_and_k() -> None:
    # k = 2: only positions 1..2 count; hit at 2 -> 1/2, divided by min(3, 2) = 2
    assert gldv2_average_precision(["x", "a", "b"], {"a", "b", "c"}, k=2) == pytest.approx(0.25)
    # 150 relevant, the first 100 predictions all relevant: AP@100 = 1 (not 100/150)
    relevant = {f"r{i}" for i in range(150)}
    assert gldv2_average_precision([f"r{i}" for i in range(120)], relevant) == pytest.approx(1.0)


def test_ap_duplicates_count_once_and_keep_their_position() -> None:
    # "a" repeated: the repeat earns nothing but still occupies position 2, so "b" is a hit at position 3
    assert gldv2_average_precision(["a", "a", "b"], {"a", "b"}) == pytest.approx((1 + 2 / 3) / 2)
    # repeating the only relevant id cannot raise AP above one hit
    assert gldv2_average_precision(["a", "a", "a"], {"a", "b"}) == pytest.approx(0.5)


def test_ap_bad_input() -> None:
    with pytest.raises(ValueError, match="relevant"):
        gldv2_average_precision(["a"], set())
    with pytest.raises(ValueError, match="k must be"):
        gldv2_average_precision(["a"], {"a"}, k=0)


def test_map_excludes_queries_without_relevant_and_scores_missing_as_zero() -> None:
    solution = {"q1": ["a"], "q2": [], "q3": ["b", "c"]}
    predictions = {"q1": ["a"], "q2": ["a"], "q4": ["b"]}  # q3 not predicted, q4 not in the solution
    result = gldv2_retrieval_map(predictions, solution)
    assert result.queries == 2 and result.excluded == 1
    assert result.value == pytest.approx((1.0 + 0.0) / 2)


def test_map_nan_when_nothing_scored() -> None:
    result = gldv2_retrieval_map({"q": ["a"]}, {"q": []})
    assert math.isnan(result.value) and result.queries == 0 and result.excluded == 1


# ---------------------------------------------------------------------------------------------- recognition

SOLUTION = {"q1": [1], "q2": [2], "q3": [], "q4": [4]}  # q3 shows no landmark


def test_gap_hand_computed() -> None:
    predictions = {"q1": (1, 0.9), "q3": (5, 0.8), "q2": (3, 0.7), "q4": (4, 0.6)}
    # by confidence: q1 right (P=1/1), q3 wrong, q2 wrong, q4 right (P=2/4); M = 3 landmark queries
    assert global_average_precision(predictions, SOLUTION) == pytest.approx((1 + 2 / 4) / 3)


def test_confident_non_landmark_prediction_lowers_gap() -> None:
    without = {"q1": (1, 0.9), "q2": (3, 0.7), "q4": (4, 0.6)}
    assert global_average_precision(without, SOLUTION) == pytest.approx((1 + 2 / 3) / 3)
    confident = {**without, "q3": (5, 0.8)}
    assert global_average_precision(confident, SOLUTION) < global_average_precision(without, SOLUTION)
    # ranked below every correct prediction, it costs nothing
    unsure = {**without, "q3": (5, 0.1)}
    assert global_average_precision(unsure, SOLUTION) == pytest.approx((1 + 2 / 3) / 3)


def test_gap_ties_broken_by_query_id_whatever_the_order() -> None:
    solution = {"a": [1], "b": [2]}
    # equal confidence: "a" ranks first; "a" right, "b" wrong -> (1/1) / 2
    assert global_average_precision({"b": (9, 0.5), "a": (1, 0.5)}, solution) == pytest.approx(0.5)
    # "a" wrong, "b" right -> the hit is at position 2: (1/2) / 2
    assert global_average_precision({"a": (9, 0.5), "b": (2, 0.5)}, solution) == pytest.approx(0.25)
    assert global_average_precision({"b": (2, 0.5), "a": (9, 0.5)}, solution) == pytest.approx(0.25)


def test_gap_ignores_predictions_outside_the_solution_and_accepts_multi_label_truth() -> None:
    solution = {"q1": [1, 7], "q2": [2]}
    predictions = {"q1": (7, 0.9), "zz": (2, 0.99)}
    assert global_average_precision(predictions, solution) == pytest.approx(1 / 2)


def test_top1_over_landmark_queries_missing_is_wrong() -> None:
    predictions = {"q1": (1, 0.1), "q2": (3, 0.9), "q3": (5, 0.8)}  # q4 missing
    assert top1_accuracy(predictions, SOLUTION) == pytest.approx(1 / 3)
    predictions["q4"] = (4, 0.2)
    assert top1_accuracy(predictions, SOLUTION) == pytest.approx(2 / 3)


def test_recognition_bad_input() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        global_average_precision({"q1": (1, float("nan"))}, SOLUTION)
    with pytest.raises(ValueError, match="no query with a landmark"):
        global_average_precision({}, {"q3": []})
    with pytest.raises(ValueError, match="no query with a landmark"):
        top1_accuracy({}, {})
