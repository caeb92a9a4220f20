"""Spatial verification: the matcher on hand-built descriptors, MAGSAC on synthetic point sets, the one store
verifier (order- and position-independent inliers, worker-side stores, pre-fit rejection)."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torch

from landmark.cleaning.verify import (
    FeatureMemory,
    StoreFeatures,
    StoreVerifier,
    features_key,
    fit_inliers,
    inlier_counts,
    match_descriptors,
    match_many,
    pair_seed,
    products,
    quantize,
    run_pairs,
    sampson_error,
    verify_pairs,
)
from landmark.config import VerifyConfig
from landmark.features.local import LocalFeatures
from landmark.features.local_store import LocalFeatureWriter, LocalStoreError
from landmark.retrieval.rerank import Verifier


def unit(*rows: list[float]) -> np.ndarray:
    x = np.array(rows, np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# Image 1 rows: 0 is close to B0 only; 1 sits between B1 and B2 (ambiguous); 2 is close to B0 too (loses the
# mutual check to row 0); 3 is far from everything.
A = unit([1, 0, 0, 0], [0, 1, 0.9, 0], [0.8, 0, 0, 0.6], [0, 0, 0, 1])
B = unit([1, 0, 0, 0.05], [0, 1, 0, 0], [0, 0, 1, 0], [-1, 0, 0, 0])


def test_matcher_plain_nearest_neighbour() -> None:
    m = match_descriptors(A, B)
    np.testing.assert_array_equal(m, [[0, 0], [1, 1], [2, 0], [3, 0]])


def test_matcher_ratio_test_drops_ambiguous() -> None:
    m = match_descriptors(A, B, ratio=0.8)
    # row 1: d1/d2 ~ 0.95 (ambiguous); row 3: d(0,0,0,1 -> B0) ~ 1.38 vs 1.41 to B1: ambiguous
    np.testing.assert_array_equal(m, [[0, 0], [2, 0]])


def test_matcher_mutual_check_keeps_best_of_column() -> None:
    m = match_descriptors(A, B, mutual=True)
    # B0's nearest is row 0, so rows 2 and 3 (also pointing at B0) go; B1's nearest is row 1.
    np.testing.assert_array_equal(m, [[0, 0], [1, 1]])


def test_matcher_distance_threshold() -> None:
    # distances to the nearest: row 0 ~ 0.05, row 1 ~ 0.72, row 2 ~ 0.59, row 3 ~ 1.38
    m = match_descriptors(A, B, max_distance=0.69)
    np.testing.assert_array_equal(m, [[0, 0], [2, 0]])
    assert len(match_descriptors(A, B, max_distance=0.01)) == 0


def test_matcher_single_candidate_and_empty() -> None:
    m = match_descriptors(A, B[:1], ratio=0.5)  # no second neighbour: the ratio test cannot apply
    np.testing.assert_array_equal(m[:, 1], [0, 0, 0, 0])
    assert match_descriptors(A[:0], B).shape == (0, 2)
    assert match_descriptors(A, B[:0]).shape == (0, 2)


def test_match_many_equals_pairs_alone() -> None:
    rng = np.random.default_rng(4)
    partners = [B, B[:1], B[:0], unit(*rng.normal(size=(7, 4)).tolist())]
    for kwargs in ({}, {"ratio": 0.8, "mutual": True}, {"mutual": True, "max_distance": 0.7}):
        together = match_many(A, partners, **kwargs)  # type: ignore[arg-type]
        assert len(together) == 4
        for got, b in zip(together, partners, strict=True):
            np.testing.assert_array_equal(got, match_descriptors(A, b, **kwargs))  # type: ignore[arg-type]
    assert match_many(A, []) == []
    with pytest.raises(ValueError, match=r"desc2\[1\] must have shape"):
        match_many(A, [B, B[0]])


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [({"ratio": 0.0}, "0.0"), ({"ratio": 1.5}, "1.5"), ({"max_distance": 3.0}, "3.0")],
)
def test_matcher_bad_parameters(kwargs: dict[str, float], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        match_descriptors(A, B, **kwargs)  # type: ignore[arg-type]


def test_matcher_bad_shapes() -> None:
    with pytest.raises(ValueError, match="differ: 4 vs 3"):
        match_descriptors(A, B[:, :3])
    with pytest.raises(ValueError, match=r"\(4,\)"):
        match_descriptors(A[0], B)


def homography_points(
    n_in: int, n_out: int, seed: int, noise: float = 0.3
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points mapped by a known homography (plus noise) followed by uniform outliers; also the truth mask."""
    rng = np.random.default_rng(seed)
    H = np.array([[1.1, 0.05, 20.0], [-0.04, 0.95, -10.0], [2e-4, -1e-4, 1.0]])
    p1 = rng.uniform(0, 640, (n_in + n_out, 2))
    h = np.hstack([p1, np.ones((len(p1), 1))]) @ H.T
    p2 = h[:, :2] / h[:, 2:] + rng.normal(0, noise, (len(p1), 2))
    p2[n_in:] = rng.uniform(0, 640, (n_out, 2))
    truth = np.arange(len(p1)) < n_in
    return p1, p2, truth


