"""Re-ranking steps on tiny hand-built cases: DBA, alpha-QE, DQE, spatial verification, sort- and insert-step."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pytest

from landmark.config import IndexConfig, RerankConfig
from landmark.retrieval.recognize import LabelledSet
from landmark.retrieval.rerank import (
    alpha_query_expansion,
    complete_ranking,
    database_side_augmentation,
    discriminative_query_expansion,
    dqe_negatives,
    drop_self,
    insert_step,
    order_by_inliers,
    run_retrieval,
    sort_step,
    spatial_rerank,
    weighted_expansion,
)

S = 1 / np.sqrt(2)
FLAT = IndexConfig(kind="flat")
NOTHING = RerankConfig(dba=False, qe="none", spatial=False, sort_step=False, insert_step=False)


def normalized(v: Sequence[float]) -> np.ndarray:
    x = np.asarray(v, dtype=np.float64)
    return x / np.linalg.norm(x)


def test_weighted_expansion_hand_computed() -> None:
    x = np.array([[1.0, 0.0]])
    base = np.array([[0.0, 1.0], [S, S]])
    sims, idx = np.array([[0.5, 0.25]]), np.array([[0, 1]])
    got = weighted_expansion(x, base, sims, idx, n=2, alpha=1.0)
    np.testing.assert_allclose(got[0], normalized([1 + 0.25 * S, 0.5 + 0.25 * S]), rtol=1e-6)
    # alpha = 0: plain average query expansion (weights 1); n = 1: only the first neighbour
    np.testing.assert_allclose(
        weighted_expansion(x, base, sims, idx, 2, 0.0)[0], normalized([1 + S, 1 + S]), rtol=1e-6
    )
    np.testing.assert_allclose(
        weighted_expansion(x, base, sims, idx, 1, 3.0)[0], normalized([1, 0.125]), rtol=1e-6
    )
    # a missing hit (-1) adds nothing; negative similarities get weight 0 when alpha > 0
    np.testing.assert_allclose(
        weighted_expansion(x, base, np.array([[-0.5, 0.9]]), np.array([[0, -1]]), 2, 1.0)[0], [1, 0]
    )


def test_weighted_expansion_bad_input() -> None:
    with pytest.raises(ValueError, match="sims and idx"):
        weighted_expansion(
            np.zeros((1, 2)), np.zeros((2, 2)), np.zeros((1, 2)), np.zeros((1, 3), int), 1, 1.0
        )
    with pytest.raises(ValueError, match="positions"):
        weighted_expansion(np.zeros((1, 2)), np.zeros((2, 2)), np.zeros((1, 1)), np.array([[5]]), 1, 1.0)
    with pytest.raises(ValueError, match=">= 0"):
        weighted_expansion(np.zeros((1, 2)), np.zeros((2, 2)), np.zeros((1, 1)), np.array([[0]]), 1, -1.0)


def test_drop_self_removes_the_row_itself_wherever_it_is() -> None:
    sims = np.array([[1.0, 0.7, 0.1], [0.9, 0.9, 0.2]])
    idx = np.array([[0, 2, 1], [0, 1, 2]])  # row 1 finds itself second (a tie)
    s, i = drop_self(sims, idx)
    np.testing.assert_array_equal(i, [[2, 1], [0, 2]])
    np.testing.assert_allclose(s, [[0.7, 0.1], [0.9, 0.2]])
    # a row that does not find itself loses its last column
    np.testing.assert_array_equal(drop_self(np.ones((1, 2)), np.array([[3, 4]]))[1], [[3]])


def test_dba_expands_each_index_vector_with_its_neighbours() -> None:
    db = np.array([[1.0, 0.0], [0.0, 1.0], [S, S]])
    sims = db @ db.T
    idx = np.argsort(-sims, axis=1, kind="stable")
    sims = np.take_along_axis(sims, idx, 1)
    got = database_side_augmentation(db, sims, idx, n=1, alpha=1.0)
    # row 0: itself + S * row 2; row 2: itself + S * row 0 (first of the tied neighbours)
    np.testing.assert_allclose(got[0], normalized([1 + S * S, S * S]), rtol=1e-6)
    np.testing.assert_allclose(got[2], normalized([S + S, S]), rtol=1e-6)


def test_alpha_qe_is_weighted_expansion_over_the_results() -> None:
    q = np.array([[1.0, 0.0]])
    db = np.array([[0.0, 1.0], [S, S]])
    sims, idx = np.array([[S, 0.0]]), np.array([[1, 0]])
    np.testing.assert_allclose(
        alpha_query_expansion(q, db, sims, idx, 1, 2.0)[0], normalized([1 + 0.5 * S, 0.5 * S])
    )


def test_dqe_points_to_the_positives_and_away_from_the_negatives() -> None:
    rng = np.random.default_rng(0)
    pos_centre, neg_centre = normalized([1, 0, 0, 0]), normalized([0.6, 0.8, 0, 0])
    db = np.vstack(
        [pos_centre + 0.05 * rng.standard_normal((3, 4)), neg_centre + 0.05 * rng.standard_normal((20, 4))]
    )
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    query = normalized([0.9, 0.3, 0.1, 0.0])[None]
    idx = np.array([[0, 1, 2, 3]])
    w = discriminative_query_expansion(query, db, idx, n=3, negatives=np.arange(3, 23), regularization=0.1)
    assert np.linalg.norm(w) == pytest.approx(1.0, abs=1e-5)
    scores = db @ w[0]
    assert scores[:3].min() > scores[3:].max()  # every positive above every negative
    assert float(w[0] @ neg_centre) < float(query[0] @ neg_centre)  # moved away from the negatives
    # a negative that is also a positive of the query is left out for it
    same = discriminative_query_expansion(query, db, idx, 3, np.arange(0, 23), 0.1)
    np.testing.assert_allclose(same, w, rtol=1e-5)


def test_dqe_bad_input_and_seeded_negatives() -> None:
    q, db = np.ones((1, 2)), np.eye(2)
    with pytest.raises(ValueError, match="regularization"):
        discriminative_query_expansion(q, db, np.array([[0]]), 1, np.array([1]), 0.0)
    with pytest.raises(ValueError, match="negatives"):
        discriminative_query_expansion(q, db, np.array([[0]]), 1, np.array([5]), 1.0)
    np.testing.assert_array_equal(dqe_negatives(100, 10, seed=3), dqe_negatives(100, 10, seed=3))
    assert len(set(dqe_negatives(100, 10, seed=3))) == 10 and dqe_negatives(5, 10, seed=0).size == 5


def test_order_by_inliers() -> None:
    counts = np.array([5, 0, 7, 5, 2])
    np.testing.assert_array_equal(order_by_inliers(counts, 3), [2, 0, 3, 1, 4])  # unverified keep their order
    np.testing.assert_array_equal(order_by_inliers(counts, 0), [2, 0, 3, 4, 1])
    with pytest.raises(ValueError, match="inlier counts"):
        order_by_inliers(np.array([-1]))


class StubVerifier:
    """Inlier counts from a table; records the calls it got."""

    def __init__(self, table: dict[tuple[str, str], int]) -> None:
        self.table = table
        self.calls: list[tuple[str, list[str]]] = []

    def __call__(self, query_id: str, candidate_ids: Sequence[str]) -> np.ndarray:
        self.calls.append((query_id, list(candidate_ids)))
        return np.array([self.table.get((query_id, c), 0) for c in candidate_ids])


def test_spatial_rerank_verifies_only_the_top_and_reorders_it() -> None:
    db_ids = ["d0", "d1", "d2", "d3"]
    verifier = StubVerifier({("q", "d1"): 10, ("q", "d3"): 2, ("q", "d2"): 50})
    ranked, counts = spatial_rerank(np.array([[3, 1, 2, -1]]), ["q"], db_ids, verifier, top=2)
    np.testing.assert_array_equal(ranked, [[1, 3, 2, -1]])  # d2 (50 inliers) is beyond the top 2: untouched
    np.testing.assert_array_equal(counts, [[10, 2]])
    assert verifier.calls == [("q", ["d3", "d1"])]

    def broken(query_id: str, candidate_ids: Sequence[str]) -> np.ndarray:
        return np.zeros(1)

    with pytest.raises(ValueError, match="counts"):
        spatial_rerank(np.array([[0, 1]]), ["q"], db_ids, broken, top=2)


def test_sort_step_is_a_stable_partition_by_predicted_label() -> None:
    db_labels = np.array([7, 9, 9, 7, 7])
    ranked = np.array([[3, 0, 2, 4, 1], [3, 0, 2, 4, 1], [2, -1, -1, -1, -1]])
    got = sort_step(ranked, np.array([7, -1, 9]), db_labels)
    np.testing.assert_array_equal(got[0], [3, 0, 4, 2, 1])
    np.testing.assert_array_equal(got[1], [3, 0, 2, 4, 1])  # no predicted label: unchanged
    np.testing.assert_array_equal(got[2], [2, -1, -1, -1, -1])


def test_insert_step_adds_confident_same_label_images_after_the_block() -> None:
    db_labels = np.array([7, 9, 7, 7, 9, 7])
    confidence = np.array([0.9, 0.8, 0.3, 0.6, 0.9, 0.95])
    ranked = np.array([[0, 1, 4]])
    # block = [0]; then label-7 images not retrieved with confidence > 0.5, by confidence: 5, 3 (2 too unsure)
    np.testing.assert_array_equal(
        insert_step(ranked, np.array([7]), db_labels, confidence, 0.5, top=4), [[0, 5, 3, 1]]
    )
    np.testing.assert_array_equal(
        insert_step(ranked, np.array([7]), db_labels, confidence, 0.5, top=7), [[0, 5, 3, 1, 4, -1, -1]]
    )
    # a query without predicted label or with a label nobody has gets nothing inserted
    np.testing.assert_array_equal(
        insert_step(ranked, np.array([-1]), db_labels, confidence, 0.5, top=3), ranked
    )
    np.testing.assert_array_equal(
        insert_step(ranked, np.array([3]), db_labels, confidence, 0.5, top=3), ranked
    )


def test_complete_ranking_appends_the_rest_in_order() -> None:
    np.testing.assert_array_equal(
        complete_ranking(np.array([[2, -1]]), np.array([[0, 1, 2, 3]])), [[2, 0, 1, 3]]
    )
    with pytest.raises(ValueError, match="head"):
        complete_ranking(np.array([[2, 2]]), np.array([[0, 1, 2, 3]]))


# ------------------------------------------------------------------------------------------- whole pipeline


def small_world() -> tuple[np.ndarray, np.ndarray, LabelledSet]:
    """Three landmarks (clusters) in 8-d: index 6 per landmark + 6 distractors, 2 queries per landmark."""
    rng = np.random.default_rng(0)
    centres = np.eye(8)[:3]

    def around(c: np.ndarray, n: int, spread: float) -> np.ndarray:
        x = c + spread * rng.standard_normal((n, 8))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    db = np.vstack([around(c, 6, 0.25) for c in centres] + [around(np.eye(8)[5], 6, 1.0)])
    queries = np.vstack([around(c, 2, 0.25) for c in centres])
    train = LabelledSet(np.vstack([around(c, 5, 0.15) for c in centres]), np.repeat([10, 11, 12], 5))
    return queries, db, train


def test_run_retrieval_all_steps_shape_and_uniqueness() -> None:
    queries, db, train = small_world()
    cfg = RerankConfig(
        dba=True,
        dba_n=1,
        qe="alpha",
        qe_n=1,
        spatial=False,
        sort_step=True,
        insert_step=True,
        insert_threshold=0.2,
    )
    result = run_retrieval(queries, db, cfg, top=10, index_cfg=FLAT, seed=0, train=train)
    assert result.ranked.shape == (6, 10)
    assert all(len(set(row)) == 10 for row in result.ranked)
    assert result.query_prediction is not None and result.db_prediction is not None
    np.testing.assert_array_equal(result.query_prediction.labels, np.repeat([10, 11, 12], 2))
    # after sort + insert every query's top 6 are the 6 index images of its own landmark
    for q in range(6):
        assert set(result.ranked[q, :6]) == set(range(6 * (q // 2), 6 * (q // 2) + 6))
    full = result.full_ranking()
    assert full.shape == (6, 24) and all(sorted(row) == list(range(24)) for row in full)
    assert {"dba", "search", "qe", "labels", "sort_step", "insert_step"} <= set(result.seconds)


def test_prepared_database_answers_each_query_as_a_fresh_search() -> None:
    from landmark.retrieval.rerank import prepare_database

    queries, db, train = small_world()
    cfg = RerankConfig(dba=True, dba_n=2, qe="alpha", qe_n=1, spatial=False, sort_step=True, insert_step=True)
    database = prepare_database(db, cfg, index_cfg=FLAT, seed=0, train=train)
    assert database.prediction is not None and {"index", "dba", "labels"} <= set(database.seconds)
    assert not np.array_equal(database.vectors, database.raw)  # augmented
    whole = run_retrieval(queries, db, cfg, top=10, index_cfg=FLAT, seed=0, train=train)
    for q in range(len(queries)):  # serving: one query at a time over the prepared database
        one = run_retrieval(
            queries[q : q + 1], db, cfg, top=10, index_cfg=FLAT, seed=0, train=train, database=database
        )
        np.testing.assert_array_equal(one.ranked[0], whole.ranked[q])
        np.testing.assert_allclose(one.query_vectors[0], whole.query_vectors[q], atol=1e-6)
    with pytest.raises(ValueError, match="prepared database holds"):
        run_retrieval(queries, db[:5], cfg, top=3, index_cfg=FLAT, train=train, database=database)


def test_run_retrieval_dqe_and_plain_search() -> None:
    queries, db, _ = small_world()
    plain = run_retrieval(queries, db, NOTHING, top=5, index_cfg=FLAT)
    expected = np.argsort(-(queries @ db.T), axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(plain.ranked, expected)
    dqe = run_retrieval(
        queries, db, replace(NOTHING, qe="dqe", qe_n=2, dqe_negatives=10), top=5, index_cfg=FLAT
    )
    assert dqe.ranked.shape == (6, 5)
    # more results asked than the database holds: padded with -1
    assert (run_retrieval(queries, db, NOTHING, top=30, index_cfg=FLAT).ranked[:, 24:] == -1).all()


def test_run_retrieval_spatial_hook_uses_the_verifier() -> None:
    queries, db, _ = small_world()
    db_ids = [f"d{i}" for i in range(len(db))]
    query_ids = [f"q{i}" for i in range(len(queries))]
    verifier = StubVerifier({("q0", "d23"): 99})  # a distractor the stub claims is a perfect match
    cfg = replace(NOTHING, spatial=True, spatial_top=24)
    result = run_retrieval(
        queries, db, cfg, top=5, index_cfg=FLAT, verifier=verifier, query_ids=query_ids, db_ids=db_ids
    )
    assert result.ranked[0, 0] == 23 and result.inliers is not None and result.inliers[0, 0] == 99
    assert len(verifier.calls) == 6


def test_run_retrieval_refuses_missing_inputs() -> None:
    queries, db, _ = small_world()
    with pytest.raises(ValueError, match="train"):
        run_retrieval(queries, db, replace(NOTHING, sort_step=True), top=5, index_cfg=FLAT)
    with pytest.raises(ValueError, match="verifier"):
        run_retrieval(queries, db, replace(NOTHING, spatial=True), top=5, index_cfg=FLAT)
    with pytest.raises(ValueError, match="top"):
        run_retrieval(queries, db, NOTHING, top=0, index_cfg=FLAT)


def test_rerank_for_steps_maps_cli_steps_to_a_config() -> None:
    from landmark.retrieval.rerank import applied_steps, rerank_for_steps

    base = RerankConfig()
    assert applied_steps(rerank_for_steps(base, None)) == ["dba", "alpha_qe"]  # config's, minus label steps
    assert applied_steps(rerank_for_steps(base, ["none"])) == []
    assert applied_steps(rerank_for_steps(base, ["dba", "dqe"])) == ["dba", "dqe"]
    with pytest.raises(ValueError, match="not both"):
        rerank_for_steps(base, ["qe", "dqe"])
    with pytest.raises(ValueError, match="unknown"):
        rerank_for_steps(base, ["sort"])
