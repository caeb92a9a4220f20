from __future__ import annotations

import pytest

from landmark.platform.parallel import parallel_map


def square(x: int) -> int:
    return x * x


@pytest.mark.parametrize("workers", [0, 2])
def test_local_backends_keep_order(workers: int) -> None:
    items = list(range(20))
    assert list(parallel_map(square, items, workers=workers, progress=False, chunksize=3)) == [
        x * x for x in items
    ]


def test_dask_backend_keeps_order() -> None:
    pytest.importorskip("dask.distributed")
    items = list(range(7))
    assert list(parallel_map(square, items, workers=1, backend="dask", progress=False)) == [
        x * x for x in items
    ]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="workers"):
        list(parallel_map(square, [1, 2], workers=-1, progress=False))
    with pytest.raises(ValueError, match="unknown executor backend"):
        list(parallel_map(square, [1, 2], backend="spark", progress=False))  # type: ignore[arg-type]
