"""The packaged ImageNet weights are real, and the global descriptor model behaves."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from landmark.config import ModelConfig
from landmark.data.images import decode_image
from landmark.models.backbones import (
    WeightsError,
    backbone_normalisation,
    create_backbone,
    load_packaged_state_dict,
    packaged_backbones,
)
from landmark.models.global_model import create_global_model

TRIUMPHAL_ARCH = 873


def _imagenet_batch(paths: list[Path], size: int = 224) -> torch.Tensor:
    images = [cv2.resize(decode_image(p), (size, size), interpolation=cv2.INTER_AREA) for p in paths]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0


def test_packaged_weights_recognise_brandenburg_gate(imc_root: Path) -> None:
    paths = sorted((imc_root / "brandenburg_gate" / "images").glob("*.jpg"))[:40]
    model = create_backbone("efficientnet_lite0", "packaged").eval()
    norm = backbone_normalisation("efficientnet_lite0", "packaged")
    x = _imagenet_batch(paths)
    x = (x - torch.tensor(norm.mean).view(1, 3, 1, 1)) / torch.tensor(norm.std).view(1, 3, 1, 1)
    with torch.inference_mode():
        predicted = model(x).argmax(dim=1)
    share = (predicted == TRIUMPHAL_ARCH).float().mean().item()
    assert share > 0.5, f"only {share:.0%} of Brandenburg Gate photos predicted as triumphal arch"


def test_random_weights_do_not_recognise_it(imc_root: Path) -> None:
    paths = sorted((imc_root / "brandenburg_gate" / "images").glob("*.jpg"))[:16]
    torch.manual_seed(0)
    model = create_backbone("efficientnet_lite0", "none").eval()
    with torch.inference_mode():
        predicted = model(_imagenet_batch(paths)).argmax(dim=1)
    assert (predicted == TRIUMPHAL_ARCH).float().mean().item() < 0.5


def test_packaged_weights_are_all_installed() -> None:
    assert "efficientnet_lite0" in packaged_backbones()
    state = load_packaged_state_dict("efficientnet_lite0")
    timm_state = create_backbone("efficientnet_lite0", "none").state_dict()
    assert len(state) == len(timm_state) == 296  # 247 tensors + 49 BatchNorm counters
    shapes = [tuple(v.shape) for v in state.values()]
    assert shapes == [tuple(v.shape) for v in timm_state.values()]


def test_local_checkpoint_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = create_backbone("resnet18", "none")
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": source.state_dict()}, path)
    loaded = create_backbone("resnet18", str(path))
    for key, value in source.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)


def test_weight_errors(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="no packaged ImageNet weights"):
        create_backbone("resnet18", "packaged")
    with pytest.raises(WeightsError, match="not found"):
        create_backbone("resnet18", str(tmp_path / "missing.pth"))
    torch.save(create_backbone("resnet18", "none").state_dict(), tmp_path / "r18.pth")
    with pytest.raises(WeightsError, match="tensors"):
        create_backbone("efficientnet_lite0", str(tmp_path / "r18.pth"))
    with pytest.raises(ValueError, match="unknown backbone"):
        create_backbone("not_a_model", "none")


@pytest.mark.parametrize("embedding_dim", [0, 64])
def test_global_descriptor_shapes_and_norm(embedding_dim: int) -> None:
    model = create_global_model(ModelConfig(pretrained="none", embedding_dim=embedding_dim)).eval()
    with torch.inference_mode():
        desc = model(torch.rand(3, 3, 96, 128))
    assert desc.shape == (3, embedding_dim or 1280)
    torch.testing.assert_close(desc.norm(dim=1), torch.ones(3))
