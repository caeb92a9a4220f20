"""kNN label voting, recognition scores, the "no landmark" threshold and class centroids, by hand."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from landmark.config import IndexConfig, RecognizeConfig
from landmark.retrieval.recognize import (
    LabelledSet,
    calibration_split,
    class_centroids,
    knn_recognition,
    neighbour_labels,
    predict_labels,
    recognize,
    threshold_for_fpr,
    vote_labels,
)

S = 1 / np.sqrt(2)
FLAT = IndexConfig(kind="flat")


def test_vote_sums_per_label_and_breaks_ties_by_rank() -> None:
    best, score = vote_labels(np.array([[5, 3, 3]]), np.array([[0.9, 0.5, 0.5]]))
    assert best.tolist() == [3] and score[0] == pytest.approx(1.0)  # 0.5 + 0.5 beats 0.9
    # 3: 0.9 + 0.1, 5: 0.5 + 0.5 -> a tie: the label of the better-ranked neighbour (3) wins
    best, score = vote_labels(np.array([[3, 5, 5, 3]]), np.array([[0.9, 0.5, 0.5, 0.1]]))
    assert best.tolist() == [3] and score[0] == pytest.approx(1.0)
    # -1 never votes; a row without votes gets -1 and score 0
    best, score = vote_labels(
        np.array([[-1, 4, -1], [-1, -1, -1]]), np.array([[5.0, 0.2, 9.0], [1.0, 1.0, 1.0]])
    )
    assert best.tolist() == [4, -1] and score.tolist() == pytest.approx([0.2, 0.0])


def test_vote_bad_input() -> None:
    with pytest.raises(ValueError, match="one shape"):
        vote_labels(np.zeros((2, 3), int), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="finite"):
        vote_labels(np.array([[1]]), np.array([[np.nan]]))


def test_predict_labels_confidence_is_score_over_k() -> None:
    sims = np.array([[0.9, 0.8, 0.4, 0.99]])
    labels = np.array([[1, 2, 2, 1]])
    pred = predict_labels(sims, labels, k=3)  # the 4th neighbour is not used
    assert pred.labels.tolist() == [2] and pred.confidence[0] == pytest.approx(1.2 / 3)
    with pytest.raises(ValueError, match="shape"):
        predict_labels(sims, labels, k=5)


def test_neighbour_labels_maps_missing_to_minus_one() -> None:
    np.testing.assert_array_equal(neighbour_labels(np.array([[2, -1, 0]]), np.array([7, 8, 9])), [[9, -1, 7]])
    with pytest.raises(ValueError, match="positions"):
        neighbour_labels(np.array([[3]]), np.array([7, 8, 9]))


def test_recognize_similarity_plus_capped_inlier_term() -> None:
    sims = np.array([[0.8, 0.6, 0.5]])
    labels = np.array([[1, 2, 2]])
    # no verifier: label 2 with 0.6 + 0.5
    plain = recognize(sims, labels)
    assert plain.labels.tolist() == [2] and plain.confidence[0] == pytest.approx(1.1)
    # inliers 100 (capped at 70 -> +1), 0, 35 (+0.5): label 1 = 1.8, label 2 = 0.6 + 0.5 + 0.5 = 1.6
    verified = recognize(sims, labels, np.array([[100, 0, 35]]), inlier_cap=70)
    assert verified.labels.tolist() == [1] and verified.confidence[0] == pytest.approx(1.8)
    with pytest.raises(ValueError, match="shape"):
        recognize(sims, labels, np.zeros((1, 2)))
    with pytest.raises(ValueError, match=">= 0"):
        recognize(sims, labels, -np.ones((1, 3)))


def test_threshold_for_fpr_hand_computed() -> None:
    conf = [0.1, 0.9, 0.5, 0.7, 0.3]
    # 20 % of 5 = 1 false positive allowed: the 2nd highest (0.7) is the threshold, only 0.9 is accepted
    assert threshold_for_fpr(conf, 0.2) == pytest.approx(0.7)
    assert threshold_for_fpr(conf, 0.0) == pytest.approx(0.9)  # nothing accepted
    assert threshold_for_fpr(conf, 0.39) == pytest.approx(0.7)  # floor(1.95) = 1
    assert threshold_for_fpr(conf, 1.0) == float("-inf")
    # ties: threshold 0.5 rejects all three 0.5s (FPR 0 <= 0.5); any lower value would accept 3 of 4
    assert threshold_for_fpr([0.5, 0.5, 0.5, 0.1], 0.5) == pytest.approx(0.5)


def test_threshold_bad_input() -> None:
    with pytest.raises(ValueError, match="at least one"):
        threshold_for_fpr([], 0.1)
    with pytest.raises(ValueError, match="finite"):
        threshold_for_fpr([0.1, np.inf], 0.1)
    with pytest.raises(ValueError, match="target_fpr"):
        threshold_for_fpr([0.1], 1.5)


def test_class_centroids_mean_of_unit_vectors_normalised() -> None:
    vectors = np.array([[3.0, 0.0], [0.0, 2.0], [0.0, 5.0], [1.0, 1.0]])
    classes, centroids = class_centroids(vectors, np.array([5, 5, 7, -1]))
    assert classes.tolist() == [5, 7]
    np.testing.assert_allclose(centroids, [[S, S], [0.0, 1.0]], rtol=1e-6)
    with pytest.raises(ValueError, match="labels"):
        class_centroids(vectors, np.array([1, 2]))


def test_calibration_split_is_seeded_and_order_free() -> None:
    ids = [f"t{i}" for i in range(10)]
    cal, held = calibration_split(ids, 0.3, seed=1)
    assert len(cal) == 3 and len(held) == 7 and set(cal) | set(held) == set(ids)
    assert calibration_split(ids[::-1], 0.3, seed=1) == (cal, held)
    with pytest.raises(ValueError, match="fraction"):
        calibration_split(ids, 1.0, seed=1)


def test_knn_recognition_over_images_and_centroids() -> None:
    train = LabelledSet(
        np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0, 0.95, 0.05]], dtype=np.float32),
        np.array([4, 4, 9, 9]),
        ("a", "b", "c", "d"),
    )
    queries = np.array([[0.95, 0.05, 0.0], [0.1, 0.9, 0.0]], dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    images = knn_recognition(queries, train, RecognizeConfig(k=2, inliers=False), FLAT)
    assert images.labels.tolist() == [4, 9]
    centroids = knn_recognition(queries, train, RecognizeConfig(k=2, index="centroids", inliers=False), FLAT)
    assert centroids.labels.tolist() == [4, 9]

    def verifier(query_id: str, candidate_ids: Sequence[str]) -> np.ndarray:
        return np.array([70 if query_id == "q0" and c in ("c", "d") else 0 for c in candidate_ids])

    # q0: label 4 gets ~1.99 from a and b; label 9 gets ~0.1 similarity + 2 x 70/70 inliers from c and d
    with_inliers = knn_recognition(
        queries, train, RecognizeConfig(k=4, inliers=True), FLAT, verifier=verifier, query_ids=["q0", "q1"]
    )
    assert with_inliers.labels.tolist() == [9, 9]
    with pytest.raises(ValueError, match="verifier"):
        knn_recognition(queries, train, RecognizeConfig(inliers=True), FLAT)
