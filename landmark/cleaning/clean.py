"""Automated cleaning of a labelled train set by spatial verification (Yokoo et al. 2020, section 3).

For every labelled train image x:

1. kNN: its ``k`` nearest train images by exact inner product of L2-normalised global descriptors (FAISS,
   queries in chunks so the (N, k) neighbour table never has to be in memory);
2. the first ``max_same_label`` of those neighbours that carry x's label;
3. spatial verification of x against them in descending global similarity (inlier counts);
4. cnt(x) = the neighbours with inliers >= ``min_inliers`` (T_inlier); x is kept when cnt(x) >=
   ``min_verified`` (T_freq);
5. classes left with fewer than ``min_class_images`` kept images are dropped, repeated to a fixed point.

Verification runs in rounds: each undecided image asks for its next unverified neighbours in rank order
(``min_verified - cnt(x)``, doubling each time it asks again), and stops asking once cnt(x) reaches
``min_verified`` (``verify_all`` verifies every neighbour in one round instead). Verification is symmetric, so each unordered pair {x, y} is verified once and its count
fills both images' entries (when y is x's neighbour and x is y's). The decisions are those of verifying every
neighbour: an image stops only once it is kept, and an image that is not kept had all its neighbours
verified. :class:`CleaningResult` records the pairs asked for, the unique pairs and the pairs verified.

Everything here is pure: descriptors, labels and a :class:`PairVerifier` in, decision tables out. The stage
(:mod:`landmark.stages.clean`) does the I/O.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from landmark.config import CleanConfig
from landmark.errors import InputError
from landmark.normalize import l2_normalize

KEPT = "kept"
UNVERIFIED = "unverified"
SMALL_CLASS = "small_class"
NO_LABEL = "no_label"
REASONS = (KEPT, UNVERIFIED, SMALL_CLASS, NO_LABEL)
"""Reason codes of a per-image decision: kept, or dropped for one of the other three."""

NO_NEIGHBOUR = -1
NOT_VERIFIED = -2
"""Inlier-table entry of a neighbour that was not verified (its image was decided without it)."""


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
            :data:`REASONS`), ``kept`` (bool), ``candidates`` (same-label neighbours), ``verified`` (cnt(x) over
            the neighbours verified: verification stops at ``min_verified`` unless ``verify_all``),
            ``max_inliers`` (best inlier count among the verified neighbours, 0 without; a pair with fewer
            putative matches than T_inlier may be scored 0 without a fit, see ``StoreVerifier.reject_below``).
        classes: one row per labelled class, sorted by ``landmark_id``: ``images_before``, ``images_kept``
            (the columns of :data:`landmark.ops.quality.CLASS_REPORT_COLUMNS`), ``images_unverified``,
            ``images_small_class``, ``dropped`` (bool, the whole class went), ``kept_share``, ``mean_verified``.
        directed_pairs: (image, neighbour) entries of the procedure (sum of candidates over images).
        unique_pairs: unordered pairs among them.
        rounds: class-drop rounds until the fixed point.
        verified_pairs: unordered pairs actually verified (each once; fewer than ``unique_pairs`` when images
            stop at ``min_verified``).
        verify_rounds: verification rounds (see the module docstring).
        seconds: wall time of the kNN step ("knn") and of verification ("verify").
    """

    decisions: pd.DataFrame
    classes: pd.DataFrame
    directed_pairs: int
    unique_pairs: int
    rounds: int
    verified_pairs: int = 0
    verify_rounds: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def kept_ids(self) -> list[str]:
        """Ids of the kept images, input order."""
        return [str(i) for i in self.decisions.loc[self.decisions["kept"], "image_id"]]

    @property
    def saved_pairs(self) -> int:
        """Verifications saved by verifying each unordered pair once."""
        return self.directed_pairs - self.unique_pairs

    @property
    def skipped_pairs(self) -> int:
        """Unique pairs never verified because their images were already decided."""
        return self.unique_pairs - self.verified_pairs


# ---------------------------------------------------------------------------------------------------------------
# kNN and candidate pairs


def unit_rows(descriptors: np.ndarray) -> np.ndarray:
    """(N, D) float32 rows scaled to unit L2 norm (:func:`landmark.normalize.l2_normalize`, strict).

    Raises:
        ValueError: not a 2-d array, non-finite values, or an all-zero row (no direction to compare).
    """
    x = np.asarray(descriptors)
    if x.ndim != 2 or x.shape[1] < 1:
        raise ValueError(f"descriptors must have shape (N, D) with D >= 1, got {x.shape}")
    return np.ascontiguousarray(l2_normalize(x, strict=True))


def knn_chunks(
    descriptors: np.ndarray, k: int, chunk_size: int
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Exact top-``k`` neighbours of every row among the other rows, a chunk of queries at a time.

    Args:
        descriptors: (N, D) L2-normalised rows (see :func:`unit_rows`).
        k: neighbours per row, self excluded; clipped to N - 1.
        chunk_size: query rows per FAISS search.

    Yields:
        (start, similarities, indices): rows [start, start + n) of the (N, min(k, N - 1)) neighbour tables,
        best first (the order of exact ties is FAISS's).
    """
    from landmark.retrieval.index import build_exact_index

    n = len(descriptors)
    if n == 0:
        return
    index = build_exact_index(descriptors)
    for start in range(0, n, chunk_size):
        rows = np.arange(start, min(start + chunk_size, n))
        yield (start, *neighbours_of_rows(index, descriptors, rows, k))


def neighbours_of_rows(
    index: Any, descriptors: np.ndarray, rows: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The top-``k`` neighbours of ``descriptors[rows]`` in ``index`` (built over all of ``descriptors``), each
    row's own entry removed: (similarities, indices), shape (len(rows), min(k, N - 1)), best first."""
    from landmark.retrieval.index import search

    k = min(k, len(descriptors) - 1)
    if k <= 0:
        return np.zeros((len(rows), 0), np.float32), np.zeros((len(rows), 0), np.int64)
    sims, idx = search(index, descriptors[rows], k + 1)
    # The query itself is normally its own first hit; with exact duplicates it may sit anywhere in the list
    # (or just outside it): drop it where present, else the last hit, so every row keeps k others.
    is_self = idx == rows[:, None]
    drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), idx.shape[1] - 1)
    keep = np.ones(idx.shape, bool)
    keep[np.arange(len(rows)), drop] = False
    return sims[keep].reshape(len(rows), k), idx[keep].reshape(len(rows), k)


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
    x = unit_rows(descriptors)
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


