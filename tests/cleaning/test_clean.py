"""Cleaning on hand-built cases: exact kept sets, the class drop, pair deduplication, verification best first
with early stopping (same decisions as verifying everything), bad input, the store verifier on synthetic
geometry."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from landmark.cleaning.clean import (
    KEPT,
    NO_LABEL,
    NOT_VERIFIED,
    SMALL_CLASS,
    UNVERIFIED,
    clean_train_set,
    drop_small_classes,
    knn_chunks,
    same_label_candidates,
    unique_pairs,
    unit_rows,
    verify_in_rank_order,
)
from landmark.cleaning.verify import StoreVerifier
from landmark.config import CleanConfig, ConfigError, VerifyConfig, load_config
from landmark.features.local import LocalFeatures
from landmark.features.local_store import LocalFeatureWriter, LocalStoreError
from landmark.ops.quality import CLASS_REPORT_COLUMNS


class TableVerifier:
    """Inlier counts from a fixed table of unordered pairs; records every pair it is asked about."""

    def __init__(self, table: dict[frozenset[str], int]) -> None:
        self.table = table
        self.asked: list[frozenset[str]] = []

    def __call__(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        keys = [frozenset(p) for p in pairs]
        self.asked.extend(keys)
        return np.array([self.table.get(k, 0) for k in keys], np.int64)


def angle(deg: float) -> list[float]:
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


# Class 0 (a0, a1, a2) near 0 degrees, class 1 (b0, b1) near 90, a lone class-5 image, one unlabelled image.
IDS = ["a0", "a1", "a2", "b0", "b1", "c0", "n0"]
LABELS = [0, 0, 0, 1, 1, 5, -1]
DESC = (
    np.array([angle(0), angle(10), angle(30), angle(90), angle(95), angle(200), angle(300)], np.float32) * 3
)
TABLE = {
    frozenset({"a0", "a1"}): 30,
    frozenset({"a0", "a2"}): 5,
    frozenset({"a1", "a2"}): 3,
    frozenset({"b0", "b1"}): 4,
}
CFG = CleanConfig(k=10, max_same_label=10, min_inliers=10, min_verified=1, min_class_images=2, chunk_size=2)


def reasons(result_decisions: object) -> dict[str, str]:
    frame = result_decisions
    return dict(zip(frame["image_id"], frame["reason"], strict=True))  # type: ignore[index]


def test_kept_set_and_reasons() -> None:
    verifier = TableVerifier(TABLE)
    result = clean_train_set(IDS, LABELS, DESC, verifier, CFG)
    assert reasons(result.decisions) == {
        "a0": KEPT, "a1": KEPT, "a2": UNVERIFIED, "b0": UNVERIFIED, "b1": UNVERIFIED,
        "c0": UNVERIFIED, "n0": NO_LABEL,
    }  # fmt: skip
    assert result.kept_ids == ["a0", "a1"]
    d = result.decisions.set_index("image_id")
    assert d["verified"].to_dict() == {"a0": 1, "a1": 1, "a2": 0, "b0": 0, "b1": 0, "c0": 0, "n0": 0}
    assert d["candidates"].to_dict() == {"a0": 2, "a1": 2, "a2": 2, "b0": 1, "b1": 1, "c0": 0, "n0": 0}
    assert d["max_inliers"].to_dict() == {"a0": 30, "a1": 30, "a2": 5, "b0": 4, "b1": 4, "c0": 0, "n0": 0}


def test_each_unordered_pair_verified_once() -> None:
    verifier = TableVerifier(TABLE)
    result = clean_train_set(IDS, LABELS, DESC, verifier, CFG)
    # a: 3 images x 2 same-label neighbours, b: 2 x 1 -> 8 checks, 4 distinct pairs
    assert (result.directed_pairs, result.unique_pairs, result.saved_pairs) == (8, 4, 4)
    assert sorted(map(sorted, verifier.asked)) == [["a0", "a1"], ["a0", "a2"], ["a1", "a2"], ["b0", "b1"]]


def test_verification_stops_once_an_image_has_min_verified() -> None:
    # a0 -> a1 (30) verifies both a0 and a1 in round 1, so a0-a2 is asked only for a2, after a1-a2 failed
    verifier = TableVerifier(TABLE)
    result = clean_train_set(IDS, LABELS, DESC, verifier, CFG)
    assert verifier.asked[:3] == [frozenset({"a0", "a1"}), frozenset({"a1", "a2"}), frozenset({"b0", "b1"})]
    assert verifier.asked[3:] == [frozenset({"a0", "a2"})]
    assert (result.verified_pairs, result.verify_rounds, result.skipped_pairs) == (4, 2, 0)
    # one more good neighbour for a1 and a2: nobody needs a0-a2 or a1-a2 any more
    table = {**TABLE, frozenset({"a1", "a2"}): 20}
    verifier = TableVerifier(table)
    result = clean_train_set(IDS, LABELS, DESC, verifier, CFG)
    assert sorted(map(sorted, verifier.asked)) == [["a0", "a1"], ["a1", "a2"], ["b0", "b1"]]
    assert (result.unique_pairs, result.verified_pairs, result.skipped_pairs) == (4, 3, 1)
    assert result.kept_ids == ["a0", "a1", "a2"]
    d = result.decisions.set_index("image_id")
    assert d.loc["a0", "verified"] == 1 and d.loc["a0", "max_inliers"] == 30  # a0-a2 never verified


def test_rank_order_table_marks_unverified_neighbours() -> None:
    candidates = np.array([[1, 2], [0, 2], [1, 0]])  # three images of one label, rank order
    table = {frozenset({"x", "y"}): 15, frozenset({"y", "z"}): 3, frozenset({"x", "z"}): 14}
    verifier = TableVerifier(table)
    cfg = CleanConfig(k=10, max_same_label=2, min_inliers=10, min_verified=1)
    inliers, verified, rounds = verify_in_rank_order(candidates, ["x", "y", "z"], verifier, cfg)
    # round 1: x-y (x, y done), y-z (z's first); round 2: z's next, x-z; x never needed x-z
    np.testing.assert_array_equal(inliers, [[15, 14], [15, 3], [3, 14]])
    assert (verified, rounds) == (3, 2)
    inliers, verified, _ = verify_in_rank_order(candidates, ["x", "y", "z"], TableVerifier({}), cfg)
    np.testing.assert_array_equal(inliers, np.zeros((3, 2)))  # all fail: every neighbour is verified
    table = {frozenset({"x", "y"}): 15, frozenset({"x", "z"}): 14, frozenset({"y", "z"}): 13}
    inliers, verified, rounds = verify_in_rank_order(candidates, ["x", "y", "z"], TableVerifier(table), cfg)
    assert (verified, rounds) == (2, 1) and (inliers == NOT_VERIFIED).sum() == 2  # y-z never needed


def test_an_image_that_keeps_failing_asks_for_twice_as_many_each_round() -> None:
    ids = [f"i{k}" for k in range(8)]
    candidates = np.full((8, 7), -1)
    candidates[0] = np.arange(1, 8)  # only image 0 has neighbours: all fail but the last
    verifier = TableVerifier({frozenset({"i0", "i7"}): 50})
    cfg = CleanConfig(k=10, max_same_label=7, min_inliers=10, min_verified=1)
    inliers, verified, rounds = verify_in_rank_order(candidates, ids, verifier, cfg)
    # rounds ask for 1, 2 and 4 neighbours: i1 | i2 i3 | i4 i5 i6 i7
    assert [sorted(k)[1] for k in verifier.asked] == ["i1", "i2", "i3", "i4", "i5", "i6", "i7"]
    assert (verified, rounds) == (7, 3)
    np.testing.assert_array_equal(inliers[0], [0, 0, 0, 0, 0, 0, 50])


@pytest.mark.parametrize("seed", range(6))
def test_early_stopping_keeps_the_decisions_of_verifying_everything(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 60
    ids = [f"i{k}" for k in range(n)]
    labels = rng.integers(-1, 6, n)
    desc = rng.normal(size=(n, 8)).astype(np.float32)
    table = {frozenset({a, b}): int(rng.integers(0, 25)) for a in ids for b in ids if a < b}
    for t_freq in (1, 2, 3):
        cfg = CleanConfig(k=20, max_same_label=6, min_inliers=12, min_verified=t_freq, chunk_size=7)
        lazy = TableVerifier(table)
        early = clean_train_set(ids, labels, desc, lazy, cfg)
        full = clean_train_set(ids, labels, desc, TableVerifier(table), replace(cfg, verify_all=True))
        np.testing.assert_array_equal(early.decisions["reason"], full.decisions["reason"])
        assert full.verified_pairs == full.unique_pairs >= early.verified_pairs == len(lazy.asked)
        assert len(set(lazy.asked)) == len(lazy.asked)  # every pair at most once
        assert (early.decisions["verified"] <= full.decisions["verified"]).all()


def test_max_same_label_limits_candidates_to_the_nearest() -> None:
    verifier = TableVerifier(TABLE)
    cfg = CleanConfig(k=10, max_same_label=1, min_inliers=10, min_verified=1, chunk_size=4)
    result = clean_train_set(IDS, LABELS, DESC, verifier, cfg)
    # nearest same-label: a0 -> a1, a1 -> a0 (10 deg vs 20), a2 -> a1; b0 <-> b1
    assert sorted(map(sorted, verifier.asked)) == [["a0", "a1"], ["a1", "a2"], ["b0", "b1"]]
    assert (result.directed_pairs, result.unique_pairs) == (5, 3)
    assert result.kept_ids == ["a0", "a1"]


def test_thresholds_are_inclusive() -> None:
    cfg = CleanConfig(k=10, max_same_label=10, min_inliers=5, min_verified=1)
    result = clean_train_set(IDS, LABELS, DESC, TableVerifier(TABLE), cfg)
    assert result.kept_ids == ["a0", "a1", "a2"]  # a2 has exactly 5 inliers with a0
    cfg = CleanConfig(k=10, max_same_label=10, min_inliers=5, min_verified=2)
    result = clean_train_set(IDS, LABELS, DESC, TableVerifier(TABLE), cfg)
    # only a0 has two verified neighbours; alone in its class, it goes with the class
    assert result.kept_ids == []
    assert reasons(result.decisions)["a0"] == SMALL_CLASS


def test_small_class_dropped_with_its_reason() -> None:
    cfg = CleanConfig(k=10, max_same_label=10, min_inliers=10, min_verified=1, min_class_images=3)
    result = clean_train_set(IDS, LABELS, DESC, TableVerifier(TABLE), cfg)
    got = reasons(result.decisions)
    assert got["a0"] == got["a1"] == SMALL_CLASS and got["a2"] == UNVERIFIED
    assert result.kept_ids == []
    classes = result.classes.set_index("landmark_id")
    assert list(result.classes.columns[: len(CLASS_REPORT_COLUMNS)]) == list(CLASS_REPORT_COLUMNS)
    assert classes.loc[0, ["images_before", "images_kept", "images_unverified", "images_small_class"]].tolist() == [
        3, 0, 1, 2,
    ]  # fmt: skip
    assert bool(classes.loc[0, "dropped"]) and list(classes.index) == [0, 1, 5]


def test_class_drop_reaches_a_fixed_point() -> None:
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    kept = np.array([True, True, False, True, False, True, True, True])
    after, small, rounds = drop_small_classes(labels, kept, 2)
    np.testing.assert_array_equal(after, [True, True, False, False, False, True, True, True])
    np.testing.assert_array_equal(small, [False, False, False, True, False, False, False, False])
    assert rounds == 2  # one dropping round, one round that confirms nothing changes
    again, small_again, _ = drop_small_classes(labels, after, 2)
    np.testing.assert_array_equal(again, after)
    assert not small_again.any()
    assert drop_small_classes(labels, kept, 4)[0].sum() == 0


def test_class_report_counts() -> None:
    result = clean_train_set(IDS, LABELS, DESC, TableVerifier(TABLE), CFG)
    report = result.classes.set_index("landmark_id")
    assert report["images_before"].to_dict() == {0: 3, 1: 2, 5: 1}
    assert report["images_kept"].to_dict() == {0: 2, 1: 0, 5: 0}
    assert report["kept_share"].round(4).to_dict() == {0: 0.6667, 1: 0.0, 5: 0.0}
    assert report["mean_verified"].round(4).to_dict() == {0: 0.6667, 1: 0.0, 5: 0.0}
    assert report["dropped"].to_dict() == {0: False, 1: True, 5: True}


def test_knn_excludes_self_with_duplicates_and_chunks_agree() -> None:
    x = unit_rows(np.array([angle(0), angle(0), angle(20), angle(90), angle(180)], np.float32))
    full = {s: idx for s, _, idx in knn_chunks(x, 3, chunk_size=100)}[0]
    parts = np.concatenate([idx for _, _, idx in knn_chunks(x, 3, chunk_size=2)])
    np.testing.assert_array_equal(full, parts)
    assert all(i not in row for i, row in enumerate(full))
    np.testing.assert_array_equal(full[0], [1, 2, 3])
    np.testing.assert_array_equal(full[1], [0, 2, 3])
    np.testing.assert_array_equal(full[4][:2], [3, 2])  # 90 deg away, then 160 (then one of the 180 ties)
    assert next(knn_chunks(x, 10, chunk_size=10))[2].shape == (5, 4)  # k clipped to N - 1


def test_same_label_candidates_keeps_rank_order_and_pads() -> None:
    labels = np.array([0, 1, 0, 0, 1])
    neighbours = np.array([[1, 3, 2, 4], [0, 4, 2, -1]])
    got = same_label_candidates(neighbours, labels, np.array([0, 1]), max_same_label=3)
    np.testing.assert_array_equal(got, [[3, 2, -1], [4, -1, -1]])


def test_unique_pairs_sorted() -> None:
    got = unique_pairs(np.array([[1, 2], [0, -1], [0, 1]]))
    np.testing.assert_array_equal(got, [[0, 1], [0, 2], [1, 2]])
    assert unique_pairs(np.full((3, 2), -1)).shape == (0, 2)


def test_bad_input_errors() -> None:
    verifier = TableVerifier(TABLE)
    with pytest.raises(ValueError, match="same length, got 7, 6 and 7"):
        clean_train_set(IDS, LABELS[:-1], DESC, verifier, CFG)
    with pytest.raises(ValueError, match="duplicate image id 'a0'"):
        clean_train_set(["a0", *IDS[1:-1], "a0"], LABELS, DESC, verifier, CFG)
    bad = DESC.copy()
    bad[1] = 0
    with pytest.raises(ValueError, match="row 1 is all zeros"):
        clean_train_set(IDS, LABELS, bad, verifier, CFG)
    bad[1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        clean_train_set(IDS, LABELS, bad, verifier, CFG)
    with pytest.raises(ValueError, match="returned shape"):
        clean_train_set(IDS, LABELS, DESC, lambda pairs: np.zeros(len(pairs) + 1), CFG)
    with pytest.raises(ValueError, match="negative"):
        clean_train_set(IDS, LABELS, DESC, lambda pairs: -np.ones(len(pairs)), CFG)


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ConfigError, match="max_same_label must be <= k"):
        load_config(None, ["clean.k=10", "clean.max_same_label=20"])
    with pytest.raises(ConfigError, match="min_verified must be >= 1"):
        load_config(None, ["clean.min_verified=0"])
    with pytest.raises(ConfigError, match="model must be the model directory"):
        load_config(None, ["local.backend=delf"])
    with pytest.raises(ConfigError, match=r"unknown key 'clean\.t_freq'"):
        load_config(None, ["clean.t_freq=2"])


def _affine_pair(rng: np.random.Generator, n: int) -> tuple[LocalFeatures, LocalFeatures]:
    """Image 2 = a known affine map of image 1; descriptors shared up to small noise."""
    pts = rng.uniform(10, 300, (n, 2)).astype(np.float32)
    a = np.array([[0.9, 0.1], [-0.1, 0.9]], np.float32)
    pts2 = pts @ a.T + np.array([20, 5], np.float32)
    desc = rng.normal(size=(n, 32)).astype(np.float32)
    desc2 = desc + rng.normal(scale=0.01, size=desc.shape).astype(np.float32)
    ones = np.ones(n, np.float32)
    return LocalFeatures(pts, ones, ones, desc), LocalFeatures(pts2, ones, ones, desc2)


def test_store_verifier_is_symmetric_and_batch_independent(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    f1, f2 = _affine_pair(rng, 40)
    f3 = LocalFeatures(rng.uniform(0, 300, (40, 2)), np.ones(40), np.ones(40), rng.normal(size=(40, 32)))
    with LocalFeatureWriter(tmp_path / "store", 32, location_dtype="float16") as writer:
        for image_id, feats in (("x", f1), ("y", f2), ("z", f3)):
            writer.add(image_id, feats)
    verifier = StoreVerifier(tmp_path / "store", VerifyConfig(ratio=1.0)).pair_counts
    both = verifier([("x", "y"), ("x", "z")])
    assert both[0] >= 38 and both[1] <= 5  # the true affine pair vs unrelated points
    np.testing.assert_array_equal(verifier([("y", "x")]), both[:1])
    parallel = StoreVerifier(tmp_path / "store", VerifyConfig(ratio=1.0, workers=2)).pair_counts
    np.testing.assert_array_equal(parallel([("x", "y"), ("x", "z")] * 10), np.tile(both, 10))
    with pytest.raises(LocalStoreError, match="no local features for image id 'w'"):
        verifier([("x", "w")])
