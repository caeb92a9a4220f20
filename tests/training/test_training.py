"""Training behaviour: the loss goes down, kill-and-resume replays the same run, model directories round-trip."""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from landmark.config import ModelConfig, TrainConfig
from landmark.models.model_dir import ModelDirError, descriptor_model, load_model_dir, save_model_dir
from landmark.training.loop import TrainItem, train_global_model, training_metrics
from landmark.training.trainer import CheckpointError

MODEL = ModelConfig(backbone="efficientnet_lite0", pretrained="packaged", embedding_dim=32)
TRAIN = TrainConfig(
    epochs=4, batch_size=8, image_size=64, full_res_last_epoch=False, augmentation="soft", warmup_steps=2,
    lr=0.01, checkpoint_every=0, workers=0, scale=16.0,
)  # fmt: skip


def _losses(log: Path) -> list[tuple[int, float]]:
    with open(log, newline="") as fh:
        return [(int(r["epoch"]), float(r["loss"])) for r in csv.DictReader(fh)]


def test_training_reduces_loss(items: list[TrainItem], tmp_path: Path) -> None:
    result = train_global_model(items, 4, MODEL, TRAIN, tmp_path, seed=0, device="cpu", progress=False)
    losses = _losses(tmp_path / "train_log.csv")
    first = np.mean([v for e, v in losses if e == 0])
    last = np.mean([v for e, v in losses if e == TRAIN.epochs - 1])
    assert result.finished and result.steps == result.total_steps == 4 * 4  # 32 images / batch 8 per epoch
    assert last < 0.7 * first, f"loss did not go down: first epoch {first:.3f}, last epoch {last:.3f}"


def test_kill_and_resume_matches_uninterrupted(items: list[TrainItem], tmp_path: Path) -> None:
    cfg = dataclasses.replace(TRAIN, epochs=2, checkpoint_every=3)
    full = train_global_model(items, 4, MODEL, cfg, tmp_path / "full", seed=1, device="cpu", progress=False)
    # "killed" after 5 optimizer steps (mid-epoch 1, past the step-3 checkpoint), then resumed
    part = train_global_model(
        items, 4, MODEL, dataclasses.replace(cfg, max_steps=5), tmp_path / "cut", seed=1, device="cpu",
        progress=False,
    )  # fmt: skip
    assert part.steps == 5 and not part.finished
    resumed = train_global_model(
        items, 4, MODEL, cfg, tmp_path / "cut", seed=1, device="cpu", resume=True, progress=False
    )
    assert resumed.steps == full.steps == 8 and resumed.finished
    full_state, resumed_state = full.model.state_dict(), resumed.model.state_dict()
    for key, value in full_state.items():
        torch.testing.assert_close(resumed_state[key], value, rtol=0, atol=1e-6, msg=f"tensor {key} differs")
    torch.testing.assert_close(resumed.head.weight, full.head.weight, rtol=0, atol=1e-6)
    # the log of the resumed run has each step once
    with open(tmp_path / "cut" / "train_log.csv", newline="") as fh:
        assert [int(r["step"]) for r in csv.DictReader(fh)] == list(range(1, 9))


def test_resume_refuses_a_different_config(items: list[TrainItem], tmp_path: Path) -> None:
    cfg = dataclasses.replace(TRAIN, epochs=1, max_steps=1)
    train_global_model(items, 4, MODEL, cfg, tmp_path, seed=0, device="cpu", progress=False)
    with pytest.raises(CheckpointError, match="different train"):
        train_global_model(
            items, 4, MODEL, dataclasses.replace(cfg, lr=0.5), tmp_path, seed=0, device="cpu", resume=True,
            progress=False,
        )  # fmt: skip