@pytest.mark.parametrize("score", ["msac", "magsac"])
def test_fit_recovers_homography_inliers_deterministically(score: Literal["msac", "magsac"]) -> None:
    p1, p2, truth = homography_points(60, 90, seed=3)
    config = VerifyConfig(model="homography", ransac_threshold=3.0, score=score)
    mask, model = fit_inliers(p1, p2, config, rng_seed=7)
    assert model is not None
    assert (mask & truth).sum() >= 57  # nearly all true inliers
    assert (mask & ~truth).sum() <= 2  # an outlier may land near the true map by chance
    again, _ = fit_inliers(p1, p2, config, rng_seed=7)
    np.testing.assert_array_equal(mask, again)


def test_msac_inliers_lie_within_the_threshold() -> None:
    p1, p2, truth = homography_points(60, 90, seed=4, noise=1.0)
    mask, model = fit_inliers(p1, p2, VerifyConfig(model="homography", ransac_threshold=3.0), rng_seed=1)
    assert model is not None and (mask & truth).sum() >= 55
    h = np.hstack([p1, np.ones((len(p1), 1))]) @ model.T
    residual = np.linalg.norm(h[:, :2] / h[:, 2:] - p2, axis=1)
    assert residual[mask].max() <= 3.0 + 1e-3  # MSAC's inliers: within the threshold of the returned model


def test_fit_honours_the_seed() -> None:
    # Few iterations on a hard set: the sampled hypotheses (so the result) depend on the seed, and only on it.
    p1, p2, _ = homography_points(40, 100, seed=3, noise=2.0)
    config = VerifyConfig(model="homography", ransac_threshold=3.0, max_iters=20)
    masks = [fit_inliers(p1, p2, config, rng_seed=s)[0] for s in range(8)]
    assert len({m.tobytes() for m in masks}) > 1
    for s in (0, 5):
        np.testing.assert_array_equal(fit_inliers(p1, p2, config, rng_seed=s)[0], masks[s])


def test_fit_affine_too_few_points() -> None:
    mask, model = fit_inliers(np.zeros((2, 2)), np.zeros((2, 2)), VerifyConfig())
    assert model is None and mask.shape == (2,) and not mask.any()
    with pytest.raises(ValueError, match=r"\(3, 2\) and \(2, 2\)"):
        fit_inliers(np.zeros((3, 2)), np.zeros((2, 2)), VerifyConfig())


def features_for(points: np.ndarray, descriptors: np.ndarray) -> LocalFeatures:
    n = len(points)
    return LocalFeatures(points, np.ones(n), np.ones(n), descriptors)


