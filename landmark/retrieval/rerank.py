"""Query-time re-ranking for landmark retrieval (pure numpy: arrays and parameters in, arrays out).

Steps, in the order :func:`run_retrieval` applies them (Yokoo et al., "Two-stage Discriminative Re-ranking for
Large-scale Landmark Retrieval", CVPR-W 2020):

1. Database-side augmentation (DBA, Arandjelović & Zisserman 2012; alpha-weighted as Radenović et al. 2018):
   every index descriptor becomes ``normalize(x + sum_j max(s_j, 0)^alpha x_j)`` over its top-n neighbours.
2. Query expansion, one of
   - alpha-QE (Radenović et al.): the same weighted sum around the query over its top-n results;
   - discriminative QE (DQE, Arandjelović & Zisserman 2012, "Three things everyone should know"): a linear
     classifier separating the query and its top-n results (positives) from a fixed, seeded random set of
     index images (negatives, which at index scale are almost surely irrelevant); its weight vector, L2
     normalised, is the new query. The classifier here is a class-balanced least-squares SVM solved in the dual
     (an (n+1+r)-square system per query), deterministic and cheap.
   Then the expanded queries are searched again. With ``adaptive_n`` DBA and QE take a neighbour count per
   row from its similarity profile (:func:`adaptive_counts`; ``dba_n``/``qe_n`` are then caps).
   Optionally (``graph``), the first ``graph_top`` results are re-ranked over the graph of the query and those
   results: k-reciprocal neighbours (Zhong et al., CVPR 2017), diffusion (Iscen et al., CVPR 2017) or
   SuperGlobal's refinement (Shao et al., ICCV 2023; its scale-GeM part needs the model and is not here).
3. Spatial verification of the top ``spatial_top`` results through a :class:`Verifier` (inlier counts), the
   verified ones moved first by inlier count.
4. The two-stage discriminative re-ranking: labels predicted for queries and index images by kNN soft voting
   over the train set (:func:`landmark.retrieval.recognize.predict_labels`);
   - sort-step: stable partition of the retrieved list, images with the query's predicted label first;
   - insert-step: index images predicted with the query's label (confidence above a threshold) that were not
     retrieved are inserted right after that block, by confidence; the list is cut to ``top``.

Rankings are (n_queries, t) int64 arrays of database positions, best first, padded with -1.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from landmark.config import IndexConfig, RerankConfig
from landmark.errors import InputError
from landmark.normalize import l2_normalize
from landmark.retrieval.index import ShardedIndex, build_in_memory, sample_rows
from landmark.retrieval.recognize import (
    LabelledSet,
    LabelPrediction,
    Verifier,
    neighbour_labels,
    predict_labels,
)


def _check_neighbours(sims: np.ndarray, idx: np.ndarray, n_rows: int, n_base: int) -> None:
    if sims.shape != idx.shape or sims.ndim != 2 or sims.shape[0] != n_rows:
        raise ValueError(f"sims and idx must both be ({n_rows}, t), got {sims.shape} and {idx.shape}")
    if idx.size and (idx.max() >= n_base or idx.min() < -1):
        raise ValueError(f"neighbour positions must be in [-1, {n_base}), got [{idx.min()}, {idx.max()}]")


def weighted_expansion(
    vectors: np.ndarray, base: np.ndarray, sims: np.ndarray, idx: np.ndarray, n: int, alpha: float
) -> np.ndarray:
    """``normalize(x + sum_{j < n} max(s_j, 0)^alpha * base[idx_j])`` for each row x (alpha-weighted expansion).

    alpha = 0 gives plain average query expansion (every neighbour weight 1).

    Args:
        vectors: rows to expand, shape (n_rows, d).
        base: the vectors neighbours point into, shape (n_base, d).
        sims: similarities to the neighbours, shape (n_rows, t), best first.
        idx: neighbour positions in ``base``, shape (n_rows, t); -1 = missing (ignored).
        n: neighbours used (the first n columns).
        alpha: weight exponent, >= 0.

    Returns:
        Expanded, L2-normalised rows, shape (n_rows, d), float32.
    """
    vectors, base = np.asarray(vectors, np.float32), np.asarray(base, np.float32)
    sims, idx = np.asarray(sims, np.float32), np.asarray(idx, np.int64)
    _check_neighbours(sims, idx, vectors.shape[0], base.shape[0])
    if n < 0 or alpha < 0:
        raise ValueError(f"n and alpha must be >= 0, got n={n}, alpha={alpha}")
    sims, idx = sims[:, :n], idx[:, :n]
    valid = idx >= 0
    weights = np.where(valid, np.power(np.maximum(sims, 0.0), alpha), 0.0).astype(np.float32)
    expanded = vectors + np.einsum("nk,nkd->nd", weights, base[np.clip(idx, 0, None)])
    return l2_normalize(expanded)


def drop_self(sims: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Remove each row's own position from a self-search result (row i searched against the same set).

    Args:
        sims, idx: (n, t) neighbours of row i over the same n vectors.

    Returns:
        (sims, idx) of shape (n, t - 1), order kept; when row i is not among its own neighbours the last
        column is dropped instead.
    """
    sims, idx = np.asarray(sims), np.asarray(idx, np.int64)
    if idx.shape[1] == 0:
        raise ValueError("need at least one neighbour column")
    rows = np.arange(idx.shape[0])[:, None]
    is_self = idx == rows
    # drop the first self hit, or the last column when there is none
    drop = np.where(is_self.any(axis=1), np.argmax(is_self, axis=1), idx.shape[1] - 1)
    keep = np.ones(idx.shape, dtype=bool)
    keep[np.arange(idx.shape[0]), drop] = False
    shape = (idx.shape[0], idx.shape[1] - 1)
    return sims[keep].reshape(shape), idx[keep].reshape(shape)


def database_side_augmentation(
    db: np.ndarray, sims: np.ndarray, idx: np.ndarray, n: int, alpha: float
) -> np.ndarray:
    """alpha-DBA: each index descriptor expanded with its top-n other index descriptors.

    Args:
        db: index descriptors, shape (m, d).
        sims, idx: each index descriptor's neighbours over ``db`` itself (self included or not), (m, t).
        n: neighbours averaged in (besides the descriptor itself).
        alpha: weight exponent.

    Returns:
        Augmented index descriptors, shape (m, d), L2-normalised.
    """
    sims, idx = np.asarray(sims), np.asarray(idx, np.int64)
    rows = np.arange(idx.shape[0])[:, None]
    if np.any(idx == rows):
        sims, idx = drop_self(sims, idx)
    return weighted_expansion(db, db, sims, idx, n, alpha)


