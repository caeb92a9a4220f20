"""Re-ranking beyond DBA/QE on tiny hand-built graphs: adaptive neighbour counts, k-reciprocal neighbours,
diffusion and SuperGlobal refinement, each alone and through ``run_retrieval``.

Points are unit vectors at given angles (degrees) in the plane unless said otherwise, so every similarity is the
cosine of an angle difference and neighbour sets can be read off a number line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pytest

from landmark.config import ConfigError, IndexConfig, RerankConfig, load_config
from landmark.retrieval.rerank import (
    adaptive_counts,
    conjugate_gradient,
    diffusion_rerank,
    diffusion_scores,
    k_reciprocal_distances,
    k_reciprocal_rerank,
    k_reciprocal_sets,
    mutual_knn_affinity,
    neighbour_order,
    run_retrieval,
    superglobal_refine,
    superglobal_rerank,
    superglobal_scores,
    truncate_neighbours,
)

FLAT = IndexConfig(kind="flat")
NOTHING = RerankConfig(dba=False, qe="none", spatial=False, sort_step=False, insert_step=False)
HALF_SQRT3 = np.sqrt(3) / 2


def at_angles(degrees: Sequence[float]) -> np.ndarray:
    """(n, 2) unit vectors at ``degrees``."""
    rad = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    return np.stack([np.cos(rad), np.sin(rad)], axis=1)


def cos_deg(angle: float) -> float:
    return float(np.cos(np.deg2rad(angle)))


def gram(x: np.ndarray) -> np.ndarray:
    return x @ x.T


# ---------------------------------------------------------------------------------------------------------------
# adaptive neighbour counts


def test_adaptive_counts_follow_the_similarity_profile() -> None:
    sims = np.array([[0.9, 0.85, 0.7, 0.5], [0.5, 0.46, 0.44, 0.3]])
    idx = np.array([[0, 1, 2, 3], [0, 1, 2, -1]])
    # ratio 0.9: thresholds 0.81 and 0.45 -> two neighbours each
    np.testing.assert_array_equal(adaptive_counts(sims, idx, 4, 0.9, 1.1), [2, 2])
    # floor 0.6 also takes row 0's 0.7 (0.7 >= 0.6); row 1's threshold stays min(0.45, 0.6)
    np.testing.assert_array_equal(adaptive_counts(sims, idx, 4, 0.9, 0.6), [3, 2])
    np.testing.assert_array_equal(adaptive_counts(sims, idx, 1, 0.9, 1.1), [1, 1])  # the cap
    # ratio 1: only the top-1 passes; n_min 3 raises it, but not past the valid (leading) neighbours
    np.testing.assert_array_equal(adaptive_counts(sims, idx, 4, 1.0, 1.1, n_min=3), [3, 3])
    gap = np.array([[0, -1, 2, 3], [0, 1, 2, -1]])
    np.testing.assert_array_equal(adaptive_counts(sims, gap, 4, 0.0, 1.1, n_min=3), [1, 3])
    # the leading run counts: a later neighbour above the threshold after one below it is not taken
    np.testing.assert_array_equal(
        adaptive_counts(np.array([[0.9, 0.5, 0.88]]), np.array([[0, 1, 2]]), 3, 0.9, 1.1), [1]
    )


def test_adaptive_counts_bad_input() -> None:
    sims, idx = np.zeros((1, 2)), np.zeros((1, 2), int)
    with pytest.raises(ValueError, match="ratio"):
        adaptive_counts(sims, idx, 2, 1.5, 1.1)
    with pytest.raises(ValueError, match="n_min"):
        adaptive_counts(sims, idx, 2, 0.5, 1.1, n_min=3)
    with pytest.raises(ValueError, match="sims and idx"):
        adaptive_counts(sims, np.zeros((1, 3), int), 2, 0.5, 1.1)


def test_truncate_neighbours() -> None:
    got = truncate_neighbours(np.array([[3, 1, 2], [0, 2, 1]]), np.array([1, 3]))
    np.testing.assert_array_equal(got, [[3, -1, -1], [0, 2, 1]])
    with pytest.raises(ValueError, match="counts"):
        truncate_neighbours(np.zeros((2, 3), int), np.array([1]))


def test_adaptive_alpha_qe_in_run_retrieval() -> None:
    # query at 0 deg; index at 10, -20 and 90 deg: similarities cos10, cos20, 0
    query = at_angles([0.0]).astype(np.float32)
    db = at_angles([10.0, -20.0, 90.0]).astype(np.float32)
    cfg = replace(NOTHING, qe="alpha", qe_n=3, qe_alpha=1.0, adaptive_n=True, adaptive_ratio=0.9)
    # threshold 0.9 * cos10 = 0.886: cos20 = 0.940 passes, 0 does not -> two neighbours, weights s^1
    want = query[0] + cos_deg(10) * db[0] + cos_deg(20) * db[1]
    got = run_retrieval(query, db, cfg, top=3, index_cfg=FLAT).query_vectors[0]
    np.testing.assert_allclose(got, want / np.linalg.norm(want), rtol=1e-5)
    # with a cap of 1 only the top-1 is expanded in
    want1 = query[0] + cos_deg(10) * db[0]
    got1 = run_retrieval(query, db, replace(cfg, qe_n=1), top=3, index_cfg=FLAT).query_vectors[0]
    np.testing.assert_allclose(got1, want1 / np.linalg.norm(want1), rtol=1e-5)


def test_adaptive_dba_in_run_retrieval() -> None:
    # index at 0, 10 and 90 deg; each expands with its neighbours within 0.9 x its best other similarity
    db = at_angles([0.0, 10.0, 90.0]).astype(np.float32)
    cfg = replace(NOTHING, dba=True, dba_n=2, dba_alpha=1.0, adaptive_n=True, adaptive_ratio=0.9)
    got = run_retrieval(db[:1], db, cfg, top=3, index_cfg=FLAT).db_vectors
    c10, c80 = cos_deg(10), cos_deg(80)
    # 0 deg: others cos10, 0 -> one; 10 deg: cos10, cos80 (< 0.9 cos10) -> one; 90 deg: cos80, 0 -> one
    want = np.stack([db[0] + c10 * db[1], db[1] + c10 * db[0], db[2] + c80 * db[1]])
    np.testing.assert_allclose(got, want / np.linalg.norm(want, axis=1, keepdims=True), rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# k-reciprocal neighbours

# q at 0 deg; z1, z2 on one side (-10, -21), a tight cluster x, x1, x2 on the other (8, 12, 15). x is q's
# nearest neighbour, but x's two nearest are x1 and x2, so x is not a 2-reciprocal neighbour of q; z1 is.
KR_ANGLES = {"q": 0.0, "z1": -10.0, "z2": -21.0, "x": 8.0, "x1": 12.0, "x2": 15.0}
KR_NAMES = list(KR_ANGLES)


def kr_points() -> np.ndarray:
    return at_angles(list(KR_ANGLES.values()))


def test_neighbour_order_puts_self_first() -> None:
    order = neighbour_order(gram(kr_points()))
    assert [KR_NAMES[i] for i in order[0]] == ["q", "x", "z1", "x1", "x2", "z2"]
    assert [KR_NAMES[i] for i in order[3]] == ["x", "x1", "x2", "q", "z1", "z2"]


def test_k_reciprocal_sets_hand_computed() -> None:
    # N(p, 2): q {x, z1}, z1 {q, z2}, z2 {z1, q}, x {x1, x2}, x1 {x2, x}, x2 {x1, x}
    # R(p, 2) keeps g when p is in N(g, 2) too; the half sets (k = 1) are too small to add anyone
    got = k_reciprocal_sets(gram(kr_points()), 2)
    sets = {KR_NAMES[p]: {KR_NAMES[g] for g in np.flatnonzero(got[p])} for p in range(len(KR_NAMES))}
    assert sets == {
        "q": {"q", "z1"},
        "z1": {"z1", "q", "z2"},
        "z2": {"z2", "z1"},
        "x": {"x", "x1", "x2"},
        "x1": {"x1", "x2", "x"},
        "x2": {"x2", "x1", "x"},
    }


def _reference_k_reciprocal_sets(sims: np.ndarray, k1: int) -> list[set[int]]:
    """The paper's definitions written with Python sets (a second, independent reading)."""
    n = sims.shape[0]
    order = neighbour_order(sims)

    def near(p: int, k: int) -> set[int]:
        return {int(g) for g in order[p, : min(k, n - 1) + 1]}

    def recip(p: int, k: int) -> set[int]:
        return {g for g in near(p, k) if p in near(g, k)}

    out = []
    for p in range(n):
        grown = recip(p, k1)
        for q in recip(p, k1):
            half = recip(q, int(np.around(k1 / 2)))
            if len(half & recip(p, k1)) > 2 / 3 * len(half):
                grown |= half
        out.append(grown)
    return out


