"""Automated cleaning of a labelled train set by spatial verification (Yokoo et al. 2020, section 3).

For every labelled train image x:

1. kNN: its ``k`` nearest train images by exact inner product of L2-normalised global descriptors (FAISS,
   queries in chunks so the (N, k) neighbour table never has to be in memory);
2. the first ``max_same_label`` of those neighbours that carry x's label;
3. spatial verification of x against each of them (inlier counts);
4. cnt(x) = the neighbours with inliers >= ``inlier_threshold`` (T_inlier); x is kept when cnt(x) >=
   ``min_verified`` (T_freq);
5. classes left with fewer than ``min_class_images`` kept images are dropped, repeated to a fixed point.

Verification is symmetric, so each unordered pair {x, y} that appears in either image's neighbour list is
verified once and its count reused for both images: with mutual neighbours (the common case within a
landmark) that halves the verification work; :class:`CleaningResult` records both numbers.

Everything here is pure: descriptors, labels and a :class:`PairVerifier` in, decision tables out. The stage
(:mod:`landmark.stages.clean`) does the I/O.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pandas as pd

from landmark.config import CleanConfig

KEPT = "kept"
UNVERIFIED = "unverified"
SMALL_CLASS = "small_class"
NO_LABEL = "no_label"
REASONS = (KEPT, UNVERIFIED, SMALL_CLASS, NO_LABEL)
"""Reason codes of a per-image decision: kept, or dropped for one of the other three."""

NO_NEIGHBOUR = -1


class PairVerifier(Protocol):
    """Spatial verification of many image pairs: ``verifier(pairs) -> inlier counts``."""

    def __call__(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """Inlier counts, shape (len(pairs),), >= 0; symmetric in each pair."""
        ...


@dataclass(frozen=True, eq=False)
class CleaningResult:
    """The outcome of :func:`clean_train_set`.

    Attributes:
        decisions: one row per input image, input order: ``image_id``, ``landmark_id``, ``reason`` (one of
            :data:`REASONS`), ``kept`` (bool), ``candidates`` (same-label neighbours verified), ``verified``
            (cnt(x)), ``max_inliers`` (best inlier count among the candidates, 0 without candidates).
        classes: one row per labelled class, sorted by ``landmark_id``: ``images_before``, ``images_kept``
            (the columns of :data:`landmark.quality.CLASS_REPORT_COLUMNS`), ``images_unverified``,
            ``images_small_class``, ``dropped`` (bool, the whole class went), ``kept_share``, ``mean_verified``.
        directed_pairs: verifications the procedure asks for (sum of candidates over images).
        unique_pairs: unordered pairs actually verified (each once).
        rounds: class-drop rounds until the fixed point.
        seconds: wall time of the kNN step ("knn") and of verification ("verify").
    """

    decisions: pd.DataFrame
    classes: pd.DataFrame
    directed_pairs: int
    unique_pairs: int
    rounds: int
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def kept_ids(self) -> list[str]:
        """Ids of the kept images, input order."""
        return [str(i) for i in self.decisions.loc[self.decisions["kept"], "image_id"]]

    @property
    def saved_pairs(self) -> int:
        """Verifications saved by verifying each unordered pair once."""
        return self.directed_pairs - self.unique_pairs


# ---------------------------------------------------------------------------------------------------------------
# kNN and candidate pairs


def l2_normalized(descriptors: np.ndarray) -> np.ndarray:
    """(N, D) float32 rows scaled to unit L2 norm.

    Raises:
        ValueError: not a 2-d array, non-finite values, or an all-zero row (no direction to compare).
    """
    x = np.ascontiguousarray(descriptors, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] < 1:
        raise ValueError(f"descriptors must have shape (N, D) with D >= 1, got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("descriptors contain NaN or infinite values")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if len(x) and float(norms.min()) == 0.0:
        raise ValueError(f"descriptor row {int(np.argmin(norms))} is all zeros")
    return x / norms


def knn_chunks(
    descriptors: np.ndarray, k: int, chunk_size: int
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Exact top-``k`` neighbours of every row among the other rows, a chunk of queries at a time.

    Args:
        descriptors: (N, D) L2-normalised rows (see :func:`l2_normalized`).
        k: neighbours per row, self excluded; clipped to N - 1.
        chunk_size: query rows per FAISS search.

    Yields:
        (start, similarities, indices): rows [start, start + n) of the (N, min(k, N - 1)) neighbour tables,
        best first (the order of exact ties is FAISS's).
    """
    from landmark.index import build_exact_index, search

    n = len(descriptors)
    k = min(k, n - 1)
    if n == 0:
        return
    index = build_exact_index(descriptors)
    for start in range(0, n, chunk_size):
        queries = descriptors[start : start + chunk_size]
        rows = np.arange(start, start + len(queries))
        if k == 0:
            yield start, np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
            continue
        sims, idx = search(index, queries, k + 1)
        # The query itself is normally its own first hit; with exact duplicates it may sit anywhere in the list
        # (or just outside it): drop it where present, else the last hit, so every row keeps k others.
        is_self = idx == rows[:, None]
        drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), idx.shape[1] - 1)
        keep = np.ones(idx.shape, bool)
        keep[np.arange(len(rows)), drop] = False
        yield (
            start,
            sims[keep].reshape(len(rows), k),
            idx[keep].reshape(len(rows), k),
        )


