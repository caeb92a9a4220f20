"""Micro-batching of concurrent queries for the descriptor model.

Requests run in threads of their own; each resizes its image (as extraction does) and hands it to a
:class:`DescribeBatcher`, which describes queries that arrive within ``wait_s`` of the first one (at most
``max_batch``) in one forward pass per version and resized shape: images of different shapes are never padded
into one batch, since padding would change the pooled descriptor (the rule extraction follows). The descriptors
equal :func:`landmark.features.global_desc.describe_image`'s up to float rounding of batched kernels.

Only the forward pass is shared: decoding, image statistics, local features and the search stay in the
request's thread.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import defaultdict
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np
import torch

from landmark.features.global_desc import describe_batch, image_tensor
from landmark.serving.bundle import ServedModel


@dataclass(frozen=True)
class _Job:
    """One query waiting for its descriptor."""

    served: ServedModel
    tensor: torch.Tensor  # (3, h, w) uint8
    result: Future[np.ndarray] = field(default_factory=Future)


def group_jobs(jobs: list[_Job]) -> list[list[_Job]]:
    """Jobs that can share a forward pass: the same served version and the same resized shape, in arrival
    order of each group's first job."""
    groups: dict[tuple[int, tuple[int, ...]], list[_Job]] = defaultdict(list)
    for job in jobs:
        groups[(id(job.served), tuple(job.tensor.shape))].append(job)
    return list(groups.values())


def describe_group(jobs: list[_Job]) -> None:
    """One forward pass for jobs of one version and shape; each job's future gets its (dim,) float32
    descriptor, or the exception of the pass."""
    served = jobs[0].served
    try:
        batch = torch.stack([job.tensor for job in jobs]).to(served.device)
        use_fp16 = served.extract.fp16_on_cuda and served.device.startswith("cuda")
        vectors = describe_batch(served.model, batch, served.extract.scales, use_fp16).cpu().numpy()
    except Exception as exc:  # handed to every waiting request, which answers with it
        for job in jobs:
            job.result.set_exception(exc)
        return
    for job, vector in zip(jobs, vectors.astype(np.float32), strict=True):
        job.result.set_result(vector)


class DescribeBatcher:
    """Describes the images of concurrent requests in shared forward passes (one worker thread).

    Args:
        max_batch: most images per forward pass.
        wait_s: how long the first image of a batch waits for more (0: take only what is already queued).
    """

    def __init__(self, max_batch: int, wait_s: float) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if wait_s < 0:
            raise ValueError(f"wait_s must be >= 0, got {wait_s}")
        self.max_batch, self.wait_s = max_batch, wait_s
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.passes = 0  # forward passes run
        self.described = 0  # images described

    def start(self) -> DescribeBatcher:
        """Start the worker thread (idempotent)."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="describe-batcher", daemon=True)
                self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the worker after the queued images are described."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join()

    def describe(self, served: ServedModel, image: np.ndarray) -> np.ndarray:
        """The descriptor of one decoded image, described with ``served`` in a shared forward pass.

        Args:
            served: the version answering the request (batches never mix versions).
            image: (H, W, 3) uint8 RGB.

        Returns:
            (dim,) float32, L2-normalised.

        Raises:
            RuntimeError: the batcher is not running.
        """
        if self._thread is None:
            raise RuntimeError("the describe batcher is not running (call start())")
        job = _Job(served, image_tensor(image, served.extract))
        self._queue.put(job)
        return job.result.result()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs, stopping = self._collect(first)
            for group in group_jobs(jobs):
                describe_group(group)
                self.passes += 1
                self.described += len(group)
            if stopping:
                return

    def _collect(self, first: _Job) -> tuple[list[_Job], bool]:
        """``first`` and the jobs arriving within ``wait_s`` of it (at most ``max_batch``); True when the stop
        marker came meanwhile."""
        jobs, deadline = [first], time.monotonic() + self.wait_s
        while len(jobs) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                return jobs, True
            jobs.append(job)
        return jobs, False