def test_k_reciprocal_sets_match_the_set_definitions_with_expansion() -> None:
    rng = np.random.default_rng(0)
    points = rng.normal(size=(14, 3))
    sims = gram(points / np.linalg.norm(points, axis=1, keepdims=True))
    got = k_reciprocal_sets(sims, 6)
    want = _reference_k_reciprocal_sets(sims, 6)
    assert [set(np.flatnonzero(row).tolist()) for row in got] == want
    # the expansion did add someone here (half sets of 4: overlap of 3 suffices)
    plain = neighbour_order(sims)[:, :7]
    assert any(len(w) > len({g for g in plain[p] if p in plain[g]}) for p, w in enumerate(want))


def _encoding(support: dict[str, float]) -> np.ndarray:
    """k-reciprocal encoding over KR_NAMES: weights exp(-d) on ``support`` (name -> angle to the owner),
    normalised."""
    v = np.zeros(len(KR_NAMES))
    for name, angle in support.items():
        v[KR_NAMES.index(name)] = np.exp(-(2 - 2 * cos_deg(angle)))
    return v / v.sum()


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    return float(1 - np.minimum(a, b).sum() / np.maximum(a, b).sum())


def test_k_reciprocal_distances_hand_computed() -> None:
    sims = gram(kr_points())
    got = k_reciprocal_distances(sims, k1=2, k2=1, lambda_=0.3)[0]
    v_q = _encoding({"q": 0, "z1": 10})
    v_z1 = _encoding({"z1": 0, "q": 10, "z2": 11})
    v_z2 = _encoding({"z2": 0, "z1": 11})
    # q's encoding shares nothing with the x cluster's: Jaccard distance 1 there
    jaccard = {"q": 0.0, "z1": _jaccard(v_q, v_z1), "z2": _jaccard(v_q, v_z2), "x": 1.0, "x1": 1.0, "x2": 1.0}
    assert jaccard["z1"] == pytest.approx(0.49458, abs=1e-5)
    assert jaccard["z2"] == pytest.approx(0.67478, abs=1e-5)
    want = [0.7 * jaccard[n] + 0.3 * (2 - 2 * cos_deg(KR_ANGLES[n])) for n in KR_NAMES]
    np.testing.assert_allclose(got, want, atol=1e-9)
    # so q's list becomes z1, z2, x, x1, x2 (by similarity it was x, z1, x1, x2, z2)
    assert [KR_NAMES[i] for i in np.argsort(got)[1:]] == ["z1", "z2", "x", "x1", "x2"]
    # lambda 1: the original distance alone
    np.testing.assert_allclose(k_reciprocal_distances(sims, 2, 1, 1.0), 2 - 2 * sims, atol=1e-12)


