"""Nearest-neighbour search over L2-normalised descriptors (FAISS, inner product = cosine similarity)."""

from __future__ import annotations

import faiss
import numpy as np


def _as_float32_matrix(x: np.ndarray, name: str) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-d (n, dim) array, got shape {x.shape}")
    return x


def build_exact_index(vectors: np.ndarray) -> faiss.Index:
    """Exact inner-product index over ``vectors`` (n, dim)."""
    vectors = _as_float32_matrix(vectors, "vectors")
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    return index


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` neighbours of each query.

    Args:
        index: a FAISS index of dimension dim.
        queries: (n_queries, dim).
        k: neighbours per query; clipped to the index size.

    Returns:
        (similarities, indices), each (n_queries, min(k, ntotal)), best first.
    """
    queries = _as_float32_matrix(queries, "queries")
    if queries.shape[1] != index.d:
        raise ValueError(f"queries have dim {queries.shape[1]}, the index has dim {index.d}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = min(k, index.ntotal)
    sims, idx = index.search(queries, k)
    return sims, idx.astype(np.int64)
