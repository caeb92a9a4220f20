"""One executor interface for heavy per-item work (decode, render, extract, verify).

``parallel_map`` runs a picklable function over items in order, on the calling thread (``workers=0``), a local
process pool, or a Dask cluster (``backend="dask"``, with ``address`` of a running scheduler). Results come back
in input order so outputs never depend on the backend or the number of workers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Literal, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
R = TypeVar("R")

Backend = Literal["local", "dask"]


def parallel_map(
    fn: Callable[[T], R],
    items: Sequence[T],
    *,
    workers: int = 0,
    backend: Backend = "local",
    address: str | None = None,
    desc: str | None = None,
    progress: bool = True,
    chunksize: int = 1,
) -> Iterator[R]:
    """Yield ``fn(item)`` for every item, in input order, with a progress bar.

    Args:
        fn: a module-level (picklable) function.
        items: the inputs.
        workers: 0 runs in this process; N > 0 uses N local processes (``backend="local"``).
        backend: ``"local"`` or ``"dask"`` (``address`` = scheduler address; None starts a local cluster).
        desc: progress-bar label.
        progress: show a progress bar.
        chunksize: items per task for the process pool.
    """
    bar = tqdm(total=len(items), desc=desc, disable=not progress, unit="item")
    try:
        for result in _dispatch(fn, items, workers, backend, address, chunksize):
            bar.update(1)
            yield result
    finally:
        bar.close()


def _dispatch(
    fn: Callable[[T], R],
    items: Sequence[T],
    workers: int,
    backend: Backend,
    address: str | None,
    chunksize: int,
) -> Iterable[R]:
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    if backend == "dask":
        return _dask_map(fn, items, address, workers)
    if backend != "local":
        raise ValueError(f"unknown executor backend {backend!r}; expected 'local' or 'dask'")
    if workers == 0 or len(items) <= 1:
        return map(fn, items)
    return _pool_map(fn, items, workers, chunksize)


def _pool_map(fn: Callable[[T], R], items: Sequence[T], workers: int, chunksize: int) -> Iterator[R]:
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(fn, items, chunksize=chunksize)


def _dask_map(fn: Callable[[T], R], items: Sequence[T], address: str | None, workers: int) -> Iterator[R]:
    from dask.distributed import Client, LocalCluster

    cluster = None
    if address is None:
        cluster = LocalCluster(
            n_workers=max(workers, 1), threads_per_worker=1, dashboard_address=None, host="127.0.0.1"
        )
        address = cluster.scheduler_address
    try:
        with Client(address) as client:
            futures = client.map(fn, items, pure=False)
            for future in futures:
                yield future.result()
    finally:
        if cluster is not None:
            cluster.close()