def test_k_reciprocal_local_query_expansion() -> None:
    sims = gram(kr_points())
    got = k_reciprocal_distances(sims, k1=2, k2=2, lambda_=0.0)[0]
    # k2 = 2: each encoding is averaged with its nearest node's (q with x, z2 with z1)
    v_q = (_encoding({"q": 0, "z1": 10}) + _encoding({"x": 0, "x1": 4, "x2": 7})) / 2
    v_z2 = (_encoding({"z2": 0, "z1": 11}) + _encoding({"z1": 0, "q": 10, "z2": 11})) / 2
    assert got[KR_NAMES.index("z2")] == pytest.approx(_jaccard(v_q, v_z2), abs=1e-9)


def test_k_reciprocal_rerank_reorders_the_head_only() -> None:
    points = kr_points().astype(np.float32)
    query, db = points[:1], points[1:]  # db: z1, z2, x, x1, x2 (positions 0..4)
    ranked = np.array([[2, 0, 3, 4, 1]])  # by similarity: x, z1, x1, x2, z2
    np.testing.assert_array_equal(k_reciprocal_rerank(query, db, ranked, 5, 2, 1, 0.3), [[0, 1, 2, 3, 4]])
    # only the first 3 are re-ranked, over the graph of q, x, z1, x1; the rest keep place
    head3 = k_reciprocal_rerank(query, db, ranked, 3, 2, 1, 0.3)
    assert sorted(head3[0, :3].tolist()) == [0, 2, 3]
    np.testing.assert_array_equal(head3[0, 3:], [4, 1])