def same_label_candidates(
    neighbours: np.ndarray, labels: np.ndarray, rows: np.ndarray, max_same_label: int
) -> np.ndarray:
    """The first ``max_same_label`` neighbours of each query that share its label.

    Args:
        neighbours: (n, k) neighbour indices into ``labels``, best first (-1 = none).
        labels: (N,) int labels of all images.
        rows: (n,) the queries' own indices into ``labels``.
        max_same_label: candidates kept per query.

    Returns:
        (n, max_same_label) int64 indices, rank order, padded with -1 (:data:`NO_NEIGHBOUR`).
    """
    neighbours = np.asarray(neighbours, np.int64)
    valid = neighbours >= 0
    same = valid & (labels[np.where(valid, neighbours, 0)] == labels[rows][:, None])
    rank = np.cumsum(same, axis=1)
    take = same & (rank <= max_same_label)
    out = np.full((len(rows), max_same_label), NO_NEIGHBOUR, np.int64)
    r, c = np.nonzero(take)
    out[r, rank[r, c] - 1] = neighbours[r, c]
    return out


def candidate_table(descriptors: np.ndarray, labels: np.ndarray, cfg: CleanConfig) -> np.ndarray:
    """Same-label kNN candidates of every image: (N, max_same_label) int64, -1 padded (steps 1-2)."""
    x = l2_normalized(descriptors)
    labels = np.asarray(labels, np.int64)
    out = np.full((len(x), cfg.max_same_label), NO_NEIGHBOUR, np.int64)
    for start, _, idx in knn_chunks(x, cfg.k, cfg.chunk_size):
        rows = np.arange(start, start + len(idx))
        out[rows] = same_label_candidates(idx, labels, rows, cfg.max_same_label)
    return out


def unique_pairs(candidates: np.ndarray) -> np.ndarray:
    """The unordered pairs {i, j} of a candidate table, each once: (P, 2) int64 with i < j, sorted."""
    candidates = np.asarray(candidates, np.int64)
    rows = np.repeat(np.arange(len(candidates)), candidates.shape[1]) if candidates.size else np.zeros(0, int)
    cols = candidates.reshape(-1)
    valid = cols >= 0
    a, b = rows[valid], cols[valid]
    pairs = np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1).astype(np.int64)
    if not len(pairs):
        return pairs.reshape(0, 2)
    return np.unique(pairs, axis=0)


