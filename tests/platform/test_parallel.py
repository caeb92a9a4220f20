from __future__ import annotations

import os

import pytest

from landmark.config import ParallelConfig
from landmark.platform.parallel import map_chunks, parallel_map


def square(x: int) -> int:
    return x * x


@pytest.mark.parametrize("workers", [0, 2])
def test_local_backends_keep_order(workers: int) -> None:
    items = list(range(20))
    assert list(parallel_map(square, items, workers=workers, progress=False, chunksize=3)) == [
        x * x for x in items
    ]


def pid_of(chunk: int) -> tuple[int, int]:
    return chunk, os.getpid()


@pytest.mark.parametrize(
    ("workers", "chunks", "here"), [(0, 3, True), (1, 3, True), (2, 1, True), (2, 3, False)]
)
def test_small_work_runs_in_this_process(workers: int, chunks: int, here: bool) -> None:
    # one worker or one chunk: no pool is started (a spawned process would import torch and load the model)
    results = list(map_chunks(pid_of, list(range(chunks)), ParallelConfig(), workers=workers, progress=False))
    assert [chunk for chunk, _ in results] == list(range(chunks))
    assert all((pid == os.getpid()) == here for _, pid in results)
    assert list(parallel_map(square, [1, 2, 3], workers=1, progress=False)) == [1, 4, 9]


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
