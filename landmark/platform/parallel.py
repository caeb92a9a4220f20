"""One executor interface for heavy per-item work (decode, render, extract, verify).

``parallel_map`` runs a picklable function over items in order, on the calling thread (``workers=0``), a local
process pool, or a Dask cluster. With a :class:`~landmark.config.ParallelConfig` (``parallel:`` in params.yaml)
the backend, the scheduler address and the chunk size come from it: on Dask the items are cut into chunks of
``chunk_images`` and each chunk is one Dask task. ``map_chunks`` is the form for stages whose unit of work is a
chunk that writes its own store shard: one task per chunk, so a worker lost mid-stage costs one chunk, which the
scheduler runs again elsewhere (chunks are idempotent: a rerun rewrites the same shard atomically).

Results come back in input order so outputs never depend on the backend or the number of workers.
"""

from __future__ import annotations

import multiprocessing
import socket
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from tqdm.auto import tqdm

from landmark.errors import LandmarkError

if TYPE_CHECKING:
    from dask.distributed import Client

    from landmark.config import ParallelConfig

T = TypeVar("T")
R = TypeVar("R")

Backend = Literal["local", "dask"]


class ClusterError(LandmarkError, ConnectionError):
    """The Dask scheduler named in the config cannot be reached (a set-up problem, not a bug)."""


SCHEDULER_START = (
    "start one (`dask scheduler`, then `dask worker ADDRESS` on each machine; README 'Scale-out') or set the"
    ' address to "" to run on this machine'
)


def reachable_scheduler(address: str, setting: str = "parallel.address", timeout: float = 5.0) -> None:
    """Check that a TCP connection to the Dask scheduler at ``address`` (``tcp://host:port`` or ``tls://...``)
    opens within ``timeout`` seconds; other schemes (``inproc://``, ``ucx://``) are left to Dask.

    Raises:
        ClusterError: it does not, naming ``setting``, the address, the reason and how to start a scheduler.
    """
    scheme, _, rest = address.partition("://")
    if scheme.lower() not in ("tcp", "tls"):
        return
    host, colon, port = rest.rstrip("/").rpartition(":")
    host = host.strip("[]")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ClusterError(f"{setting} {address!r} is not a scheduler address: expected tcp://host:port")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        timed_out = isinstance(exc, TimeoutError)
        reason = f"no connection within {timeout:g} s" if timed_out else exc.strerror or str(exc)
        raise ClusterError(
            f"Dask scheduler unreachable at {address} ({setting}): {reason}; {SCHEDULER_START}"
        ) from exc


def chunked(items: Sequence[T], size: int) -> list[list[T]]:
    """Consecutive slices of at most ``size`` items, in order (empty input: no chunks).

    Raises:
        ValueError: ``size`` < 1.
    """
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    return [list(items[s : s + size]) for s in range(0, len(items), size)]


