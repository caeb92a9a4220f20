"""Row L2 normalisation, the one helper every descriptor path uses (global, local, re-ranking, recognition)."""

from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike

_TINY = 1e-12  # a norm below this counts as zero: such rows stay zero instead of dividing by ~0


def l2_normalize(x: np.ndarray, *, strict: bool = False, dtype: DTypeLike = np.float32) -> np.ndarray:
    """Vectors along the last axis scaled to unit L2 norm.

    Args:
        x: (..., D) vectors, usually (N, D) rows.
        strict: raise on non-finite values or an all-zero row instead of leaving zero rows zero (for inputs
            whose every row must have a direction, e.g. the descriptors that cleaning compares).
        dtype: the floating type computed and returned.

    Returns:
        Array of ``x``'s shape and ``dtype``; rows with norm below 1e-12 stay zero (``strict=False``).

    Raises:
        ValueError: a scalar input; with ``strict`` also NaN or infinite values, or an all-zero row (naming it).
    """
    out = np.asarray(x, dtype=dtype)
    if out.ndim == 0:
        raise ValueError("expected vectors (..., D), got a scalar")
    norms = np.linalg.norm(out, axis=-1, keepdims=True)
    if strict:
        if out.shape[-1] < 1:
            raise ValueError(f"expected vectors (..., D) with D >= 1, got shape {out.shape}")
        if not np.isfinite(out).all():
            raise ValueError("descriptors contain NaN or infinite values")
        if norms.size and float(norms.min()) == 0.0:
            row = np.unravel_index(int(np.argmin(norms)), norms.shape[:-1])
            raise ValueError(f"descriptor row {row[0] if len(row) == 1 else row} is all zeros")
    return out / np.maximum(norms, _TINY)
