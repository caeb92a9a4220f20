"""The one row normaliser: exact values, zero rows, dtypes, strict errors."""

from __future__ import annotations

import numpy as np
import pytest

from landmark.normalize import l2_normalize


def test_rows_scaled_to_unit_norm_exactly() -> None:
    got = l2_normalize(np.array([[3, 4], [0, -2], [0, 0]]))
    np.testing.assert_array_equal(got, np.array([[0.6, 0.8], [0, -1], [0, 0]], np.float32))
    assert got.dtype == np.float32


def test_any_leading_shape_and_dtype() -> None:
    x = np.arange(24, dtype=np.float64).reshape(2, 3, 4) + 1
    got = l2_normalize(x, dtype=np.float64)
    assert got.dtype == np.float64 and got.shape == (2, 3, 4)
    np.testing.assert_allclose(np.linalg.norm(got, axis=-1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(l2_normalize(np.array([2.0, 0.0])), [1.0, 0.0])  # one vector


def test_input_is_not_modified() -> None:
    x = np.array([[3.0, 4.0]], np.float32)
    l2_normalize(x)
    np.testing.assert_array_equal(x, [[3.0, 4.0]])


def test_strict_rejects_zero_rows_and_non_finite_values() -> None:
    with pytest.raises(ValueError, match="row 1 is all zeros"):
        l2_normalize(np.array([[1.0, 0.0], [0.0, 0.0]]), strict=True)
    with pytest.raises(ValueError, match="NaN or infinite"):
        l2_normalize(np.array([[np.nan, 1.0]]), strict=True)
    with pytest.raises(ValueError, match="D >= 1"):
        l2_normalize(np.zeros((3, 0)), strict=True)
    with pytest.raises(ValueError, match="scalar"):
        l2_normalize(np.float32(2.0))
    np.testing.assert_array_equal(l2_normalize(np.array([[0.0, 5.0]]), strict=True), [[0.0, 1.0]])
