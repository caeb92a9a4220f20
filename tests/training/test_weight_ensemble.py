"""Weight-space ensembling (WiSE-FT): interpolation, the zero-shot end, and training that ends with it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from landmark.config import ModelConfig, TrainConfig
from landmark.models.global_model import create_global_model
from landmark.training.ensemble import interpolate_weights, zero_shot_state
from landmark.training.loop import TrainItem, _init_neck, ensemble_weights, train_global_model

MODEL = ModelConfig(backbone="efficientnet_lite0", pretrained="packaged", embedding_dim=32)
TRAIN = TrainConfig(
    epochs=2, batch_size=8, image_size=64, full_res_last_epoch=False, augmentation="soft", warmup_steps=2,
    lr=0.01, checkpoint_every=0, workers=0, scale=16.0, neck_init_images=32, frozen_fraction=0.9, wise_alpha=1.0,
)  # fmt: skip


def test_interpolation_hand_values() -> None:
    start = {"w": torch.tensor([0.0, 2.0]), "n": torch.tensor(1)}
    end = {"w": torch.tensor([4.0, 6.0]), "n": torch.tensor(5)}
    mixed = interpolate_weights(start, end, 0.25)
    torch.testing.assert_close(mixed["w"], torch.tensor([1.0, 3.0]))
    assert mixed["n"].item() == 5  # counters come from the fine-tuned end
    assert torch.equal(interpolate_weights(start, end, 0.0)["w"], start["w"])
    assert torch.equal(interpolate_weights(start, end, 1.0)["w"], end["w"])
    half = interpolate_weights(
        {"w": torch.tensor([1.0], dtype=torch.float16)}, {"w": torch.tensor([2.0])}, 0.5
    )
    assert half["w"].dtype == torch.float32 and half["w"].item() == 1.5


def test_interpolation_errors() -> None:
    a = {"w": torch.zeros(2)}
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\], got 1.5"):
        interpolate_weights(a, a, 1.5)
    with pytest.raises(ValueError, match=r"differ in keys.*'v'"):
        interpolate_weights(a, {"v": torch.zeros(2)}, 0.5)
    with pytest.raises(ValueError, match=r"w: shapes differ, \(2,\) vs \(3,\)"):
        interpolate_weights(a, {"w": torch.zeros(3)}, 0.5)


def test_zero_shot_neck_is_the_plain_pca_projection() -> None:
    torch.manual_seed(0)
    model = create_global_model(MODEL).eval()
    pooled = torch.randn(64, 1280) @ torch.randn(1280, 1280) * 0.05 + 3.0  # far from centred
    model.init_neck_pca(pooled)
    state = zero_shot_state(model)
    zero_shot = create_global_model(dataclasses.replace(MODEL, pretrained="none"))
    zero_shot.load_state_dict(state)
    zero_shot.eval()
    fc = model.neck[0].weight.detach()
    with torch.no_grad():
        # x -> W x: no centring by the fitted mean, no whitening by the fitted variances
        torch.testing.assert_close(zero_shot.neck(pooled), pooled @ fc.T, atol=1e-4, rtol=1e-5)
        images = torch.rand(2, 3, 64, 48)
        torch.testing.assert_close(zero_shot.backbone(images), model.backbone(images))  # backbone untouched
    assert model.neck[0].bias.abs().sum() > 0  # the model itself keeps its centring neck
    with pytest.raises(ValueError, match="FC -> BatchNorm1d"):
        zero_shot_state(create_global_model(dataclasses.replace(MODEL, embedding_dim=0)))


def test_training_ends_with_the_interpolated_weights_and_resumes(
    items: list[TrainItem], tmp_path: Path
) -> None:
    def run(cfg: TrainConfig, work: str, resume: bool = False) -> dict[str, torch.Tensor]:
        result = train_global_model(
            items, 4, MODEL, cfg, tmp_path / work, seed=0, device="cpu", resume=resume, progress=False
        )
        ensemble_weights(result, cfg.wise_alpha)  # the step after training, as the train stage runs it
        return {k: v.clone() for k, v in result.model.state_dict().items()}

    fine_tuned = run(TRAIN, "plain")
    wise_cfg = dataclasses.replace(TRAIN, wise_alpha=0.6, checkpoint_every=1)
    wise = run(wise_cfg, "wise")
    torch.manual_seed(0)  # the zero-shot end: the step-0 model of the same seed and data
    step0 = create_global_model(MODEL)
    _init_neck(step0, items, TRAIN, 0, "cpu")
    expected = interpolate_weights(zero_shot_state(step0), fine_tuned, 0.6)
    moved = 0
    for key, value in expected.items():
        torch.testing.assert_close(wise[key], value, rtol=0, atol=1e-6, msg=key)
        moved += not torch.equal(wise[key], fine_tuned[key])
    assert moved > 10  # the trainable tail and the neck really moved towards the zero-shot end

    # a finished run resumed with another alpha: no training, only a new ensemble of the same two ends
    other = run(dataclasses.replace(wise_cfg, wise_alpha=0.3), "wise", resume=True)
    for key, value in interpolate_weights(zero_shot_state(step0), fine_tuned, 0.3).items():
        torch.testing.assert_close(other[key], value, rtol=0, atol=1e-6, msg=key)

    # killed after 3 steps and resumed: checkpoints hold the plain fine-tuned weights, the end interpolates once
    run(dataclasses.replace(wise_cfg, max_steps=3), "cut")
    resumed = run(wise_cfg, "cut", resume=True)
    for key, value in wise.items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=1e-6, msg=key)


def test_config_checks() -> None:
    with pytest.raises(ValueError, match=r"wise_alpha must be in \(0, 1\]"):
        TrainConfig(wise_alpha=0.0)
    with pytest.raises(ValueError, match=r"wise_alpha must be in \(0, 1\], got 1.2"):
        TrainConfig(wise_alpha=1.2)