def test_training_input_errors(items: list[TrainItem], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="embedding_dim"):
        train_global_model(items, 4, dataclasses.replace(MODEL, embedding_dim=0), TRAIN, tmp_path, seed=0,
                           device="cpu")  # fmt: skip
    with pytest.raises(ValueError, match="no complete batch"):
        train_global_model(items[:1], 4, MODEL, TRAIN, tmp_path, seed=0, device="cpu")
    with pytest.raises(ValueError, match="class indices"):
        train_global_model(items, 2, MODEL, TRAIN, tmp_path, seed=0, device="cpu")


def test_model_dir_round_trip_and_errors(items: list[TrainItem], tmp_path: Path) -> None:
    cfg = dataclasses.replace(TRAIN, epochs=1, max_steps=1)
    result = train_global_model(items, 4, MODEL, cfg, tmp_path / "work", seed=0, device="cpu", progress=False)
    path = save_model_dir(tmp_path / "model", result.model, MODEL, [10, 20, 30, 40], {"train": {"steps": 1}},
                          head=result.head)  # fmt: skip
    loaded = load_model_dir(path)
    assert loaded.labels == (10, 20, 30, 40) and loaded.config == MODEL
    x = torch.rand(2, 3, 64, 64)
    result.model.eval()
    with torch.inference_mode():
        torch.testing.assert_close(loaded.model(x), result.model(x))
    model, identity = descriptor_model(MODEL, path)
    assert identity["weights_sha1"] == loaded.fingerprint and model.dim == 32

    config = json.loads((path / "config.json").read_text())
    config["format_version"] = 99
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelDirError, match="format version 99"):
        load_model_dir(path)
    config["format_version"] = 1
    config["model"]["embedding_dim"] = 64
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelDirError, match="do not fit"):
        load_model_dir(path)
    config["model"]["backbone_typo"] = "x"
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelDirError, match="incompatible model config"):
        load_model_dir(path)
    (path / "labels.json").unlink()
    with pytest.raises(ModelDirError, match=r"missing labels\.json"):
        load_model_dir(path)
    with pytest.raises(ModelDirError, match="not found"):
        load_model_dir(tmp_path / "nothing")


