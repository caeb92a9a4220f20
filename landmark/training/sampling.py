"""Aspect-ratio-preserving batches: size templates, bucket assignment and the per-epoch batch plan.

Images are resized to one of a few size templates whose aspect ratio is closest to their own, and batches are
formed within a template, so little of any image is cropped or distorted (Yokoo et al. 2020). The plan of an
epoch is a pure function of (seed, epoch), so every process of a distributed run and a resumed run agree on it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

# width / height of the templates: portrait 9:16 and 3:4, square, landscape 4:3 and 16:9
ASPECT_RATIOS = (9 / 16, 3 / 4, 1.0, 4 / 3, 16 / 9)


@dataclass(frozen=True)
class Sample:
    """One sample of an epoch's plan: which item, at which (height, width), and its position for seeding."""

    item: int
    height: int
    width: int
    epoch: int
    position: int


def size_templates(long_side: int, multiple: int = 8) -> list[tuple[int, int]]:
    """(height, width) of every template for a long side, each side rounded to ``multiple``."""

    def rounded(x: float) -> int:
        return max(multiple, round(x / multiple) * multiple)

    return [
        (rounded(long_side / ar), long_side) if ar >= 1 else (long_side, rounded(long_side * ar))
        for ar in ASPECT_RATIOS
    ]


def assign_templates(widths: Sequence[int], heights: Sequence[int]) -> np.ndarray:
    """Index of the template whose aspect ratio is closest (in log space) to each image's, shape (N,)."""
    w = np.asarray(widths, dtype=np.float64)
    h = np.asarray(heights, dtype=np.float64)
    if np.any(w <= 0) or np.any(h <= 0):
        raise ValueError("image widths and heights must be positive to assign aspect-ratio templates")
    log_ar = np.log(w / h)[:, None]
    return np.argmin(np.abs(log_ar - np.log(np.asarray(ASPECT_RATIOS))[None, :]), axis=1)


def epoch_order(
    labels: np.ndarray, epoch: int, seed: int, sampler: Literal["plain", "balanced"]
) -> np.ndarray:
    """The items of one epoch in random order: a permutation (plain) or class-balanced draws with replacement.

    Balanced sampling draws ``len(labels)`` items with probability proportional to 1 / (images of their class),
    so every class is seen equally often in expectation.
    """
    rng = np.random.default_rng([seed, epoch, 0x5A])
    n = len(labels)
    if sampler == "plain":
        return rng.permutation(n)
    if sampler == "balanced":
        _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        weights = 1.0 / counts[inverse]
        return rng.choice(n, size=n, replace=True, p=weights / weights.sum())
    raise ValueError(f"unknown sampler {sampler!r}; expected 'plain' or 'balanced'")


def epoch_batches(
    labels: np.ndarray,
    templates: np.ndarray,
    sizes: Sequence[tuple[int, int]],
    *,
    batch_size: int,
    epoch: int,
    seed: int,
    sampler: Literal["plain", "balanced"] = "plain",
    min_batch: int = 2,
) -> list[list[Sample]]:
    """All batches of one epoch, each within one template, in a seeded random order.

    Batches smaller than ``min_batch`` (a template's remainder of one image) are dropped: BatchNorm needs two.
    """
    order = epoch_order(labels, epoch, seed, sampler)
    by_template: dict[int, list[int]] = {}
    for position, item in enumerate(order):
        by_template.setdefault(int(templates[item]), []).append(position)
    batches: list[list[Sample]] = []
    for template, positions in sorted(by_template.items()):
        h, w = sizes[template]
        for start in range(0, len(positions), batch_size):
            chunk = positions[start : start + batch_size]
            if len(chunk) >= min_batch:
                batches.append([Sample(int(order[p]), h, w, epoch, p) for p in chunk])
    rng = np.random.default_rng([seed, epoch, 0xB7])
    return [batches[i] for i in rng.permutation(len(batches))]


def shard_for_rank(
    batches: list[list[Sample]], rank: int, world_size: int, accumulation: int
) -> list[list[Sample]]:
    """This rank's batches: every rank gets the same number, a multiple of ``accumulation``."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} out of range for world size {world_size}")
    per_rank = len(batches) // world_size
    per_rank -= per_rank % accumulation
    return batches[rank::world_size][:per_rank]


def steps_per_epoch(num_batches: int, world_size: int, accumulation: int) -> int:
    """Optimizer steps in an epoch of ``num_batches`` batches."""
    per_rank = num_batches // world_size
    return math.floor(per_rank / accumulation)