def synthetic_pair(seed: int, n_in: int = 50, n_out: int = 80) -> tuple[LocalFeatures, LocalFeatures]:
    """Matching descriptors for the inliers, unrelated ones for the outliers."""
    p1, p2, _ = homography_points(n_in, n_out, seed)
    rng = np.random.default_rng(seed + 100)
    d1 = rng.normal(size=(len(p1), 32)).astype(np.float32)
    d2 = d1 + 0.05 * rng.normal(size=d1.shape).astype(np.float32)
    d2[n_in:] = rng.normal(size=(n_out, 32))
    norm = np.linalg.norm
    return features_for(p1, d1 / norm(d1, axis=1, keepdims=True)), features_for(
        p2, d2 / norm(d2, axis=1, keepdims=True)
    )


def test_verify_pairs_counts_and_independence_from_workers() -> None:
    same = [synthetic_pair(s) for s in range(3)]
    rng = np.random.default_rng(9)
    unrelated = [
        (a, features_for(rng.uniform(0, 640, (len(b), 2)), b.descriptors[rng.permutation(len(b))]))
        for a, b in same
    ]
    config = VerifyConfig(model="homography", ransac_threshold=3.0, min_inliers=8)
    counts = inlier_counts(verify_pairs(same + unrelated, config))
    assert counts.dtype == np.int64 and counts.shape == (6,)
    assert (counts[:3] >= 45).all()
    assert (counts[3:] == 0).all()  # below min_inliers: reported as 0
    parallel = inlier_counts(verify_pairs(same + unrelated, dataclasses.replace(config, workers=2)))
    np.testing.assert_array_equal(counts, parallel)
    details = verify_pairs(same[:1], config)
    assert details[0].matches.shape[1] == 2 and details[0].inliers.shape == (len(details[0].matches),)
    assert details[0].num_inliers == counts[0]


def test_pair_seed_is_unordered_stable_and_distinct() -> None:
    assert pair_seed(0, "a", "b") == pair_seed(0, "b", "a") == pair_seed(0, "a", "b")
    assert len({pair_seed(0, "q", f"c{k}") for k in range(100)}) == 100
    assert pair_seed(0, "a", "b") != pair_seed(1, "a", "b")
    assert pair_seed(0, "ab", "c") != pair_seed(0, "a", "bc")  # the keys are separated, not concatenated
    assert all(0 <= pair_seed(s, "x", "y") < 2**31 for s in range(20))


def _store(root: Path, features: dict[str, LocalFeatures]) -> Path:
    with LocalFeatureWriter(root, dim=32, location_dtype="float16") as writer:
        for image_id, feats in features.items():
            writer.add(image_id, feats)
    return root


def _world(tmp_path: Path) -> tuple[Path, VerifyConfig]:
    """Three true pairs (q_s, c_s) and their shuffled versions, with few iterations so seeds matter."""
    feats: dict[str, LocalFeatures] = {}
    for s in range(3):
        feats[f"q{s}"], feats[f"c{s}"] = synthetic_pair(s, n_in=30, n_out=60)
    return _store(tmp_path / "store", feats), VerifyConfig(
        model="homography", ransac_threshold=3.0, max_iters=15
    )


def test_inliers_do_not_depend_on_order_position_or_swap(tmp_path: Path) -> None:
    root, config = _world(tmp_path)
    verifier = StoreVerifier(root, config)
    candidates = ["c0", "c1", "c2", "q1"]
    counts = verifier("q0", candidates)
    assert counts[0] >= 20 and counts.dtype == np.int64
    # reordered candidates: the same count per candidate
    np.testing.assert_array_equal(verifier("q0", candidates[::-1]), counts[::-1])
    np.testing.assert_array_equal(verifier("q0", ["c0"]), counts[:1])
    # the swapped pair, and the pair at another position in a longer list of pairs
    pairs = [("q0", c) for c in candidates]
    swapped = [(c, "q0") for c in candidates]
    np.testing.assert_array_equal(verifier.pair_counts(swapped), counts)
    np.testing.assert_array_equal(verifier.pair_counts([("c1", "q1"), *pairs[::-1]])[1:], counts[::-1])
    # workers change nothing
    parallel = StoreVerifier(root, dataclasses.replace(config, workers=2))
    np.testing.assert_array_equal(parallel.pair_counts(pairs * 3), np.tile(counts, 3))