def test_k_reciprocal_bad_input() -> None:
    with pytest.raises(ValueError, match="square"):
        k_reciprocal_distances(np.zeros((2, 3)), 2, 1, 0.3)
    with pytest.raises(ValueError, match="lambda_"):
        k_reciprocal_distances(np.eye(3), 2, 1, 1.5)
    with pytest.raises(ValueError, match="k1"):
        k_reciprocal_sets(np.eye(3), 0)


# ---------------------------------------------------------------------------------------------------------------
# diffusion

# q at 0 deg; c1, c2 a chain away from it (-12, -25); x at 22 deg (closer to q than c2); y far (60).
# Mutual 2-NN edges: q-c1, q-x, c1-c2 (q's two nearest are c1 and x, so q-c2 is not mutual); y has none.
DIFF_ANGLES = [0.0, -12.0, -25.0, 22.0, 60.0]


def hand_graph(gamma: float) -> np.ndarray:
    a = np.zeros((5, 5))
    for i, j in ((0, 1), (0, 3), (1, 2)):
        a[i, j] = a[j, i] = cos_deg(DIFF_ANGLES[i] - DIFF_ANGLES[j]) ** gamma
    return a


def test_mutual_knn_affinity_hand_computed() -> None:
    got = mutual_knn_affinity(gram(at_angles(DIFF_ANGLES)), k=2, gamma=3.0)
    np.testing.assert_allclose(got, hand_graph(3.0), atol=1e-12)


def test_diffusion_two_nodes_closed_form() -> None:
    # nodes at 0 and 5 deg are mutual nearest; the one at 20 deg's nearest (5 deg) prefers 0 deg: no edge.
    # S = [[0, 1], [1, 0]] on the pair, so f = (I - alpha S)^-1 e0 = [1, alpha] / (1 - alpha^2), and 0 for
    # the unreachable node
    got = diffusion_scores(gram(at_angles([0.0, 5.0, 20.0])), k=1, gamma=3.0, alpha=0.5)
    np.testing.assert_allclose(got, [4 / 3, 2 / 3, 0.0], atol=1e-9)


def test_diffusion_scores_follow_the_manifold() -> None:
    alpha = 0.99
    a = hand_graph(3.0)
    d = a.sum(axis=1)
    inv = np.where(d > 0, 1 / np.sqrt(np.where(d > 0, d, 1)), 0)
    want = np.linalg.solve(np.eye(5) - alpha * inv[:, None] * a * inv[None, :], np.eye(5)[0])
    got = diffusion_scores(gram(at_angles(DIFF_ANGLES)), k=2, gamma=3.0, alpha=alpha, max_iter=20)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # by similarity q's list is c1, x, c2, y; diffusion reaches c2 through c1 and puts it above x; y is cut off
    assert np.argsort(-got[1:], kind="stable").tolist() == [0, 1, 2, 3]
    assert got[4] == 0.0