def alpha_query_expansion(
    queries: np.ndarray, db: np.ndarray, sims: np.ndarray, idx: np.ndarray, n: int, alpha: float
) -> np.ndarray:
    """alpha-QE: each query expanded with its top-n retrieved index descriptors, shape (n_queries, d)."""
    return weighted_expansion(queries, db, sims, idx, n, alpha)


def dqe_negatives(n_db: int, size: int, seed: int) -> np.ndarray:
    """The fixed negative set of DQE: ``min(size, n_db)`` distinct index positions drawn with ``seed``."""
    return sample_rows(n_db, size, seed)


def discriminative_query_expansion(
    queries: np.ndarray,
    db: np.ndarray,
    idx: np.ndarray,
    n: int,
    negatives: np.ndarray,
    regularization: float = 1.0,
) -> np.ndarray:
    """DQE: the normalised weight vector of a linear classifier, query + top-n results vs. negatives.

    Per query, with samples x_i = [descriptor, 1] (bias folded in), targets y = +1 (positives) / -1
    (negatives) and class weights c = 1/#class, it solves the least-squares SVM
    ``min_w sum_i c_i (w.x_i - y_i)^2 + regularization * |w|^2`` in the dual, ``(K + regularization * C^-1) a =
    y`` with K = X X^T, w = X^T a. Negatives that are among the query's positives are left out for that query.

    Args:
        queries: (n_queries, d), L2-normalised.
        db: index descriptors, (m, d).
        idx: first-stage results, (n_queries, t), best first, -1 = missing.
        n: top results used as positives.
        negatives: index positions of the negative set, (r,).
        regularization: ridge term, > 0.

    Returns:
        New queries, (n_queries, d), L2-normalised, float32.
    """
    queries, db = np.asarray(queries, np.float64), np.asarray(db, np.float64)
    idx, negatives = np.asarray(idx, np.int64), np.asarray(negatives, np.int64).reshape(-1)
    if regularization <= 0:
        raise ValueError(f"regularization must be > 0, got {regularization}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    _check_neighbours(np.zeros(idx.shape), idx, queries.shape[0], db.shape[0])
    if negatives.size == 0 or negatives.min() < 0 or negatives.max() >= db.shape[0]:
        raise ValueError(f"negatives must be a non-empty list of positions in [0, {db.shape[0]})")
    ones = np.ones((db.shape[0], 1))
    db1 = np.hstack([db, ones])
    neg_all = db1[negatives]
    gram_neg = neg_all @ neg_all.T  # shared by every query
    out = np.empty_like(queries)
    for q in range(queries.shape[0]):
        pos_idx = idx[q, :n][idx[q, :n] >= 0]
        keep = ~np.isin(negatives, pos_idx)
        pos = np.vstack([np.append(queries[q], 1.0), db1[pos_idx]])
        neg = neg_all[keep]
        gram = np.block([[pos @ pos.T, pos @ neg.T], [neg @ pos.T, gram_neg[np.ix_(keep, keep)]]])
        n_pos, n_neg = pos.shape[0], neg.shape[0]
        inv_c = np.concatenate([np.full(n_pos, float(n_pos)), np.full(n_neg, float(n_neg))])
        targets = np.concatenate([np.ones(n_pos), -np.ones(n_neg)])
        dual = np.linalg.solve(gram + regularization * np.diag(inv_c), targets)
        out[q] = (np.vstack([pos, neg]).T @ dual)[:-1]
    return l2_normalize(out)


def order_by_inliers(inliers: np.ndarray, min_inliers: int = 0) -> np.ndarray:
    """Permutation putting candidates with >= ``min_inliers`` inliers first, by count (high first), the rest
    after them in their original order; ties keep the original order.

    Args:
        inliers: inlier count per candidate, shape (t,), in retrieval order.
        min_inliers: candidates below this count are not considered verified.

    Returns:
        (t,) int64 positions into the candidate list.
    """
    inliers = np.asarray(inliers, dtype=np.float64).reshape(-1)
    if np.any(inliers < 0) or not np.all(np.isfinite(inliers)):
        raise ValueError(f"inlier counts must be finite and >= 0, got {inliers}")
    key = np.where(inliers >= min_inliers, inliers, -1.0)
    return np.argsort(-key, kind="stable").astype(np.int64)


def spatial_rerank(
    ranked: np.ndarray,
    query_ids: Sequence[str],
    db_ids: Sequence[str],
    verifier: Verifier,
    top: int = 100,
    min_inliers: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Re-rank the first ``top`` results of each query by spatial-verification inliers (the rest keep place).

    Args:
        ranked: (n_queries, t) database positions, best first, -1 padded.
        query_ids: id of each query, (n_queries,).
        db_ids: id of each database position, (n_db,).
        verifier: returns inlier counts for (query id, candidate ids).
        top: how many leading results are verified.
        min_inliers: see :func:`order_by_inliers`.

    Returns:
        (re-ranked (n_queries, t), inlier counts of the re-ranked head (n_queries, min(top, t)), -1 padded).
    """
    ranked = np.asarray(ranked, np.int64)
    if ranked.ndim != 2 or ranked.shape[0] != len(query_ids):
        raise ValueError(f"ranked must be ({len(query_ids)}, t), got {ranked.shape}")
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    out = ranked.copy()
    head_len = min(top, ranked.shape[1])
    counts = np.full((ranked.shape[0], head_len), -1, dtype=np.int64)
    for q, query_id in enumerate(query_ids):
        head = ranked[q, :head_len]
        head = head[head >= 0]
        found = np.asarray(verifier(query_id, [db_ids[i] for i in head])).reshape(-1)
        if found.shape != head.shape:
            raise ValueError(
                f"verifier returned {found.shape[0]} counts for {head.size} candidates of {query_id!r}"
            )
        order = order_by_inliers(found, min_inliers)
        out[q, : head.size] = head[order]
        counts[q, : head.size] = found[order]
    return out, counts


def sort_step(ranked: np.ndarray, query_labels: np.ndarray, db_labels: np.ndarray) -> np.ndarray:
    """Stable partition of each list: results whose predicted label is the query's predicted label first.

    A query predicted -1 (no label) keeps its list. Padding (-1) stays at the end.

    Args:
        ranked: (n_queries, t) database positions, best first, -1 padded.
        query_labels: (n_queries,) predicted label per query.
        db_labels: (n_db,) predicted label per database image.

    Returns:
        (n_queries, t) re-ordered positions.
    """
    ranked = np.asarray(ranked, np.int64)
    query_labels = np.asarray(query_labels, np.int64).reshape(-1)
    if ranked.ndim != 2 or query_labels.size != ranked.shape[0]:
        raise ValueError(f"ranked must be ({query_labels.size}, t), got {ranked.shape}")
    labels = neighbour_labels(ranked, db_labels)
    group = np.where(ranked < 0, 2, np.where((labels == query_labels[:, None]) & (labels >= 0), 0, 1))
    order = np.argsort(group, axis=1, kind="stable")
    return np.take_along_axis(ranked, order, axis=1)


def _insert_candidates(
    db_labels: np.ndarray, db_confidence: np.ndarray, threshold: float
) -> dict[int, np.ndarray]:
    """label -> database positions predicted with it above ``threshold``, by confidence (high first, ties by
    position)."""
    chosen = np.flatnonzero((db_labels >= 0) & (db_confidence > threshold))
    order = np.lexsort((chosen, -db_confidence[chosen], db_labels[chosen]))
    chosen = chosen[order]
    labels = db_labels[chosen]
    starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]]) if chosen.size else np.zeros(0, np.int64)
    bounds = np.r_[starts, chosen.size]
    return {int(labels[s]): chosen[s:e] for s, e in itertools.pairwise(bounds)}


def insert_step(
    ranked: np.ndarray,
    query_labels: np.ndarray,
    db_labels: np.ndarray,
    db_confidence: np.ndarray,
    threshold: float,
    top: int = 100,
) -> np.ndarray:
    """Insert not-retrieved index images predicted with the query's label right after the leading block of
    results with that label, ordered by confidence; cut to ``top``.

    Meant to follow :func:`sort_step` (then the leading block is every retrieved image with the label).

    Args:
        ranked: (n_queries, t) database positions, best first, -1 padded.
        query_labels: (n_queries,) predicted label per query (-1: nothing inserted).
        db_labels: (n_db,) predicted label per database image.
        db_confidence: (n_db,) confidence of those predictions.
        threshold: only images with confidence > threshold are inserted.
        top: length of the returned lists.

    Returns:
        (n_queries, top) database positions, -1 padded.
    """
    ranked = np.asarray(ranked, np.int64)
    query_labels = np.asarray(query_labels, np.int64).reshape(-1)
    db_labels = np.asarray(db_labels, np.int64).reshape(-1)
    db_confidence = np.asarray(db_confidence, np.float64).reshape(-1)
    if ranked.ndim != 2 or query_labels.size != ranked.shape[0]:
        raise ValueError(f"ranked must be ({query_labels.size}, t), got {ranked.shape}")
    if db_confidence.shape != db_labels.shape:
        raise ValueError(f"db_confidence must have shape {db_labels.shape}, got {db_confidence.shape}")
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    candidates = _insert_candidates(db_labels, db_confidence, threshold)
    labels = neighbour_labels(ranked, db_labels)
    out = np.full((ranked.shape[0], top), -1, dtype=np.int64)
    for q in range(ranked.shape[0]):
        row = ranked[q][ranked[q] >= 0]
        label = int(query_labels[q])
        extra = candidates.get(label, np.zeros(0, np.int64)) if label >= 0 else np.zeros(0, np.int64)
        extra = extra[~np.isin(extra, row)]
        matches = (labels[q][: row.size] == label) & (label >= 0)
        block = int(np.argmin(matches)) if not matches.all() else row.size
        merged = np.concatenate([row[:block], extra, row[block:]])[:top]
        out[q, : merged.size] = merged
    return out


def complete_ranking(head: np.ndarray, full: np.ndarray) -> np.ndarray:
    """Whole-database rankings: each re-ranked head followed by the rest of ``full`` in its order.

    Args:
        head: (n_queries, t) re-ranked leading positions, -1 padded.
        full: (n_queries, n_db) a complete ranking per query (each row a permutation of the database).

    Returns:
        (n_queries, n_db) rankings; rows are permutations of the database.
    """
    head, full = np.asarray(head, np.int64), np.asarray(full, np.int64)
    if head.ndim != 2 or full.ndim != 2 or head.shape[0] != full.shape[0]:
        raise ValueError(
            f"head (n, t) and full (n, n_db) must have the same rows, got {head.shape}, {full.shape}"
        )
    out = np.empty_like(full)
    for q in range(full.shape[0]):
        h = head[q][head[q] >= 0]
        rest = full[q][~np.isin(full[q], h)]
        if h.size + rest.size != full.shape[1]:
            raise ValueError(f"query {q}: head holds positions that are not in its full ranking or repeats")
        out[q] = np.concatenate([h, rest])
    return out


# ---------------------------------------------------------------------------------------------------------------
# Neighbourhood re-ranking beyond DBA/QE: adaptive neighbour counts, k-reciprocal, diffusion, SuperGlobal


def adaptive_counts(
    sims: np.ndarray, idx: np.ndarray, n_max: int, ratio: float, floor: float, n_min: int = 1
) -> np.ndarray:
    """Neighbours to use per row, read from its similarity profile.

    Neighbour j (best first) is taken while its similarity is ``>= ratio * s_0`` (a fraction of the top-1
    similarity) or ``>= floor`` (an absolute similarity; > 1 switches it off): the count is the length of the
    leading run of taken neighbours, raised to ``n_min`` and capped at ``n_max`` and at the valid neighbours.

    Args:
        sims: similarities to the neighbours, shape (n_rows, t), best first.
        idx: neighbour positions, shape (n_rows, t); -1 = missing (ends the run).
        n_max: the most neighbours per row, >= 0.
        ratio: fraction of the top-1 similarity, in [0, 1].
        floor: absolute similarity above which a neighbour is always taken.
        n_min: the fewest neighbours per row (when that many are valid), in [0, n_max].

    Returns:
        (n_rows,) int64 counts.
    """
    sims, idx = np.asarray(sims, np.float64), np.asarray(idx, np.int64)
    if sims.shape != idx.shape or sims.ndim != 2:
        raise ValueError(f"sims and idx must both be (n_rows, t), got {sims.shape} and {idx.shape}")
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio must be in [0, 1], got {ratio}")
    if not 0 <= n_min <= n_max:
        raise ValueError(f"need 0 <= n_min <= n_max, got n_min={n_min}, n_max={n_max}")
    sims, idx = sims[:, :n_max], idx[:, :n_max]
    valid = idx >= 0
    if sims.shape[1] == 0:
        return np.zeros(sims.shape[0], np.int64)
    threshold = np.minimum(ratio * sims[:, :1], floor)
    taken = valid & (sims >= threshold)
    run = np.cumprod(taken, axis=1).sum(axis=1)
    leading_valid = np.cumprod(valid, axis=1).sum(axis=1)
    return np.minimum(np.maximum(run, n_min), leading_valid).astype(np.int64)


def truncate_neighbours(idx: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``idx`` with every position after the first ``counts[i]`` of row i set to -1 (missing).

    Args:
        idx: (n_rows, t) neighbour positions.
        counts: (n_rows,) neighbours kept per row, >= 0.

    Returns:
        (n_rows, t) int64 positions.
    """
    idx, counts = np.asarray(idx, np.int64), np.asarray(counts, np.int64).reshape(-1)
    if idx.ndim != 2 or counts.shape != (idx.shape[0],):
        raise ValueError(f"counts must be ({idx.shape[0]},) for idx {idx.shape}, got {counts.shape}")
    if counts.size and counts.min() < 0:
        raise ValueError(f"counts must be >= 0, got {counts.min()}")
    keep = np.arange(idx.shape[1])[None, :] < counts[:, None]
    return np.where(keep, idx, -1)


def _check_square(sims: np.ndarray) -> np.ndarray:
    sims = np.asarray(sims, np.float64)
    if sims.ndim != 2 or sims.shape[0] != sims.shape[1] or sims.shape[0] == 0:
        raise ValueError(f"sims must be a non-empty square (n, n) matrix, got shape {sims.shape}")
    return sims


def neighbour_order(sims: np.ndarray) -> np.ndarray:
    """Each node's nodes by similarity, itself first, then best first (ties by position), shape (n, n)."""
    sims = _check_square(sims)
    key = np.where(np.eye(sims.shape[0], dtype=bool), np.inf, sims)
    return np.argsort(-key, axis=1, kind="stable").astype(np.int64)


def knn_membership(order: np.ndarray, k: int) -> np.ndarray:
    """(n, n) bool: ``m[p, g]`` when g is among p's k nearest other nodes or is p (the first k + 1 of ``order``).

    Args:
        order: (n, n) from :func:`neighbour_order`.
        k: neighbours besides the node itself, >= 0 (capped at n - 1).
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    n = order.shape[0]
    member = np.zeros((n, n), dtype=bool)
    np.put_along_axis(member, order[:, : min(k, n - 1) + 1], True, axis=1)
    return member


def k_reciprocal_sets(sims: np.ndarray, k1: int) -> np.ndarray:
    """The expanded k-reciprocal sets R*(p, k1) of Zhong et al. (CVPR 2017), as an (n, n) bool matrix.

    R(p, k) = {g in N(p, k) : p in N(g, k)} with N(p, k) = p and its k nearest other nodes. R*(p, k1) adds
    R(q, round(k1 / 2)) of every q in R(p, k1) whose half set overlaps R(p, k1) in more than 2/3 of its members.

    Args:
        sims: (n, n) pairwise similarities.
        k1: neighbours of the reciprocal sets, >= 1.

    Returns:
        (n, n) bool, row p = R*(p, k1) (it always holds p).
    """
    if k1 < 1:
        raise ValueError(f"k1 must be >= 1, got {k1}")
    order = neighbour_order(sims)
    near = knn_membership(order, k1)
    recip = near & near.T
    half_near = knn_membership(order, int(np.around(k1 / 2)))
    half = half_near & half_near.T
    # counts as float32 products (BLAS; exact below 2**24): overlap[p, q] = |R(p, k1) & R(q, k1/2)|
    overlap = recip.astype(np.float32) @ half.T.astype(np.float32)
    grows = recip & (overlap > 2.0 / 3.0 * half.sum(axis=1)[None, :])
    return recip | ((grows.astype(np.float32) @ half.astype(np.float32)) > 0)


def k_reciprocal_distances(sims: np.ndarray, k1: int, k2: int, lambda_: float) -> np.ndarray:
    """Zhong et al.'s re-ranking distance: Jaccard distance of k-reciprocal encodings mixed with the original.

    With d(p, g) = |x_p - x_g|^2 = 2 - 2 s(p, g) (unit vectors): V_p has weight exp(-d(p, g)) on each g in
    R*(p, k1) (:func:`k_reciprocal_sets`), 0 elsewhere, normalised to sum 1; local query expansion replaces V_p
    by the mean of V_g over p's k2 nearest nodes (p itself included, so k2 = 1 is none); then
    d_J(p, g) = 1 - sum_j min(V_pj, V_gj) / sum_j max(V_pj, V_gj) and d* = (1 - lambda) d_J + lambda d.

    Args:
        sims: (n, n) pairwise similarities of unit vectors.
        k1: k of the reciprocal sets, >= 1.
        k2: nodes averaged by the local query expansion, >= 1.
        lambda_: weight of the original distance, in [0, 1].

    Returns:
        (n, n) distances d* (lower = closer).
    """
    sims = _check_square(sims)
    if k2 < 1:
        raise ValueError(f"k2 must be >= 1, got {k2}")
    if not 0.0 <= lambda_ <= 1.0:
        raise ValueError(f"lambda_ must be in [0, 1], got {lambda_}")
    dist = np.maximum(2.0 - 2.0 * sims, 0.0)
    weights = np.where(k_reciprocal_sets(sims, k1), np.exp(-dist), 0.0)
    weights /= weights.sum(axis=1, keepdims=True)
    order = neighbour_order(sims)
    encoding = weights[order[:, : min(k2, sims.shape[0])]].mean(axis=1)
    jaccard = np.empty_like(dist)
    for p in range(sims.shape[0]):
        shared = np.minimum(encoding[p], encoding).sum(axis=1)
        union = np.maximum(encoding[p], encoding).sum(axis=1)
        jaccard[p] = 1.0 - shared / union
    return (1.0 - lambda_) * jaccard + lambda_ * dist


def mutual_knn_affinity(sims: np.ndarray, k: int, gamma: float) -> np.ndarray:
    """Iscen et al.'s truncated graph: a_ij = max(s_ij, 0)^gamma when i and j are among each other's k nearest
    other nodes, else 0 (zero diagonal).

    Args:
        sims: (n, n) pairwise similarities.
        k: neighbours per node, >= 1.
        gamma: similarity exponent, > 0.

    Returns:
        (n, n) symmetric affinities.
    """
    sims = _check_square(sims)
    if k < 1 or gamma <= 0:
        raise ValueError(f"need k >= 1 and gamma > 0, got k={k}, gamma={gamma}")
    near = knn_membership(neighbour_order(sims), k)
    mutual = near & near.T
    np.fill_diagonal(mutual, False)
    return np.where(mutual, np.power(np.maximum(sims, 0.0), gamma), 0.0)


def conjugate_gradient(
    matrix: np.ndarray, rhs: np.ndarray, max_iter: int = 20, tol: float = 1e-6
) -> np.ndarray:
    """Solve ``matrix @ x = rhs`` for a symmetric positive definite matrix by conjugate gradient from x = 0.

    Args:
        matrix: (n, n) symmetric positive definite.
        rhs: (n,) right-hand side.
        max_iter: the most iterations, >= 1 (n iterations solve it exactly in exact arithmetic).
        tol: stop when the residual norm is <= tol * |rhs|.

    Returns:
        (n,) the solution.
    """
    matrix, rhs = _check_square(matrix), np.asarray(rhs, np.float64).reshape(-1)
    if rhs.shape != (matrix.shape[0],):
        raise ValueError(f"rhs must be ({matrix.shape[0]},), got {rhs.shape}")
    if max_iter < 1 or tol < 0:
        raise ValueError(f"need max_iter >= 1 and tol >= 0, got max_iter={max_iter}, tol={tol}")
    x = np.zeros_like(rhs)
    residual = rhs.copy()
    direction = residual.copy()
    norm2 = float(residual @ residual)
    stop = (tol * float(np.linalg.norm(rhs))) ** 2
    for _ in range(max_iter):
        if norm2 <= stop:
            break
        step_vec = matrix @ direction
        curvature = float(direction @ step_vec)
        if curvature <= 0:
            raise ValueError("matrix is not positive definite along a search direction")
        step = norm2 / curvature
        x += step * direction
        residual -= step * step_vec
        new_norm2 = float(residual @ residual)
        direction = residual + (new_norm2 / norm2) * direction
        norm2 = new_norm2
    return x


def diffusion_scores(
    sims: np.ndarray, k: int, gamma: float, alpha: float, source: int = 0, max_iter: int = 20
) -> np.ndarray:
    """Diffusion from one node over the truncated kNN graph (Iscen et al., CVPR 2017).

    Solves ``(I - alpha S) f = e_source`` by conjugate gradient, with S = D^-1/2 A D^-1/2 the symmetrically
    normalised :func:`mutual_knn_affinity` (a node without edges has a zero row). Nodes the source cannot reach
    score 0.

    Args:
        sims: (n, n) pairwise similarities of the graph's nodes.
        k, gamma: the graph (:func:`mutual_knn_affinity`).
        alpha: diffusion weight, in [0, 1).
        source: the node diffused from (the query).
        max_iter: conjugate-gradient iterations.

    Returns:
        (n,) diffusion scores (higher = closer to the source).
    """
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"alpha must be in [0, 1), got {alpha}")
    affinity = mutual_knn_affinity(sims, k, gamma)
    n = affinity.shape[0]
    if not 0 <= source < n:
        raise ValueError(f"source must be a node in [0, {n}), got {source}")
    degree = affinity.sum(axis=1)
    inv_sqrt = np.where(degree > 0, 1.0 / np.sqrt(np.where(degree > 0, degree, 1.0)), 0.0)
    normalised = inv_sqrt[:, None] * affinity * inv_sqrt[None, :]
    rhs = np.zeros(n)
    rhs[source] = 1.0
    return conjugate_gradient(np.eye(n) - alpha * normalised, rhs, max_iter=max_iter)


def superglobal_refine(candidates: np.ndarray, k: int, beta: float) -> np.ndarray:
    """SuperGlobal's database-side refinement (Shao et al., ICCV 2023), within a candidate list.

    Each candidate becomes the weighted mean of itself (weight 1) and its k - 1 nearest other candidates
    (weight ``beta * max(s, 0)``): ``(x + beta * sum_j s_j x_j) / (1 + beta * sum_j s_j)``. Not re-normalised, as
    in the paper's code.

    Args:
        candidates: (m, d) descriptors of a query's retrieved images.
        k: the candidate and its neighbours, >= 1 (capped at m).
        beta: neighbour weight, >= 0.

    Returns:
        (m, d) refined descriptors, float64.
    """
    candidates = _floating(candidates)
    if candidates.ndim != 2 or candidates.shape[0] == 0:
        raise ValueError(f"candidates must be a non-empty (m, d) array, got shape {candidates.shape}")
    if k < 1 or beta < 0:
        raise ValueError(f"need k >= 1 and beta >= 0, got k={k}, beta={beta}")
    sims = (candidates @ candidates.T).astype(np.float64)  # in the input's precision: float32 is much faster
    candidates = candidates.astype(np.float64)
    near = neighbour_order(sims)[:, : min(k, candidates.shape[0])]
    weights = beta * np.maximum(np.take_along_axis(sims, near, axis=1), 0.0)
    weights[:, 0] = 1.0  # the candidate itself
    return np.einsum("mk,mkd->md", weights, candidates[near]) / weights.sum(axis=1, keepdims=True)


def superglobal_scores(
    query: np.ndarray, candidates: np.ndarray, k: int, beta: float, expand_query: bool = True
) -> np.ndarray:
    """SuperGlobal's re-ranking scores of one query's candidates (its refinement part; the scale-GeM part
    needs the model and is not here).

    ``s1_j = q . r_j`` against the refined candidates r (:func:`superglobal_refine`). With ``expand_query``, the
    expanded query is the element-wise maximum of the k best refined candidates by s1, and the score is
    ``(s1_j + q+ . r_j) / 2``.

    Args:
        query: (d,) query descriptor.
        candidates: (m, d) its retrieved images' descriptors.
        k, beta: see :func:`superglobal_refine` (k also counts the candidates pooled into the query).
        expand_query: add the max-pooled query expansion.

    Returns:
        (m,) scores (higher = better).
    """
    query = np.asarray(query, np.float64).reshape(-1)
    refined = superglobal_refine(candidates, k, beta)
    if query.shape != (refined.shape[1],):
        raise ValueError(f"query must be ({refined.shape[1]},), got {query.shape}")
    scores = refined @ query
    if not expand_query:
        return scores
    best = np.argsort(-scores, kind="stable")[: min(k, refined.shape[0])]
    expanded = refined[best].max(axis=0)
    return (scores + refined @ expanded) / 2.0


def rerank_heads(
    queries: np.ndarray,
    db: np.ndarray,
    ranked: np.ndarray,
    top: int,
    scorer: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> np.ndarray:
    """Re-order each query's first ``top`` results by a score over its local neighbourhood (the rest keep place).

    Args:
        queries: (n_queries, d).
        db: (n_db, d).
        ranked: (n_queries, t) database positions, best first, -1 padded.
        top: leading results re-ranked, >= 1.
        scorer: (query (d,), candidates (m, d)) -> (m,) scores, higher first; ties keep the original order.

    Returns:
        (n_queries, t) re-ranked positions.
    """
    queries, db, ranked = np.asarray(queries), np.asarray(db), np.asarray(ranked, np.int64)
    if ranked.ndim != 2 or ranked.shape[0] != queries.shape[0]:
        raise ValueError(f"ranked must be ({queries.shape[0]}, t), got {ranked.shape}")
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    out = ranked.copy()
    for q in range(ranked.shape[0]):
        head = ranked[q, :top]
        head = head[head >= 0]
        if head.size < 2:
            continue
        scores = np.asarray(scorer(queries[q], db[head]), np.float64)
        out[q, : head.size] = head[np.argsort(-scores, kind="stable")]
    return out


def _floating(x: np.ndarray) -> np.ndarray:
    """``x`` as a float array, float32 kept (its products are much faster than float64's), else float64."""
    x = np.asarray(x)
    return x if x.dtype in (np.float32, np.float64) else x.astype(np.float64)


def _with_query(query: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """(m + 1, m + 1) float64 similarities of the query (node 0) and its candidates, computed in the inputs'
    precision."""
    nodes = np.vstack([_floating(query).reshape(1, -1), _floating(candidates)])
    return (nodes @ nodes.T).astype(np.float64)


def k_reciprocal_rerank(
    queries: np.ndarray, db: np.ndarray, ranked: np.ndarray, top: int, k1: int, k2: int, lambda_: float
) -> np.ndarray:
    """k-reciprocal re-ranking (:func:`k_reciprocal_distances`) of each query's top results, over the graph of
    the query and those results; shapes as :func:`rerank_heads`."""

    def scorer(query: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        return -k_reciprocal_distances(_with_query(query, candidates), k1, k2, lambda_)[0, 1:]

    return rerank_heads(queries, db, ranked, top, scorer)


def diffusion_rerank(
    queries: np.ndarray,
    db: np.ndarray,
    ranked: np.ndarray,
    top: int,
    k: int,
    gamma: float,
    alpha: float,
    max_iter: int = 20,
) -> np.ndarray:
    """Diffusion re-ranking (:func:`diffusion_scores` from the query node) of each query's top results, over
    the graph of the query and those results; shapes as :func:`rerank_heads`."""

    def scorer(query: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        sims = _with_query(query, candidates)
        return diffusion_scores(sims, k, gamma, alpha, source=0, max_iter=max_iter)[1:]

    return rerank_heads(queries, db, ranked, top, scorer)


def superglobal_rerank(
    queries: np.ndarray,
    db: np.ndarray,
    ranked: np.ndarray,
    top: int,
    k: int,
    beta: float,
    expand_query: bool = True,
) -> np.ndarray:
    """SuperGlobal-style re-ranking (:func:`superglobal_scores`) of each query's top results; shapes as
    :func:`rerank_heads`."""

    def scorer(query: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        return superglobal_scores(query, candidates, k, beta, expand_query)

    return rerank_heads(queries, db, ranked, top, scorer)


def graph_rerank(queries: np.ndarray, db: np.ndarray, ranked: np.ndarray, cfg: RerankConfig) -> np.ndarray:
    """The neighbourhood re-ranking ``cfg.graph`` names over the first ``cfg.graph_top`` results ("none":
    ``ranked`` unchanged); shapes as :func:`rerank_heads`."""
    if cfg.graph == "k_reciprocal":
        return k_reciprocal_rerank(queries, db, ranked, cfg.graph_top, cfg.kr_k1, cfg.kr_k2, cfg.kr_lambda)
    if cfg.graph == "diffusion":
        return diffusion_rerank(
            queries, db, ranked, cfg.graph_top, cfg.diffusion_k, cfg.diffusion_gamma, cfg.diffusion_alpha,
            cfg.diffusion_iters,
        )  # fmt: skip
    if cfg.graph == "superglobal":
        return superglobal_rerank(
            queries, db, ranked, cfg.graph_top, cfg.superglobal_k, cfg.superglobal_beta, cfg.superglobal_qe
        )
    if cfg.graph == "none":
        return ranked
    raise ValueError(f"unknown graph re-ranking {cfg.graph!r}")


def expansion_neighbours(sims: np.ndarray, idx: np.ndarray, n: int, cfg: RerankConfig) -> np.ndarray:
    """The neighbours DBA/QE average in: the first ``n``, or with ``cfg.adaptive_n`` a count per row from
    :func:`adaptive_counts` (``n`` the cap), the rest set to -1; shape as ``idx`` (n_rows, t)."""
    if not cfg.adaptive_n:
        return np.asarray(idx, np.int64)
    counts = adaptive_counts(sims, idx, n, cfg.adaptive_ratio, cfg.adaptive_floor, min(cfg.adaptive_min_n, n))
    return truncate_neighbours(idx, counts)


# ---------------------------------------------------------------------------------------------------------------
# The whole re-ranking pipeline


@dataclass
class RetrievalResult:
    """What :func:`run_retrieval` produced.

    Attributes:
        ranked: (n_queries, top) database positions best first, -1 padded.
        query_vectors: (n_queries, d) the final (expanded) queries.
        db_vectors: (n_db, d) the index descriptors searched (after DBA).
        query_prediction: labels predicted for the queries (None without label steps).
        db_prediction: labels predicted for the database (None without label steps).
        inliers: (n_queries, spatial_top) inliers of the verified head, or None.
        seconds: wall time per step.
    """

    ranked: np.ndarray
    query_vectors: np.ndarray
    db_vectors: np.ndarray
    query_prediction: LabelPrediction | None = None
    db_prediction: LabelPrediction | None = None
    inliers: np.ndarray | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def full_ranking(self) -> np.ndarray:
        """(n_queries, n_db): the re-ranked lists followed by the rest of the database by exact similarity to
        the final queries (the revisitop layout is its transpose). Dense: meant for benchmark-sized databases
        (it holds an n_queries x n_db similarity matrix)."""
        sims = self.query_vectors @ self.db_vectors.T
        order = np.lexsort((np.broadcast_to(np.arange(sims.shape[1]), sims.shape), -sims), axis=-1)
        return complete_ranking(self.ranked, order)


def label_steps_enabled(cfg: RerankConfig) -> bool:
    """True when the config asks for a step that needs train-set label predictions."""
    return cfg.sort_step or cfg.insert_step


@dataclass(frozen=True)
class SearchDatabase:
    """The database side of :func:`run_retrieval`, prepared once for any number of searches (serving prepares it
    once per loaded version: DBA and the database's label votes cost a search of the whole database).

    Attributes:
        raw: (n_db, d) the index descriptors as extracted.
        vectors: (n_db, d) the descriptors searched: DBA-augmented with ``rerank.dba``, else ``raw``.
        index: the index over ``vectors``.
        train_index: the train set's index (label steps), or None.
        prediction: kNN labels of the raw database over the train set (label steps), or None.
        seconds: wall time of each preparation step.
    """

    raw: np.ndarray
    vectors: np.ndarray
    index: ShardedIndex
    train_index: ShardedIndex | None = None
    prediction: LabelPrediction | None = None
    seconds: dict[str, float] = field(default_factory=dict)


class _Laps:
    """Wall time per named step, accumulated."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._clock = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self._clock
        self._clock = now


def prepare_database(
    db: np.ndarray,
    cfg: RerankConfig,
    *,
    index_cfg: IndexConfig,
    seed: int = 0,
    train: LabelledSet | None = None,
    first_stage: ShardedIndex | None = None,
) -> SearchDatabase:
    """Index ``db`` (or take ``first_stage``), apply DBA (``cfg.dba``) and, with the label steps and a ``train``
    set, vote the database's labels: everything of a search that does not depend on the queries.

    Args:
        db: (n_db, d) L2-normalised index descriptors.
        cfg: the re-ranking config (``dba*``, ``adaptive*``, the label steps, ``label_k``).
        index_cfg: the index built over the (augmented) database.
        seed: seeds IVF-PQ training.
        train: labelled train descriptors (the sort- and insert-steps).
        first_stage: a prebuilt index over ``db`` (e.g. loaded from disk).

    Raises:
        ValueError: ``first_stage`` does not hold ``db``'s vectors.
    """
    laps = _Laps()
    raw = vectors = np.asarray(db, np.float32)
    index = first_stage if first_stage is not None else build_in_memory(raw, index_cfg, seed=seed)
    if index.ntotal != raw.shape[0]:
        raise ValueError(f"first_stage holds {index.ntotal} vectors, db has {raw.shape[0]}")
    laps("index")
    if cfg.dba:
        dba_sims, dba_idx = drop_self(*index.search(raw, cfg.dba_n + 1))
        dba_idx = expansion_neighbours(dba_sims, dba_idx, cfg.dba_n, cfg)
        vectors = database_side_augmentation(raw, dba_sims, dba_idx, cfg.dba_n, cfg.dba_alpha)
        # the augmented descriptors are searched through a fresh index of the same kind
        index = build_in_memory(vectors, index_cfg, seed=seed)
        laps("dba")
    train_index = prediction = None
    if train is not None and label_steps_enabled(cfg):
        train_index = build_in_memory(np.asarray(train.vectors, np.float32), index_cfg, seed=seed)
        # labels come from the original descriptors: they describe each image itself, not its neighbourhood
        prediction = _vote_labels(raw, train_index, train, cfg.label_k)
        laps("labels")
    return SearchDatabase(raw, vectors, index, train_index, prediction, laps.seconds)


def run_retrieval(
    queries: np.ndarray,
    db: np.ndarray,
    cfg: RerankConfig,
    *,
    top: int,
    index_cfg: IndexConfig,
    seed: int = 0,
    train: LabelledSet | None = None,
    verifier: Verifier | None = None,
    query_ids: Sequence[str] = (),
    db_ids: Sequence[str] = (),
    first_stage: ShardedIndex | None = None,
    database: SearchDatabase | None = None,
) -> RetrievalResult:
    """Search and re-rank: DBA -> QE/DQE -> graph re-ranking (``cfg.graph``) -> spatial verification ->
    sort-step -> insert-step -> cut to top.

    Args:
        queries: (n_queries, d) L2-normalised query descriptors.
        db: (n_db, d) L2-normalised index descriptors.
        cfg: which steps run and their parameters.
        top: results per query.
        index_cfg: the index built over the (augmented) database for searching.
        seed: seeds DQE's negative set and IVF-PQ training.
        train: labelled train descriptors, needed by the sort- and insert-steps.
        verifier: spatial verifier, needed when ``cfg.spatial``.
        query_ids, db_ids: ids given to the verifier (needed with ``cfg.spatial``).
        first_stage: a prebuilt index over ``db`` (e.g. loaded from disk): it answers DBA's neighbour search,
            or the query search when DBA is off.
        database: ``db`` prepared by :func:`prepare_database` with the same ``cfg``, ``index_cfg``, ``seed`` and
            ``train`` (then ``first_stage`` is not used); None = prepared here.

    Returns:
        A :class:`RetrievalResult`.
    """
    _check_retrieval_args(cfg, top, train is not None, verifier is not None, query_ids, db_ids, queries, db)
    if database is None:
        database = prepare_database(
            db, cfg, index_cfg=index_cfg, seed=seed, train=train, first_stage=first_stage
        )
    elif database.raw.shape != np.shape(db):
        raise ValueError(f"the prepared database holds {database.raw.shape}, db is {np.shape(db)}")
    laps = _Laps()
    laps.seconds.update(database.seconds)
    db, index = database.vectors, database.index
    queries = raw_queries = np.asarray(queries, np.float32)
    depth = search_depth(cfg, top)
    sims, ranked = index.search(queries, depth)
    laps("search")
    if cfg.qe != "none":
        queries = expand_queries(queries, db, sims, ranked, cfg, seed)
        sims, ranked = index.search(queries, depth)
        laps("qe")
    if cfg.graph != "none":
        ranked = graph_rerank(queries, db, ranked, cfg)
        laps(cfg.graph)
    inliers = None
    if cfg.spatial and verifier is not None:
        ranked, inliers = spatial_rerank(
            ranked, query_ids, db_ids, verifier, cfg.spatial_top, cfg.spatial_min_inliers
        )
        laps("spatial")
    query_pred = db_pred = None
    if train is not None and database.train_index is not None and database.prediction is not None:
        query_pred, db_pred = (
            _vote_labels(raw_queries, database.train_index, train, cfg.label_k),
            database.prediction,
        )
        laps("labels")
        ranked = _label_steps(ranked, query_pred, db_pred, cfg, depth, laps)
    ranked = _cut(ranked, top)
    return RetrievalResult(ranked, queries, db, query_pred, db_pred, inliers, laps.seconds)


def _check_retrieval_args(
    cfg: RerankConfig,
    top: int,
    has_train: bool,
    has_verifier: bool,
    query_ids: Sequence[str],
    db_ids: Sequence[str],
    queries: np.ndarray,
    db: np.ndarray,
) -> None:
    """Raise ValueError when :func:`run_retrieval` lacks what ``cfg`` asks for."""
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    if label_steps_enabled(cfg) and not has_train:
        raise ValueError("the sort/insert steps need the train set's descriptors and labels (train=None)")
    if cfg.spatial and (not has_verifier or len(query_ids) != len(queries) or len(db_ids) != len(db)):
        raise ValueError("spatial re-ranking needs a verifier and the query and database ids")


def search_depth(cfg: RerankConfig, top: int) -> int:
    """How many neighbours the first search returns: enough for the results and every enabled step."""
    return max(
        top, cfg.qe_n, cfg.spatial_top if cfg.spatial else 1, cfg.graph_top if cfg.graph != "none" else 1
    )


def expand_queries(
    queries: np.ndarray, db: np.ndarray, sims: np.ndarray, ranked: np.ndarray, cfg: RerankConfig, seed: int
) -> np.ndarray:
    """Queries expanded by alpha-QE or DQE (``cfg.qe``) over their first search's neighbours.

    Args:
        queries: (n_queries, d) query descriptors.
        db: (n_db, d) database descriptors.
        sims, ranked: (n_queries, depth) similarities and database rows of the first search.
        cfg: ``qe`` (``alpha`` or ``dqe``) and its parameters.
        seed: seeds DQE's negative set.

    Returns:
        (n_queries, d) expanded queries.
    """
    expand_idx = expansion_neighbours(sims, ranked, cfg.qe_n, cfg)
    if cfg.qe == "alpha":
        return alpha_query_expansion(queries, db, sims, expand_idx, cfg.qe_n, cfg.qe_alpha)
    negatives = dqe_negatives(db.shape[0], cfg.dqe_negatives, seed)
    return discriminative_query_expansion(
        queries, db, expand_idx, cfg.qe_n, negatives, cfg.dqe_regularization
    )


def _label_steps(
    ranked: np.ndarray,
    query_pred: LabelPrediction,
    db_pred: LabelPrediction,
    cfg: RerankConfig,
    depth: int,
    laps: _Laps,
) -> np.ndarray:
    """The sort- and insert-steps (those ``cfg`` enables) over ``ranked``, each timed in ``laps``."""
    if cfg.sort_step:
        ranked = sort_step(ranked, query_pred.labels, db_pred.labels)
        laps("sort_step")
    if cfg.insert_step:
        ranked = insert_step(
            ranked, query_pred.labels, db_pred.labels, db_pred.confidence, cfg.insert_threshold, depth
        )
        laps("insert_step")
    return ranked


def _cut(ranked: np.ndarray, top: int) -> np.ndarray:
    if ranked.shape[1] >= top:
        return ranked[:, :top]
    return np.pad(ranked, ((0, 0), (0, top - ranked.shape[1])), constant_values=-1)


def _vote_labels(
    vectors: np.ndarray, train_index: ShardedIndex, train: LabelledSet, k: int
) -> LabelPrediction:
    """kNN soft-voting labels of ``vectors`` over the train set's index."""
    k_eff = min(k, train_index.ntotal)
    sims, idx = train_index.search(vectors, k_eff)
    labels = neighbour_labels(idx, train.labels)
    return predict_labels(np.where(idx >= 0, sims, 0.0), labels, k_eff)


def applied_steps(rerank: RerankConfig) -> list[str]:
    """Names of the re-ranking steps a config switches on, in pipeline order."""
    steps = ["dba"] if rerank.dba else []
    steps += [{"alpha": "alpha_qe", "dqe": "dqe"}[rerank.qe]] if rerank.qe != "none" else []
    steps += ["spatial"] if rerank.spatial else []
    steps += [name for name in ("sort_step", "insert_step") if getattr(rerank, name)]
    return steps


REVISITOP_RERANK_STEPS = ("none", "dba", "qe", "dqe")


def rerank_for_steps(base: RerankConfig, steps: Sequence[str] | None) -> RerankConfig:
    """The re-ranking config for a benchmark without a train set: ``base`` (steps None) or exactly ``steps``
    (from :data:`REVISITOP_RERANK_STEPS`), with spatial and label-based steps off either way."""
    off = {"spatial": False, "sort_step": False, "insert_step": False}
    if steps is None:
        return replace(base, **off)  # type: ignore[arg-type]
    unknown = sorted(set(steps) - set(REVISITOP_RERANK_STEPS))
    if unknown:
        raise InputError(f"unknown re-ranking step(s) {unknown}; choose from {list(REVISITOP_RERANK_STEPS)}")
    if "qe" in steps and "dqe" in steps:
        raise InputError("choose one query expansion: qe (alpha-QE) or dqe, not both")
    qe = "alpha" if "qe" in steps else "dqe" if "dqe" in steps else "none"
    return replace(base, dba="dba" in steps, qe=qe, **off)  # type: ignore[arg-type]


def without_label_steps(cfg: RerankConfig) -> RerankConfig:
    """``cfg`` with the sort- and insert-steps switched off (no train set available)."""
    return replace(cfg, sort_step=False, insert_step=False)