def test_detailed_results_come_back_in_the_callers_orientation() -> None:
    f1, f2 = synthetic_pair(5, n_in=40, n_out=20)
    config = VerifyConfig(model="homography", ransac_threshold=3.0)
    forward, backward = verify_pairs([(f1, f2), (f2, f1)], config)
    assert forward.num_inliers == backward.num_inliers >= 30
    np.testing.assert_array_equal(
        backward.matches, forward.matches[:, ::-1][np.argsort(forward.matches[:, 1])]
    )
    assert np.all(np.diff(backward.matches[:, 0]) >= 0)
    # the model maps image 1 onto image 2 in each orientation: applying both gives the identity
    assert forward.model is not None and backward.model is not None
    both = backward.model @ forward.model
    np.testing.assert_allclose(both / both[2, 2], np.eye(3), atol=1e-6)
    # and a bare pair's result does not depend on what else is verified with it
    alone = inlier_counts(verify_pairs([(f2, f1)], config))
    assert alone[0] == backward.num_inliers
    assert features_key(f1) != features_key(f2) and features_key(f1) == features_key(
        synthetic_pair(5, 40, 20)[0]
    )


def test_pairs_below_reject_below_are_not_fitted(tmp_path: Path) -> None:
    root, config = _world(tmp_path)
    full = run_pairs([("q0", "c0"), ("q0", "c1")], StoreFeatures([root]), None, config, detailed=True)
    n_matches = [len(d.matches) for d in full]
    assert n_matches[0] > n_matches[1]
    cut = run_pairs(
        [("q0", "c0"), ("q0", "c1")], StoreFeatures([root]), None, config, detailed=True,
        reject_below=n_matches[1] + 1,
    )  # fmt: skip
    assert cut[0].num_inliers == full[0].num_inliers  # enough matches: fitted as before
    assert cut[1].model is None and cut[1].num_inliers == 0  # too few to ever reach the bar: no fit
    with pytest.raises(ValueError, match="reject_below must be >= 0, got -1"):
        StoreVerifier(root, config, reject_below=-1)


def test_store_source_pickles_as_paths_and_memory_as_features(tmp_path: Path) -> None:
    root, _ = _world(tmp_path)
    source = StoreFeatures([root])
    blob = pickle.dumps(source)
    assert len(blob) < 1000  # the path, not the arrays
    again = pickle.loads(blob)
    np.testing.assert_array_equal(again.load("q1").descriptors, source.load("q1").descriptors)
    assert "q1" in again and "nope" not in again
    with pytest.raises(LocalStoreError, match="'nope'"):
        again.load("nope")
    with pytest.raises(LocalStoreError, match="in memory for image id 'x'"):
        FeatureMemory({}).load("x")
    with pytest.raises(ValueError, match="at least one"):
        StoreFeatures([])


def test_query_outside_the_stores_is_keyed_by_content(tmp_path: Path) -> None:
    root, config = _world(tmp_path)
    verifier = StoreVerifier(root, config)
    query = StoreFeatures([root]).load("q2")
    counts = verifier.verify_query(query, ["c2", "c0"])
    np.testing.assert_array_equal(verifier.verify_query(query, ["c0", "c2"]), counts[::-1])
    assert counts[0] >= 20


def test_sampson_error_exact_values() -> None:
    # Pure horizontal translation: F = [t]x with t = (1, 0, 0); epipolar lines are rows, error = dy^2 / 2.
    F = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    p1 = np.array([[10.0, 20.0], [5.0, 5.0]])
    p2 = np.array([[30.0, 20.0], [7.0, 7.0]])
    np.testing.assert_allclose(sampson_error(F, p1, p2), [0.0, 2.0])