def test_frozen_fraction_keeps_early_layers_and_their_statistics(
    items: list[TrainItem], tmp_path: Path
) -> None:
    from landmark.models.global_model import create_global_model

    cfg = dataclasses.replace(TRAIN, epochs=1, max_steps=2, frozen_fraction=0.5)
    result = train_global_model(items, 4, MODEL, cfg, tmp_path, seed=0, device="cpu", progress=False)
    before = create_global_model(MODEL).backbone.state_dict()
    after = result.model.backbone.state_dict()
    names = [n for n, _ in create_global_model(MODEL).backbone.named_parameters()]
    frozen, trained = names[: len(names) // 2], names[len(names) // 2 :]
    assert all(torch.equal(before[n], after[n]) for n in frozen)
    assert not all(torch.equal(before[n], after[n]) for n in trained)
    # BatchNorm running statistics of the frozen stem stay the ImageNet ones
    torch.testing.assert_close(after["bn1.running_mean"], before["bn1.running_mean"])


def test_pca_neck_init_whitens_pretrained_features() -> None:
    from landmark.models.global_model import create_global_model

    torch.manual_seed(0)
    model = create_global_model(dataclasses.replace(MODEL, embedding_dim=8)).eval()
    pooled = (
        torch.randn(64, model.backbone.num_features) @ torch.randn(model.backbone.num_features, 1280) * 0.1
    )
    model.init_neck_pca(pooled)
    with torch.no_grad():
        embedded = model.neck(pooled)
    # whitened: zero mean, unit variance per dimension, decorrelated
    torch.testing.assert_close(embedded.mean(dim=0), torch.zeros(8), atol=1e-4, rtol=0)
    cov = torch.cov(embedded.T)
    torch.testing.assert_close(cov, torch.eye(8), atol=1e-3, rtol=1e-3)
    with pytest.raises(ValueError, match="FC -> BatchNorm1d"):
        create_global_model(dataclasses.replace(MODEL, embedding_dim=0)).init_neck_pca(pooled)


def test_imprinted_head_starts_with_a_lower_loss(items: list[TrainItem], tmp_path: Path) -> None:
    cfg = dataclasses.replace(TRAIN, max_steps=1, neck_init_images=16)
    first = {}
    for head_init in ("random", "imprint"):
        work = tmp_path / head_init
        train_global_model(
            items, 4, MODEL, dataclasses.replace(cfg, head_init=head_init), work, seed=0, device="cpu",
            progress=False,
        )  # fmt: skip
        first[head_init] = _losses(work / "train_log.csv")[0][1]
    # class weights at the classes' mean embeddings: the first batch is already mostly right
    assert first["imprint"] < first["random"] - 1.0, first


KILL_CHILD = """
import dataclasses, json, sys
from pathlib import Path
from landmark.config import ModelConfig, TrainConfig
from landmark.training.loop import TrainItem, train_global_model
spec = json.loads(Path(sys.argv[1]).read_text())
items = [TrainItem(Path(p), label, w, h) for p, label, w, h in spec["items"]]
train_global_model(
    items, 4, ModelConfig(**spec["model"]), TrainConfig(**spec["train"]), Path(spec["work"]), seed=1,
    device="cpu", progress=False,
)
"""


def _logged(log: Path) -> list[tuple[int, float]]:
    with open(log, newline="") as fh:
        return [(int(r["step"]), float(r["seconds"])) for r in csv.DictReader(fh)]


def test_sigkilled_run_resumes_with_a_complete_log_and_the_time_of_both_attempts(
    items: list[TrainItem], tmp_path: Path
) -> None:
    cfg = dataclasses.replace(TRAIN, epochs=3, checkpoint_every=4)  # 12 steps, checkpoints at 4 and 8
    work = tmp_path / "work"
    spec = {
        "items": [[str(i.path), i.label, i.width, i.height] for i in items],
        "model": dataclasses.asdict(MODEL),
        "train": dataclasses.asdict(cfg),
        "work": str(work),
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}
    with open(tmp_path / "child.log", "wb") as sink:  # a file, not a pipe: a full pipe would stall the child
        child = subprocess.Popen(
            [sys.executable, "-c", KILL_CHILD, str(tmp_path / "spec.json")], stdout=sink, stderr=sink, env=env
        )
    log = work / "train_log.csv"
    try:
        deadline = time.monotonic() + 120
        while child.poll() is None and time.monotonic() < deadline:
            if log.exists() and len(_logged(log)) >= 5:  # rows are on disk while the run goes on
                break
            time.sleep(0.02)
        assert child.poll() is None, f"the run ended before the kill: {(tmp_path / 'child.log').read_text()}"
        assert len(_logged(log)) >= 5, "no per-step rows on disk after 120 s"
        child.send_signal(signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=30)
    killed = _logged(log)
    assert [s for s, _ in killed] == list(range(1, len(killed) + 1)) and len(killed) < 12
    first_attempt = killed[-1][1]

    start = time.perf_counter()
    resumed = train_global_model(
        items, 4, MODEL, cfg, work, seed=1, device="cpu", resume=True, progress=False
    )
    second_attempt = time.perf_counter() - start
    assert resumed.finished and resumed.steps == 12
    rows = _logged(log)
    assert [s for s, _ in rows] == list(range(1, 13))  # every step once, the killed attempt's rows kept
    assert all(a <= b for (_, a), (_, b) in itertools.pairwise(rows))  # seconds count on across attempts
    # train_seconds = the killed attempt's time + the resumed attempt's training time
    assert first_attempt < resumed.seconds <= first_attempt + second_attempt
    assert resumed.seconds - first_attempt > 0.5 * (rows[-1][1] - rows[len(killed)][1])
    assert training_metrics(resumed)["train_seconds"] == round(resumed.seconds, 2)
