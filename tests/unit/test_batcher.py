"""The describe batcher: concurrent queries share forward passes (one per version and resized shape) and get the
descriptors extraction gives them alone."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from landmark.config import ExtractConfig
from landmark.features.global_desc import describe_image
from landmark.serving.batcher import DescribeBatcher


class TinyModel(torch.nn.Module):
    """Conv -> ReLU -> mean pool: per-image descriptors whatever the batch; counts its forward passes."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = torch.nn.Conv2d(3, 16, 3)
        self.calls: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(int(x.shape[0]))
        return torch.relu(self.conv(x)).mean(dim=(2, 3))


class BrokenModel(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("the model broke")


def served(model: torch.nn.Module) -> Any:
    """The parts of a ServedModel the batcher reads."""
    return SimpleNamespace(
        model=model.eval(), extract=ExtractConfig(image_size=48, scales=(1.0,)), device="cpu"
    )


def image(seed: int, shape: tuple[int, int] = (60, 80)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def describe_concurrently(batcher: DescribeBatcher, jobs: list[tuple[Any, np.ndarray]]) -> list[Any]:
    """Describe every (served, image) from a thread of its own, all released at once."""
    results: list[Any] = [None] * len(jobs)
    barrier = threading.Barrier(len(jobs))

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = batcher.describe(*jobs[i])
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


@pytest.fixture
def batcher() -> Any:
    running = DescribeBatcher(max_batch=8, wait_s=0.3).start()
    yield running
    running.stop()


def test_concurrent_queries_share_a_pass_and_get_their_own_descriptor(batcher: DescribeBatcher) -> None:
    version = served(TinyModel(0))
    images = [image(i) for i in range(6)]
    alone = [describe_image(version.model, im, version.extract) for im in images]
    version.model.calls.clear()
    vectors = describe_concurrently(batcher, [(version, im) for im in images])
    assert sorted(version.model.calls) != [1] * 6 and sum(version.model.calls) == 6  # batched
    assert batcher.described == 6 and batcher.passes == len(version.model.calls)
    for got, want in zip(vectors, alone, strict=True):
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-5)
        assert abs(float(np.linalg.norm(got)) - 1.0) < 1e-5


def test_batches_never_mix_versions_or_shapes(batcher: DescribeBatcher) -> None:
    first, second = served(TinyModel(0)), served(TinyModel(1))
    jobs = [(first, image(0)), (second, image(1)), (first, image(2, (80, 60))), (first, image(3))]
    vectors = describe_concurrently(batcher, jobs)
    assert sum(first.model.calls) == 3 and sum(second.model.calls) == 1
    assert len(first.model.calls) >= 2  # the portrait image never shares the landscape images' pass
    for (version, im), got in zip(jobs, vectors, strict=True):
        np.testing.assert_allclose(got, describe_image(version.model, im, version.extract), atol=1e-5)


def test_a_failed_pass_fails_each_of_its_requests(batcher: DescribeBatcher) -> None:
    broken = served(BrokenModel())
    results = describe_concurrently(batcher, [(broken, image(i)) for i in range(3)])
    assert all(isinstance(r, RuntimeError) and "broke" in str(r) for r in results)
    good = served(TinyModel(0))
    assert batcher.describe(good, image(0)).shape == (16,)  # the worker lives on


def test_a_lone_query_does_not_wait_without_a_window() -> None:
    running = DescribeBatcher(max_batch=8, wait_s=0.0).start()
    try:
        version = served(TinyModel(0))
        running.describe(version, image(0))
        assert version.model.calls == [1]
    finally:
        running.stop()
    with pytest.raises(RuntimeError, match="not running"):
        running.describe(version, image(0))
    with pytest.raises(ValueError, match="max_batch"):
        DescribeBatcher(max_batch=0, wait_s=0.0)
