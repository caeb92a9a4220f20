"""benchmarks/gpu_check.py's bookkeeping: a failing or skipped section is recorded and the run goes on; the
training-log rates and the descriptor agreement on hand-built numbers. (The sections themselves run in
``python benchmarks/gpu_check.py --device cpu --tiny``, about a minute: not part of the suite.)"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from bench_loader import load_benchmark

from landmark.config import load_config


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_benchmark("gpu_check")


def _run(bench: ModuleType, tmp_path: Path, seconds: float = 100.0) -> Any:
    args = argparse.Namespace(device="cpu", tiny=True)
    return bench.Run(
        args, bench.TINY, load_config(None), [], tmp_path, tmp_path, time.perf_counter() + seconds
    )


def test_a_failing_section_is_recorded_and_the_next_one_runs(bench: ModuleType, tmp_path: Path) -> None:
    run = _run(bench, tmp_path)

    def broken(_: Any) -> dict[str, Any]:
        raise RuntimeError("CUDA error: out of memory")

    def skipped(_: Any) -> dict[str, Any]:
        raise bench.Skipped("faiss is not importable")

    failed = bench.run_section(run, "train", broken)
    assert failed["status"] == "error" and failed["error"] == "RuntimeError: CUDA error: out of memory"
    assert "raise RuntimeError" in "\n".join(failed["traceback"])
    assert bench.run_section(run, "faiss", skipped)["status"] == "skipped"
    fine = bench.run_section(run, "extract", lambda r: {"images": 3})
    assert fine["status"] == "ok" and fine["images"] == 3
    assert fine["budget_s"] == bench.TINY.budgets["extract"]
    run.world_error = "SynthError: disk full"
    with pytest.raises(RuntimeError, match="no synthetic world: SynthError: disk full"):
        run.require_world()


def test_no_section_starts_once_the_run_budget_is_spent(bench: ModuleType, tmp_path: Path) -> None:
    late = bench.run_section(_run(bench, tmp_path, seconds=5), "ddp", lambda r: pytest.fail("ran"))
    assert late["status"] == "skipped" and "budget" in late["reason"]


def test_step_rates_per_epoch_and_steady_state(bench: ModuleType) -> None:
    # epoch 0: steps end at 2, 3, 4, 5 s; epoch 1: at 7, 8, 9 s; 10 images per step
    ends = [(0, 2.0), (0, 3.0), (0, 4.0), (0, 5.0), (1, 7.0), (1, 8.0), (1, 9.0)]
    rows = [{"epoch": e, "seconds": s, "loss": 5.0 - e, "accuracy": 0.5} for e, s in ends]
    rates = bench.step_rates(rows, images_per_step=10.0, skip=1)
    assert [r["images_per_s"] for r in rates["per_epoch"]] == [8.0, 7.5]  # 40 / 5 s, 30 / 4 s
    assert [r["mean_loss"] for r in rates["per_epoch"]] == [5.0, 4.0]
    # after the first step of each epoch and its own: 2 steps in 2 s, then 1 step in 1 s
    assert rates["steady_steps"] == 3 and rates["steady_images_per_s"] == 10.0


def test_compare_against_the_stated_tolerance(bench: ModuleType) -> None:
    reference = np.eye(4, dtype=np.float32)[:2]
    close = reference + np.float32(1e-3) * np.array([[0, 1, 0, 0], [0, 0, 1, 0]], np.float32)
    close /= np.linalg.norm(close, axis=1, keepdims=True)
    assert bench.compare(reference, close)["within_tolerance"]
    far = np.roll(reference, 1, axis=1)
    verdict = bench.compare(reference, far)
    assert not verdict["within_tolerance"] and verdict["min_cosine"] == 0.0 and verdict["max_abs_diff"] == 1.0
