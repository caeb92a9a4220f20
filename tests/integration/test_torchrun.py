"""A 2-process torchrun (gloo, CPU) training run through the real CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from landmark.models.model_dir import load_model_dir

TINY_WORLD = [
    "--set", "synth.num_landmarks=4", "--set", "synth.train_per_landmark=6", "--set", "synth.index_per_landmark=1",
    "--set", "synth.queries=2", "--set", "synth.index_distractors=1", "--set", "synth.test_distractors=1",
    "--set", "synth.image_size=128", "--set", "synth.facet_size=256", "--set", "synth.workers=0",
    "--set", "synth.label_noise=0", "--set", "synth.junk_noise=0",
]  # fmt: skip
TINY_TRAIN = [
    "--set", "train.epochs=2", "--set", "train.batch_size=4", "--set", "train.image_size=64",
    "--set", "train.full_res_image_size=96", "--set", "train.workers=0", "--set", "train.warmup_steps=1",
    "--set", "model.embedding_dim=32",
]  # fmt: skip


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.slow
def test_two_process_gloo_training(tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun not installed")
    synth = _run(
        [sys.executable, "-m", "landmark", *TINY_WORLD, "synth", "--out", str(tmp_path / "w")], tmp_path
    )
    assert synth.returncode == 0, synth.stderr
    result = _run(
        [torchrun, "--standalone", "--nproc_per_node=2", "-m", "landmark", *TINY_TRAIN,
         "train", "--data", str(tmp_path / "w"), "--out", str(tmp_path / "model")],
        tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    loaded = load_model_dir(tmp_path / "model")
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())["train"]
    # 24 images, batches of 4 within aspect buckets, split over 2 ranks: both ranks ran the same step count
    assert metrics["finished"] and metrics["steps"] == metrics["total_steps"] > 0
    assert loaded.model.dim == 32 and len(loaded.labels) == 4
    assert "model written to" in result.stdout