def test_diffusion_rerank() -> None:
    points = at_angles(DIFF_ANGLES).astype(np.float32)
    query, db = points[:1], points[1:]  # db: c1, c2, x, y
    ranked = np.array([[0, 2, 1, 3]])  # by similarity
    np.testing.assert_array_equal(diffusion_rerank(query, db, ranked, 4, 2, 3.0, 0.99), [[0, 1, 2, 3]])


def test_conjugate_gradient_hand_computed() -> None:
    matrix, rhs = np.array([[4.0, 1.0], [1.0, 3.0]]), np.array([1.0, 2.0])
    np.testing.assert_allclose(conjugate_gradient(matrix, rhs, max_iter=2), [1 / 11, 7 / 11], atol=1e-12)
    # one step: x = (r.r / r.Ar) r from x = 0, r = b: 5/20 b
    np.testing.assert_allclose(conjugate_gradient(matrix, rhs, max_iter=1), [0.25, 0.5], atol=1e-12)
    with pytest.raises(ValueError, match="positive definite"):
        conjugate_gradient(-np.eye(2), rhs)
    with pytest.raises(ValueError, match="rhs"):
        conjugate_gradient(matrix, np.ones(3))


def test_diffusion_bad_input() -> None:
    with pytest.raises(ValueError, match="alpha"):
        diffusion_scores(np.eye(3), 1, 3.0, 1.0)
    with pytest.raises(ValueError, match="gamma"):
        mutual_knn_affinity(np.eye(3), 1, 0.0)
    with pytest.raises(ValueError, match="source"):
        diffusion_scores(np.eye(3), 1, 3.0, 0.5, source=3)


# ---------------------------------------------------------------------------------------------------------------
# SuperGlobal refinement

# In 3-d, query (1, 0, 0). a and b are equally similar to it (0.5); a's nearest other result a' points at the
# query, b's nearest b' away from it. Candidates in list order: a', b, a, b'.
S3 = HALF_SQRT3
A_PRIME, B, A, B_PRIME = (
    np.array([S3, 0.5, 0.0]),
    np.array([0.5, 0.0, S3]),
    np.array([0.5, S3, 0.0]),
    np.array([0.0, 0.0, 1.0]),
)
SG_QUERY = np.array([1.0, 0.0, 0.0])


def sg_candidates() -> np.ndarray:
    return np.stack([A_PRIME, B, A, B_PRIME])


def test_superglobal_refine_hand_computed() -> None:
    # k = 2, beta = 1: each candidate averaged with its nearest other, weighted by that similarity (S3 each)
    got = superglobal_refine(sg_candidates(), k=2, beta=1.0)
    want = np.stack([A_PRIME + S3 * A, B + S3 * B_PRIME, A + S3 * A_PRIME, B_PRIME + S3 * B]) / (1 + S3)
    np.testing.assert_allclose(got, want, atol=1e-12)
    # k = 1 or beta = 0: unchanged
    np.testing.assert_allclose(superglobal_refine(sg_candidates(), 1, 1.0), sg_candidates(), atol=1e-12)
    np.testing.assert_allclose(superglobal_refine(sg_candidates(), 3, 0.0), sg_candidates(), atol=1e-12)


