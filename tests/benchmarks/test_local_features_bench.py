"""The pair protocol of benchmarks/local_features.py: photo splits and pose-classed pairs on hand-built codes."""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest
from bench_loader import load_benchmark

from landmark.data.imc_protocol import EASY, HARD, JUNK


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_benchmark("local_features")


def test_split_photos_is_disjoint_seeded_and_bounded(bench: ModuleType) -> None:
    evaluation, fit = bench.split_photos(10, 4, 3, seed=5)
    assert len(evaluation) == 4 and len(fit) == 3 and not set(evaluation) & set(fit)
    assert list(evaluation) == sorted(evaluation) and set(evaluation) | set(fit) <= set(range(10))
    again = bench.split_photos(10, 4, 3, seed=5)
    np.testing.assert_array_equal(again[0], evaluation)
    np.testing.assert_array_equal(again[1], fit)
    with pytest.raises(ValueError, match="4 \\+ 7 photos"):
        bench.split_photos(10, 4, 7, seed=0)


def test_scene_pairs_take_covisible_positives_and_junk_negatives(bench: ModuleType) -> None:
    codes = np.full((5, 5), -1, np.int8)
    for (i, j), code in {(0, 1): EASY, (0, 2): HARD, (1, 2): JUNK, (0, 3): JUNK, (1, 3): EASY, (2, 3): JUNK,
                         (0, 4): EASY, (1, 4): EASY, (2, 4): EASY, (3, 4): EASY}.items():  # fmt: skip
        codes[i, j] = codes[j, i] = code
    pairs, labels = bench.scene_pairs(codes, np.array([0, 1, 2, 3]), positives=10, junk=2, seed=0)
    # photo 4 is not among the indices: its pairs never appear; all 3 positives, 2 of the 3 junk pairs
    assert [tuple(p) for p in pairs[labels]] == [(0, 1), (0, 2), (1, 3)]
    assert labels.tolist() == [True, True, True, False, False]
    assert {tuple(p) for p in pairs[~labels]} < {(1, 2), (0, 3), (2, 3)}
    fewer, fewer_labels = bench.scene_pairs(codes, np.array([0, 1, 2, 3]), positives=1, junk=0, seed=0)
    assert len(fewer) == 1 and fewer_labels.tolist() == [True]