def parallel_map(
    fn: Callable[[T], R],
    items: Sequence[T],
    *,
    config: ParallelConfig | None = None,
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
        config: the ``parallel`` section; when given it sets ``backend``, ``address``, and on Dask the chunk
            size (``chunk_images`` items per Dask task) and the LocalCluster size (``workers``).
        workers: local backend: 0 or 1 runs in this process, N > 1 uses N processes (one item: this process).
            Dask without an address: the LocalCluster's worker processes (``config.workers`` when a config is
            given).
        backend: ``"local"`` or ``"dask"`` (``address`` = scheduler address; None starts a local cluster).
        desc: progress-bar label.
        progress: show a progress bar.
        chunksize: items per task of the process pool (and of Dask without a config).
    """
    dask_workers, dask_chunk = workers, chunksize
    if config is not None:
        backend, address = config.backend, config.address or None
        dask_workers, dask_chunk = config.workers, config.chunk_images
    _check(workers, backend)
    bar = tqdm(total=len(items), desc=desc, disable=not progress, unit="item")
    try:
        if backend == "dask":
            chunks = chunked(items, max(dask_chunk, 1))
            for results in _dask_map(_apply_chunk, [(fn, c) for c in chunks], address, dask_workers):
                bar.update(len(results))
                yield from results
            return
        for result in _local_map(fn, items, workers, chunksize):
            bar.update(1)
            yield result
    finally:
        bar.close()


def map_chunks(
    fn: Callable[[T], R],
    chunks: Sequence[T],
    config: ParallelConfig,
    *,
    workers: int = 0,
    desc: str | None = None,
    progress: bool = True,
    sizes: Sequence[int] | None = None,
) -> Iterator[R]:
    """Yield ``fn(chunk)`` for every chunk, in order: one task per chunk on the configured backend.

    Args:
        fn: a module-level (picklable) function of one chunk task (e.g. "describe these images and write shard
            k"); it must be idempotent, since Dask runs a chunk again when the worker running it dies.
        chunks: the chunk tasks.
        config: the ``parallel`` section (backend, address, LocalCluster size).
        workers: local backend: processes; 0 or 1, or a single chunk, run in this process (chunk functions set
            their own thread count, :mod:`landmark.platform.threads`, so the results are the same).
        desc, progress: progress bar, counted in items when ``sizes`` (items per chunk) is given.
    """
    _check(workers, config.backend)
    counts = list(sizes) if sizes is not None else [1] * len(chunks)
    bar = tqdm(total=sum(counts), desc=desc, disable=not progress, unit="item" if sizes else "chunk")
    try:
        if config.backend == "dask":
            results: Iterable[R] = _dask_map(fn, chunks, config.address or None, config.workers)
        else:
            # spawned, not forked: chunk tasks run torch, and a child forked from a parent whose OpenMP pool is
            # already running (any torch op before, e.g. loading the model) can hang on its first parallel op
            results = _local_map(fn, chunks, workers, 1, start="spawn")
        for count, result in zip(counts, results, strict=False):
            bar.update(count)
            yield result
    finally:
        bar.close()


def _check(workers: int, backend: str) -> None:
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    if backend not in ("local", "dask"):
        raise ValueError(f"unknown executor backend {backend!r}; expected 'local' or 'dask'")


def _apply_chunk(task: tuple[Callable[[Any], Any], Sequence[Any]]) -> list[Any]:
    fn, chunk = task
    return [fn(item) for item in chunk]


def in_process(workers: int, tasks: int) -> bool:
    """Whether the local backend runs ``tasks`` tasks in the calling process rather than in a pool of ``workers``
    processes: with at most one worker or at most one task a pool only adds its start-up (a spawned chunk process
    imports torch and loads its model, seconds) to the same serial work."""
    return workers <= 1 or tasks <= 1


def _local_map(
    fn: Callable[[T], R], items: Sequence[T], workers: int, chunksize: int, start: str | None = None
) -> Iterator[R]:
    if in_process(workers, len(items)):
        yield from map(fn, items)
        return
    context = multiprocessing.get_context(start) if start else None
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        yield from pool.map(fn, items, chunksize=max(chunksize, 1))


@contextmanager
def submitter(config: ParallelConfig | None, workers: int) -> Iterator[Callable[[Callable[[T], R], T], R]]:
    """A call-and-wait function for streaming work, ``run(fn, item) -> fn(item)``, on the configured backend.

    For work whose items arrive one by one (e.g. downloads finishing in threads) where :func:`parallel_map`, which
    takes all items first, would make every item wait for the slowest arrival. Thread-safe: many threads may wait
    on it at once. ``config`` None or backend ``local``: in the calling thread with ``workers`` <= 1, else in a
    pool of ``workers`` spawned processes (spawned: the caller's threads may hold locks a fork would copy);
    ``dask``: one task per call on the cluster (``config.address``, or a LocalCluster of ``config.workers``).
    """
    backend = config.backend if config is not None else "local"
    _check(workers, backend)
    if config is not None and backend == "dask":
        with dask_client(config.address or None, config.workers) as client:
            yield lambda fn, item: client.submit(fn, item, pure=False).result()
    elif in_process(workers, 2):
        yield lambda fn, item: fn(item)
    else:
        with ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn")
        ) as pool:
            yield lambda fn, item: pool.submit(fn, item).result()


@contextmanager
def dask_client(address: str | None, workers: int) -> Iterator[Client]:
    """A client of the scheduler at ``address``, or of a LocalCluster of ``workers`` single-threaded worker
    processes on 127.0.0.1 (no dashboard) that is closed on exit."""
    from dask.distributed import Client, LocalCluster

    cluster = None
    if address is None:
        cluster = LocalCluster(
            n_workers=max(workers, 1),
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            host="127.0.0.1",
        )
        address = cluster.scheduler_address
    else:
        reachable_scheduler(address)
    try:
        try:
            client = Client(address)
        except Exception as exc:
            # the port accepts, but what answers is not a Dask scheduler: Dask then fails in many ways (a timeout,
            # a closed stream, or a MemoryError reading an HTTP reply as a frame length)
            if cluster is not None:  # our own LocalCluster: a bug, not a set-up problem
                raise
            raise ClusterError(
                f"no Dask scheduler answered at {address}: {type(exc).__name__}: {exc}; {SCHEDULER_START}"
            ) from exc
        with client:
            yield client
    finally:
        if cluster is not None:
            cluster.close()


def _dask_map(fn: Callable[[T], R], items: Sequence[T], address: str | None, workers: int) -> Iterator[R]:
    if not items:
        return
    with dask_client(address, workers) as client:
        # pure=False: a chunk is a job with side effects (its shard), never deduplicated by key; a worker that
        # dies takes its running chunk with it and the scheduler runs that chunk again on another worker
        futures = client.map(fn, items, pure=False)
        try:
            for future in futures:
                yield future.result()
        finally:
            client.cancel(futures)