def test_superglobal_scores_hand_computed() -> None:
    s1 = np.array([1.5 * S3, 0.5, 1.25, 0.5 * S3]) / (1 + S3)  # q . refined (first components)
    got = superglobal_scores(SG_QUERY, sg_candidates(), k=2, beta=1.0, expand_query=False)
    np.testing.assert_allclose(got, s1, atol=1e-12)
    # the expanded query: element-wise max of the two best refined (a' and a) = (1.5 S3, 1.5 S3, 0) / (1 + S3)
    expanded = np.array([1.5 * S3, 1.5 * S3, 0.0]) / (1 + S3)
    refined = np.stack([(1.5 * S3, 1.25, 0), (0.5, 0, 2 * S3), (1.25, 1.5 * S3, 0), (S3 / 2, 0, 1.75)]) / (
        1 + S3
    )
    got_qe = superglobal_scores(SG_QUERY, sg_candidates(), k=2, beta=1.0, expand_query=True)
    np.testing.assert_allclose(got_qe, (s1 + refined @ expanded) / 2, atol=1e-12)


def test_superglobal_rerank_lifts_the_candidate_with_good_neighbours() -> None:
    # raw similarities 0.866, 0.5, 0.5, 0: b and a tie and keep list order; refined, a moves above b
    ranked = np.array([[0, 1, 2, 3]])
    got = superglobal_rerank(SG_QUERY[None, :], sg_candidates(), ranked, 4, k=2, beta=1.0)
    np.testing.assert_array_equal(got, [[0, 2, 1, 3]])


def test_superglobal_bad_input() -> None:
    with pytest.raises(ValueError, match="beta"):
        superglobal_refine(sg_candidates(), 2, -1.0)
    with pytest.raises(ValueError, match="query"):
        superglobal_scores(np.ones(2), sg_candidates(), 2, 1.0)


# ---------------------------------------------------------------------------------------------------------------
# wiring: run_retrieval and the config


@pytest.mark.parametrize(
    ("graph", "angles_or_points", "want"),
    [
        ("k_reciprocal", list(KR_ANGLES.values()), [0, 1, 2, 3, 4]),  # z1, z2, x, x1, x2
        ("diffusion", DIFF_ANGLES, [0, 1, 2, 3]),  # c1, c2, x, y
        ("superglobal", None, [0, 2, 1, 3]),  # a', a, b, b'
    ],
)
def test_run_retrieval_applies_the_graph_step(
    graph: str, angles_or_points: list[float] | None, want: list[int]
) -> None:
    if angles_or_points is None:
        query, db = SG_QUERY[None, :].astype(np.float32), sg_candidates().astype(np.float32)
    else:
        points = at_angles(angles_or_points).astype(np.float32)
        query, db = points[:1], points[1:]
    cfg = replace(
        NOTHING, graph=graph, graph_top=len(db), kr_k1=2, kr_k2=1, diffusion_k=2, diffusion_alpha=0.99,
        superglobal_k=2, superglobal_beta=1.0, superglobal_qe=False,
    )  # fmt: skip
    result = run_retrieval(query, db, cfg, top=len(db), index_cfg=FLAT)
    np.testing.assert_array_equal(result.ranked, [want])
    assert graph in result.seconds
    # off by default: today's order by similarity
    plain = run_retrieval(query, db, NOTHING, top=len(db), index_cfg=FLAT)
    assert "k_reciprocal" not in plain.seconds and plain.ranked.shape == (1, len(db))


def test_defaults_are_the_ablation_choice_in_code_and_params() -> None:
    # benchmarks/rerank_ablation.py's rule chose adaptive DBA/alpha-QE (at most 10, ratio 0.8), no graph step
    from pathlib import Path

    params = Path(__file__).resolve().parents[2] / "params.yaml"
    for cfg in (load_config(None).rerank, load_config(params).rerank):
        assert cfg.adaptive_n and (cfg.dba_n, cfg.qe_n, cfg.adaptive_ratio) == (10, 10, 0.8)
        assert cfg.graph == "none"


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("rerank.graph=pagerank", "graph"),
        ("rerank.diffusion_alpha=1.0", "diffusion_alpha"),
        ("rerank.kr_lambda=2", "kr_lambda"),
        ("rerank.adaptive_ratio=-0.1", "adaptive_ratio"),
        ("rerank.graph_top=0", "graph_top"),
    ],
)
def test_config_rejects_bad_values(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        load_config(None, [override])
