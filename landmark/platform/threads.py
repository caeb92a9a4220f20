"""The CPU thread count a chunk of work runs with, the same wherever the chunk runs.

CPU convolutions and matrix products sum in an order that depends on torch's intra-op thread count (descriptors
differ in the 7th digit), so every chunk task (extract, local, verification) runs with one thread: in the calling
process, a spawned process or a Dask worker, it writes bit-identical results; parallelism comes from chunks side
by side.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

CHUNK_THREADS = 1


@contextmanager
def torch_threads(n: int = CHUNK_THREADS) -> Iterator[None]:
    """Run with ``n`` intra-op CPU threads, then restore the previous count."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