def test_store_verifier_satisfies_protocol(tmp_path: Path) -> None:
    f1, f2 = synthetic_pair(1)
    with LocalFeatureWriter(tmp_path, dim=32, location_dtype="float16") as writer:
        writer.add("q", f1)
        writer.add("c", f2)
        writer.add("other", synthetic_pair(2)[1])
    verifier: Verifier = StoreVerifier(tmp_path, VerifyConfig(model="homography", min_inliers=8))
    counts = verifier("q", ["c", "other"])
    assert counts.shape == (2,) and counts[0] >= 40 and counts[1] == 0
    assert verifier("q", []).shape == (0,)
    with pytest.raises(LocalStoreError, match="'missing'"):
        verifier("q", ["missing"])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ratio", 0.0),
        ("max_distance", 2.5),
        ("ransac_threshold", 0.0),
        ("confidence", 1.0),
        ("workers", -1),
        ("score", "lmeds"),
    ],
)
def test_verify_config_rejects_bad_values(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=str(value)):
        VerifyConfig(**{field: value})  # type: ignore[arg-type]


def test_quantized_products_are_exact_integer_sums() -> None:
    rng = np.random.default_rng(12)
    a, b = unit(*rng.normal(size=(9, 16)).tolist()), unit(*rng.normal(size=(5, 16)).tolist())
    qa, qb = quantize(a), quantize(b)
    codes_a, codes_b = qa.codes.numpy().astype(np.int64), qb.codes.numpy().astype(np.int64)
    assert np.abs(codes_a).max() == 127 and np.abs(codes_b).max() == 127  # each set uses the full range
    np.testing.assert_array_equal(products(qa, qb), codes_a @ codes_b.T)
    # the ranking follows the float cosines wherever they are not within the quantisation of each other
    scale = np.abs(a).max() * np.abs(b).max() / 127**2
    np.testing.assert_allclose(products(qa, qb) * scale, a @ b.T, atol=0.05)
    assert quantize(np.zeros((0, 16), np.float32)).codes.shape == (0, 16)
    assert (quantize(np.zeros((2, 16), np.float32)).codes.numpy() == 0).all()


def test_quantize_rounds_half_to_even_and_products_reuse_scratch() -> None:
    # codes are round(x * 127 / max|x|) with ties to even; here max|x| = 127, so the codes are x rounded
    x = np.array([[127.0, 0.5, 1.5, 2.5, -0.5, -63.7, 10.2]], np.float32)
    np.testing.assert_array_equal(quantize(x).codes.numpy(), [[127, 0, 2, 2, 0, -64, 10]])
    y = np.array([[1.0, 0.5, 0.75, -0.25]], np.float32)  # 63.5 -> 64 (even), 95.25 -> 95, -31.75 -> -32
    np.testing.assert_array_equal(quantize(y).codes.numpy(), [[127, 64, 95, -32]])
    rng = np.random.default_rng(3)
    a, b = quantize(rng.normal(size=(7, 16))), quantize(rng.normal(size=(4, 16)))
    scratch = torch.full((100,), -1, dtype=torch.int32)
    block = products(a, b, scratch)
    np.testing.assert_array_equal(block, products(a, b))
    assert np.shares_memory(block, scratch.numpy())  # a view of the scratch, no new allocation
    # one dimension: torch's int8 kernel is wrong there, the exact integer product is used instead
    c, d = quantize(np.array([[1.0], [-0.5], [0.25]])), quantize(np.array([[0.5], [-1.0]]))
    expected = np.array([[127 * 64, -127 * 127], [-64 * 64, 64 * 127], [32 * 64, -32 * 127]])
    np.testing.assert_array_equal(products(c, d), expected)
    np.testing.assert_array_equal(products(c, d, scratch), expected)