def verified_counts(inliers: np.ndarray, min_inliers: int) -> np.ndarray:
    """cnt(x): candidates with inliers >= ``min_inliers``, shape (N,) int64 (step 4)."""
    return (np.asarray(inliers) >= min_inliers).sum(axis=1).astype(np.int64)


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
            raise InputError(f"duplicate image id {image_id!r}")
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


def _fill(inliers: np.ndarray, candidates: np.ndarray, pairs: np.ndarray, counts: np.ndarray) -> None:
    """Write each verified pair's count into both of its directed entries, where the table has them."""
    n = len(candidates)
    rows = np.repeat(np.arange(n), candidates.shape[1]).reshape(candidates.shape)
    valid = candidates >= 0
    keys = (rows * n + candidates)[valid]
    flat = np.flatnonzero(valid.reshape(-1))
    order = np.argsort(keys, kind="stable")
    keys, flat = keys[order], flat[order]
    for a, b in ((pairs[:, 0], pairs[:, 1]), (pairs[:, 1], pairs[:, 0])):
        wanted = a * n + b
        pos = np.minimum(np.searchsorted(keys, wanted), max(len(keys) - 1, 0))
        hit = keys[pos] == wanted if len(keys) else np.zeros(len(wanted), bool)
        inliers.reshape(-1)[flat[pos[hit]]] = counts[hit]


def verify_in_rank_order(
    candidates: np.ndarray, ids: Sequence[str], verifier: PairVerifier, cfg: CleanConfig,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, int, int]:  # fmt: skip
    """Verify neighbours best first until each image has ``cfg.min_verified`` verified ones (step 3).

    Each round, every image still short of ``min_verified`` (and with neighbours left) asks for its next
    unverified neighbours in rank order: ``min_verified - cnt`` of them the first time, twice as many each time
    after (an image that failed once usually fails again: doubling keeps the rounds, each one parallel batch, to
    about log2(max_same_label) while asking for at most about twice the pairs it needs). The round's unordered
    pairs are verified once, in batches of ``cfg.chunk_size``, and fill both images' entries. With
    ``cfg.verify_all`` one round asks for every neighbour.

    Args:
        candidates: (N, M) neighbour indices, rank order, -1 padded (:func:`candidate_table`).
        ids: (N,) image ids, the verifier's keys.
        verifier: inlier counts of id pairs.
        cfg: min_inliers, min_verified, verify_all, chunk_size.
        progress: called with the number of pairs verified after each batch.

    Returns:
        ((N, M) int64 inlier counts, -1 without a neighbour, :data:`NOT_VERIFIED` where not verified;
        unordered pairs verified; rounds).
    """
    inliers = np.where(candidates >= 0, NOT_VERIFIED, NO_NEIGHBOUR).astype(np.int64)
    asked = np.zeros(len(candidates), np.int64)  # rounds each image has asked in
    open_rows = np.arange(len(candidates))
    verified = rounds = 0
    while len(open_rows):
        table = inliers[open_rows]
        pending = table == NOT_VERIFIED
        short = np.maximum(cfg.min_verified - (table >= cfg.min_inliers).sum(axis=1), 0)
        wants = short << np.minimum(asked[open_rows], 20)
        if cfg.verify_all:
            wants = np.full(len(open_rows), candidates.shape[1])
        take = pending & (np.cumsum(pending, axis=1) <= wants[:, None])
        r, c = np.nonzero(take)
        if not len(r):
            break
        asked[open_rows[np.unique(r)]] += 1
        a, b = open_rows[r], candidates[open_rows[r], c]
        pairs = np.unique(np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1), axis=0)
        counts = _verify_unique(pairs, ids, verifier, cfg.chunk_size, progress)
        _fill(inliers, candidates, pairs, counts)
        verified, rounds = verified + len(pairs), rounds + 1
        still = inliers[open_rows]
        undecided = ((still >= cfg.min_inliers).sum(axis=1) < cfg.min_verified) | cfg.verify_all
        open_rows = open_rows[undecided & (still == NOT_VERIFIED).any(axis=1)]
    return inliers, verified, rounds


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
    n_unique = len(unique_pairs(candidates))
    knn_seconds = time.perf_counter() - start
    inliers, n_verified, verify_rounds = verify_in_rank_order(candidates, sub_ids, verifier, cfg, progress)
    verify_seconds = time.perf_counter() - start - knn_seconds
    cnt = verified_counts(inliers, cfg.min_inliers)
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
        unique_pairs=n_unique,
        rounds=rounds,
        verified_pairs=n_verified,
        verify_rounds=verify_rounds,
        seconds={"knn": round(knn_seconds, 3), "verify": round(verify_seconds, 3)},
    )
