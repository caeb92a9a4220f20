"""Size templates, epoch plans, rank sharding, the LR schedule and augmentation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from landmark.training.augment import augment
from landmark.training.sampling import (
    assign_templates,
    epoch_batches,
    epoch_order,
    shard_for_rank,
    size_templates,
    steps_per_epoch,
)
from landmark.training.schedule import lr_at


def test_size_templates_keep_long_side() -> None:
    sizes = size_templates(224)
    assert sizes == [(224, 128), (224, 168), (224, 224), (168, 224), (128, 224)]


def test_assign_templates_by_aspect() -> None:
    assert assign_templates([640, 480, 500, 1920, 300], [480, 640, 500, 1080, 600]).tolist() == [
        3,
        1,
        2,
        4,
        0,
    ]
    with pytest.raises(ValueError):
        assign_templates([0], [10])


def test_epoch_batches_are_deterministic_and_within_template() -> None:
    labels = np.arange(40) % 5
    templates = np.array([0, 2] * 20)
    sizes = size_templates(64)
    a = epoch_batches(labels, templates, sizes, batch_size=6, epoch=1, seed=3)
    b = epoch_batches(labels, templates, sizes, batch_size=6, epoch=1, seed=3)
    c = epoch_batches(labels, templates, sizes, batch_size=6, epoch=2, seed=3)
    assert a == b and a != c
    for batch in a:
        assert len({(s.height, s.width) for s in batch}) == 1
        assert all(templates[s.item] in (0, 2) for s in batch)
    # 20 per template: batches of 6, 6, 6, 2 -> every item appears exactly once
    assert sorted(s.item for batch in a for s in batch) == list(range(40))


def test_single_leftover_is_dropped() -> None:
    batches = epoch_batches(
        np.zeros(7, int), np.zeros(7, int), size_templates(64), batch_size=3, epoch=0, seed=0
    )
    assert [len(b) for b in batches] == [3, 3]


def test_balanced_sampler_evens_out_classes() -> None:
    labels = np.array([0] * 90 + [1] * 10)
    counts = np.bincount(labels[epoch_order(labels, 0, 0, "balanced")], minlength=2)
    assert 35 <= counts[1] <= 65  # plain sampling would give exactly 10
    assert np.bincount(labels[epoch_order(labels, 0, 0, "plain")]).tolist() == [90, 10]


def test_shard_for_rank_gives_equal_disjoint_shares() -> None:
    batches = [[i] for i in range(11)]
    shards = [shard_for_rank(batches, r, 2, accumulation=2) for r in range(2)]  # type: ignore[arg-type]
    assert [len(s) for s in shards] == [4, 4]
    assert not set(map(tuple, shards[0])) & set(map(tuple, shards[1]))
    assert steps_per_epoch(11, 2, 2) == 2
    with pytest.raises(ValueError):
        shard_for_rank(batches, 2, 2, 1)  # type: ignore[arg-type]


def test_lr_schedule_warmup_then_cosine() -> None:
    assert lr_at(0, 100, 1.0, 10) == pytest.approx(0.1)
    assert lr_at(9, 100, 1.0, 10) == pytest.approx(1.0)
    assert lr_at(10, 100, 1.0, 10) == pytest.approx(1.0)
    assert lr_at(99, 100, 1.0, 10) == pytest.approx(0.01)
    mid = lr_at(10 + 89 // 2, 100, 1.0, 10)
    assert 0.45 < mid < 0.56
    values = [lr_at(s, 100, 1.0, 10) for s in range(10, 100)]
    assert all(x >= y for x, y in itertools.pairwise(values))


@pytest.mark.parametrize("mode", ["none", "soft", "hard"])
def test_augment_shape_and_determinism(mode: str) -> None:
    image = np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    a = augment(image, 96, 128, mode, np.random.default_rng(5))  # type: ignore[arg-type]
    b = augment(image, 96, 128, mode, np.random.default_rng(5))  # type: ignore[arg-type]
    assert a.shape == (96, 128, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)


def test_augment_none_is_a_plain_resize() -> None:
    image = np.zeros((100, 200, 3), np.uint8)
    image[:, 100:] = 255
    out = augment(image, 50, 100, "none", np.random.default_rng(0))
    assert out[:, :45].max() == 0 and out[:, 55:].min() == 255
    with pytest.raises(ValueError, match="unknown augmentation"):
        augment(image, 50, 100, "wild", np.random.default_rng(0))  # type: ignore[arg-type]
