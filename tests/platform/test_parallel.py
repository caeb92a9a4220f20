from __future__ import annotations

import contextlib
import os
import socket
import threading

import pytest

from landmark.config import ParallelConfig
from landmark.platform.parallel import ClusterError, map_chunks, parallel_map, reachable_scheduler


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


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_unreachable_scheduler_is_a_user_error_naming_the_setting() -> None:
    address = f"tcp://127.0.0.1:{_closed_port()}"
    with pytest.raises(
        ClusterError, match=rf"unreachable at {address} \(flows.dask_address\): .*dask scheduler"
    ):
        reachable_scheduler(address, "flows.dask_address")
    with pytest.raises(
        ClusterError, match=r"\(parallel.address\)"
    ):  # the stage path, before any work is sent
        list(parallel_map(square, [1, 2], backend="dask", address=address, progress=False))
    with socket.create_server(("127.0.0.1", 0)) as listening:
        reachable_scheduler(f"tcp://127.0.0.1:{listening.getsockname()[1]}")  # a port that accepts passes
    reachable_scheduler("inproc://anything")  # schemes without a TCP port are left to Dask
    for bad in ("tcp://127.0.0.1", "tcp://127.0.0.1:http", "tcp://:8786", "tcp://127.0.0.1:70000"):
        with pytest.raises(ClusterError, match=r"parallel.address .* is not a scheduler address"):
            reachable_scheduler(bad)  # Dask has no default port: say so instead of probing one


def test_a_port_that_is_not_a_scheduler_is_a_user_error() -> None:
    pytest.importorskip("dask.distributed")
    web = socket.create_server(("127.0.0.1", 0))  # e.g. the address of Dask's dashboard, not its scheduler

    def answer_http() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = web.accept()
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                conn.close()

    threading.Thread(target=answer_http, daemon=True).start()
    address = f"tcp://127.0.0.1:{web.getsockname()[1]}"
    try:
        with pytest.raises(ClusterError, match=rf"no Dask scheduler answered at {address}"):
            list(parallel_map(square, [1, 2], backend="dask", address=address, progress=False))
    finally:
        web.close()