def candidate_inliers(candidates: np.ndarray, pairs: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Inlier count of every (image, candidate) entry, looked up from the unique pairs' counts.

    Returns:
        (N, max_same_label) int64; -1 where there is no candidate.
    """
    n = len(candidates)
    keys = pairs[:, 0] * n + pairs[:, 1]  # pairs are sorted, so keys are too
    a = np.repeat(np.arange(n), candidates.shape[1]).reshape(candidates.shape)
    b = candidates
    valid = b >= 0
    query = np.minimum(a, b) * n + np.maximum(a, b)
    pos = np.searchsorted(keys, query[valid])
    if len(pos) and (pos.max() >= len(keys) or not np.array_equal(keys[pos], query[valid])):
        raise ValueError("candidate table has pairs that were not verified")
    out = np.full(candidates.shape, -1, np.int64)
    out[valid] = np.asarray(counts, np.int64)[pos]
    return out


# ---------------------------------------------------------------------------------------------------------------
# Decisions


def verified_counts(inliers: np.ndarray, inlier_threshold: int) -> np.ndarray:
    """cnt(x): candidates with inliers >= ``inlier_threshold``, shape (N,) int64 (step 4)."""
    return (np.asarray(inliers) >= inlier_threshold).sum(axis=1).astype(np.int64)


def drop_small_classes(
    labels: np.ndarray, kept: np.ndarray, min_class_images: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Drop classes with fewer than ``min_class_images`` kept images, repeating until nothing changes (step 5).

    With the paper's cnt(x) a dropped class never changes another class's counts, so the loop ends after one
    dropping round plus the check; it is written as a fixed point so that stricter variants stay correct.

    Args:
        labels: (N,) int labels (>= 0 for the images that take part).
        kept: (N,) bool, images kept by verification.
        min_class_images: the smallest class size kept.

    Returns:
        (kept after the drop, (N,) bool images dropped only for their class, rounds run).
    """
    labels = np.asarray(labels, np.int64)
    current = np.asarray(kept, bool).copy()
    rounds = 0
    while True:
        rounds += 1
        classes, counts = np.unique(labels[current], return_counts=True)
        small = classes[counts < min_class_images]
        drop = current & np.isin(labels, small)
        if not drop.any():
            break
        current &= ~drop
    return current, np.asarray(kept, bool) & ~current, rounds


def _check_inputs(ids: Sequence[str], labels: np.ndarray, descriptors: np.ndarray) -> None:
    if len(ids) != len(labels) or len(ids) != len(descriptors):
        raise ValueError(
            f"ids, labels and descriptors must have the same length, got {len(ids)}, {len(labels)} and "
            f"{len(descriptors)}"
        )
    seen: set[str] = set()
    for image_id in ids:
        if image_id in seen:
            raise ValueError(f"duplicate image id {image_id!r}")
        seen.add(image_id)


def _verify_unique(
    pairs: np.ndarray, ids: Sequence[str], verifier: PairVerifier, chunk_size: int,
    progress: Callable[[int], None] | None,
) -> np.ndarray:  # fmt: skip
    counts = np.zeros(len(pairs), np.int64)
    for start in range(0, len(pairs), chunk_size):
        chunk = pairs[start : start + chunk_size]
        got = np.asarray(verifier([(ids[a], ids[b]) for a, b in chunk]))
        if got.shape != (len(chunk),):
            raise ValueError(f"verifier returned shape {got.shape} for {len(chunk)} pairs")
        if (got < 0).any():
            raise ValueError("verifier returned negative inlier counts")
        counts[start : start + len(chunk)] = got
        if progress is not None:
            progress(len(chunk))
    return counts


def class_report(decisions: pd.DataFrame) -> pd.DataFrame:
    """Per labelled class: images before/kept, drops by reason, whether the class went, mean cnt(x)."""
    labelled = decisions[decisions["landmark_id"] >= 0]
    grouped = labelled.groupby("landmark_id", sort=True)
    report = pd.DataFrame(
        {
            "images_before": grouped.size(),
            "images_kept": grouped["kept"].sum(),
            "images_unverified": grouped["reason"].agg(lambda r: int((r == UNVERIFIED).sum())),
            "images_small_class": grouped["reason"].agg(lambda r: int((r == SMALL_CLASS).sum())),
            "mean_verified": grouped["verified"].mean(),
        }
    ).reset_index()
    for column in ("landmark_id", "images_before", "images_kept", "images_unverified", "images_small_class"):
        report[column] = report[column].astype("int64")
    report["dropped"] = report["images_kept"] == 0
    report["kept_share"] = report["images_kept"] / report["images_before"]
    report["mean_verified"] = report["mean_verified"].astype("float64")
    order = ["landmark_id", "images_before", "images_kept", "images_unverified", "images_small_class",
             "dropped", "kept_share", "mean_verified"]  # fmt: skip
    return report[order]


def clean_train_set(
    ids: Sequence[str],
    labels: np.ndarray | Sequence[int],
    descriptors: np.ndarray,
    verifier: PairVerifier,
    cfg: CleanConfig,
    *,
    progress: Callable[[int], None] | None = None,
) -> CleaningResult:
    """Decide for every image whether it stays in the train set (the whole procedure of the module docstring).

    Images without a label (< 0) take no part in the kNN and are dropped with reason ``no_label``.

    Args:
        ids: (N,) unique image ids, the verifier's keys.
        labels: (N,) int landmark ids (-1 = none).
        descriptors: (N, D) global descriptors (normalised here).
        verifier: inlier counts of id pairs; called with at most ``cfg.chunk_size`` pairs at a time.
        cfg: k, max_same_label, thresholds, chunk_size.
        progress: called with the number of pairs verified after each batch (e.g. a progress bar's update).

    Raises:
        ValueError: lengths that differ, duplicate ids, bad descriptors, or a verifier answer of the wrong
            shape or with negative counts.
    """
    labels = np.asarray(labels, np.int64).reshape(-1)
    descriptors = np.asarray(descriptors)
    _check_inputs(ids, labels, descriptors)
    n = len(ids)
    labelled = np.flatnonzero(labels >= 0)
    sub_ids = [ids[int(i)] for i in labelled]
    sub_labels = labels[labelled]
    start = time.perf_counter()
    if len(labelled):
        candidates = candidate_table(descriptors[labelled], sub_labels, cfg)
    else:
        candidates = np.zeros((0, cfg.max_same_label), np.int64)
    pairs = unique_pairs(candidates)
    knn_seconds = time.perf_counter() - start
    counts = _verify_unique(pairs, sub_ids, verifier, cfg.chunk_size, progress)
    verify_seconds = time.perf_counter() - start - knn_seconds
    inliers = candidate_inliers(candidates, pairs, counts)
    cnt = verified_counts(inliers, cfg.inlier_threshold)
    verified_ok = cnt >= cfg.min_verified
    kept_sub, small_sub, rounds = drop_small_classes(sub_labels, verified_ok, cfg.min_class_images)

    reason = np.full(n, NO_LABEL, dtype=object)
    reason[labelled] = np.where(kept_sub, KEPT, np.where(small_sub, SMALL_CLASS, UNVERIFIED))
    n_candidates = np.zeros(n, np.int64)
    n_candidates[labelled] = (candidates >= 0).sum(axis=1)
    verified = np.zeros(n, np.int64)
    verified[labelled] = cnt
    best = np.zeros(n, np.int64)
    if len(labelled) and inliers.shape[1]:
        best[labelled] = np.maximum(inliers.max(axis=1), 0)
    decisions = pd.DataFrame(
        {
            "image_id": pd.Series(list(ids), dtype=object),
            "landmark_id": labels,
            "reason": pd.Series(reason, dtype=object),
            "kept": reason == KEPT,
            "candidates": n_candidates,
            "verified": verified,
            "max_inliers": best,
        }
    )
    return CleaningResult(
        decisions=decisions,
        classes=class_report(decisions),
        directed_pairs=int(n_candidates.sum()),
        unique_pairs=len(pairs),
        rounds=rounds,
        seconds={"knn": round(knn_seconds, 3), "verify": round(verify_seconds, 3)},
    )
