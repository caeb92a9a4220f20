"""DELF (Noh et al., ICCV 2017) in torch: a backbone cut at stride 16, an attention head and two classifiers.

- ``body``: the timm backbone truncated after the block whose output has reduction 16 (``feature_info``), so
  each cell of its (N, C, H/16, W/16) map describes a 16-pixel step of the input. With ``feature_stride`` 8 the
  same block runs dilated (timm's ``output_stride=8``: the stride-2 step into that block becomes stride 1 and
  later kernels are dilated by 2), giving an (N, C, H/8, W/8) map from the same weights: keypoint centres on an
  8-pixel grid for about twice the compute. A departure from the paper (stride 16) for localisation.
- ``attention``: 1x1 conv -> ReLU -> 1x1 conv -> softplus, one score >= 0 per cell: how useful the cell's
  feature is for recognising the landmark; keypoints are the highest-scoring cells.
- ``attention_classifier``: linear classifier on the attention-weighted average of the cells' L2-normalised
  features (trained in the attention phase, backbone frozen). Attention scores are therefore relative: their
  ranking within an image (and across its pyramid levels) selects keypoints, not an absolute scale.
- ``gap_classifier``: linear classifier on the plain mean of the cells' L2-normalised features (the descriptor
  fine-tuning phase, before the attention exists). Normalised as the descriptors extraction keeps.

Receptive-field centres (:class:`ReceptiveField`) are derived from the truncated network's own layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from landmark.errors import ConfigError
from landmark.models.backbones import Normalisation, backbone_normalisation, create_backbone

FEATURE_STRIDE = 16  # the paper's stride: the block of nominal reduction 16 is where the body is cut
FEATURE_STRIDES = (8, 16)  # 8: that block dilated (see the module docstring)
# Pooled L2-normalised features have norm <= 1 whatever the backbone's feature magnitude; this fixed scale
# (the s of cosine-softmax heads) lets the classifiers reach confident logits in few steps. Pooling raw
# features ties the useful learning rate to the feature scale.
POOL_SCALE = 30.0


@dataclass(frozen=True)
class ReceptiveField:
    """Where a feature-map cell sits in the network's input: centre of cell (i, j) = offset + stride * (i, j).

    Coordinates are pixel indices (pixel k covers [k - 0.5, k + 0.5]), as for the SIFT backend.
    """

    stride: int
    offset: float

    def centres(self, height: int, width: int) -> torch.Tensor:
        """(height * width, 2) float32 centres (x, y) of all cells of an (height, width) map, row-major."""
        ys = self.offset + self.stride * torch.arange(height, dtype=torch.float32)
        xs = self.offset + self.stride * torch.arange(width, dtype=torch.float32)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        return torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=1)


def _pair(value: int | tuple[int, ...]) -> int:
    """The single value of a square kernel/stride/padding setting (non-square ones are refused)."""
    if isinstance(value, tuple):
        if len(set(value)) != 1:
            raise ValueError(f"receptive-field geometry needs square settings, got {value}")
        return int(value[0])
    return int(value)


def receptive_field(body: nn.Module) -> ReceptiveField:
    """Stride and offset of the output cells of a chain of convolutions and poolings (the truncated backbone).

    Walking the layers in forward (registration) order, a layer with kernel k, stride s, padding p and dilation
    d maps output index i to the input centre ``s * i - p + d * (k - 1) / 2``; composing layers gives
    ``centre(i) = offset + stride * i`` with ``stride = prod(s)`` and
    ``offset = sum over layers of stride_before * (d * (k - 1) / 2 - p)``. Residual additions keep the geometry
    of the main path; projection shortcuts (``downsample``/``shortcut`` modules) run parallel to it and are
    skipped. For efficientnet_lite0 every layer pads (k - 1) / 2, so the offset is 0 and the stride 16.

    Raises:
        ValueError: layers with input-size-dependent ("same") padding, whose geometry is not fixed.
    """
    stride, offset = 1, 0.0
    for name, module in body.named_modules():
        if any(part in ("downsample", "shortcut") for part in name.split(".")):
            continue
        if type(module).__name__.endswith("Same"):  # timm's Conv2dSame / MaxPool2dSame: dynamic padding
            raise ValueError(
                f"layer {name!r} ({type(module).__name__}) pads by input size: no fixed geometry"
            )
        if isinstance(module, nn.Conv2d | nn.MaxPool2d | nn.AvgPool2d):
            if isinstance(module.padding, str):
                raise ValueError(f"layer {name!r} uses padding={module.padding!r}: no fixed geometry")
            k, s, p = _pair(module.kernel_size), _pair(module.stride), _pair(module.padding)
            d = _pair(module.dilation) if isinstance(module, nn.Conv2d | nn.MaxPool2d) else 1
            offset += stride * (d * (k - 1) / 2 - p)
            stride *= s
    return ReceptiveField(stride, offset)


def original_centres(
    centres: torch.Tensor, resized: tuple[int, int], original: tuple[int, int]
) -> torch.Tensor:
    """Map (N, 2) pixel-index centres (x, y) in an image resized to ``resized`` (h, w) back to ``original``.

    Pixel-centre to pixel-centre: ``x_orig = (x + 0.5) * W / w - 0.5``. ``W / w`` is 1 / pyramid scale up to
    the rounding of the resized size; using the actual sizes keeps each axis exact.
    """
    factor = torch.tensor(
        [original[1] / resized[1], original[0] / resized[0]], dtype=centres.dtype, device=centres.device
    )
    return (centres + 0.5) * factor - 0.5


def _feature_index(backbone: nn.Module, reduction: int) -> int:
    """Position in the (undilated) backbone's timm ``feature_info`` of its block of output ``reduction``."""
    info = getattr(backbone, "feature_info", None)
    if not info:
        raise ConfigError(
            f"backbone {type(backbone).__name__} has no timm feature_info: cannot cut at stride {reduction}"
        )
    reductions = [int(entry["reduction"]) for entry in info]
    if reduction not in reductions:
        raise ConfigError(f"backbone has no feature map of reduction {reduction} (has {reductions})")
    return reductions.index(reduction)


def _truncate(backbone: nn.Module, index: int) -> tuple[nn.Module, int]:
    """The backbone cut after its ``index``-th timm ``feature_info`` block, and that block's channels."""
    from timm.models._features import FeatureListNet

    info: Any = backbone.feature_info
    try:
        body = FeatureListNet(backbone, out_indices=(index,))
    except AssertionError:  # block names nested in Sequentials (EfficientNet's blocks.N)
        body = FeatureListNet(backbone, out_indices=(index,), flatten_sequential=True)
    return body, int(info[index]["num_chs"])


class DelfModel(nn.Module):
    """Stride-16 features, attention scores and the two training classifiers of DELF.

    Inputs are (N, 3, H, W) RGB images in [0, 1]; the model applies the backbone's normalisation itself.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        body: nn.Module,
        channels: int,
        normalisation: Normalisation,
        num_classes: int,
        hidden: int = 512,
        feature_stride: int = FEATURE_STRIDE,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.body = body
        self.channels = channels
        self.num_classes = num_classes
        self.attention = nn.Sequential(
            nn.Conv2d(channels, hidden, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 1, kernel_size=1),
            nn.Softplus(),
        )
        self.attention_classifier = nn.Linear(channels, num_classes)
        self.gap_classifier = nn.Linear(channels, num_classes)
        self.receptive_field = receptive_field(body)
        if self.receptive_field.stride != feature_stride:
            raise ValueError(
                f"the truncated backbone has stride {self.receptive_field.stride}, expected {feature_stride}"
            )
        self.register_buffer("mean", torch.tensor(normalisation.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(normalisation.std).view(1, 3, 1, 1), persistent=False)

    @property
    def feature_stride(self) -> int:
        """Input pixels per feature-map cell (16, or 8 when dilated)."""
        return self.receptive_field.stride

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Feature map (N, C, ceil(H/s), ceil(W/s)) of RGB images in [0, 1], s = :attr:`feature_stride`."""
        out = self.body((images - self.mean) / self.std)
        return out[0] if isinstance(out, list | tuple) else out

    def attention_scores(self, features: torch.Tensor) -> torch.Tensor:
        """Attention (N, 1, h, w) >= 0 of a feature map (N, C, h, w)."""
        scores: torch.Tensor = self.attention(features)
        return scores

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Feature map (N, C, h, w) and attention (N, 1, h, w) of RGB images in [0, 1]."""
        features = self.features(images)
        return features, self.attention_scores(features)

    def attention_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Class logits (N, classes) from the attention-weighted average of the L2-normalised cell features
        (N, C, h, w) (the descriptors extraction keeps), times :data:`POOL_SCALE`.

        Normalising by the attention sum makes the pooled vector independent of the attention's overall
        magnitude: the attention can only re-weight cells. With DELF's plain weighted mean, shrinking all
        attention to zero is a stable way out of early large losses; on the synthetic data training collapsed
        into it (loss stuck at log(classes)). With uniform attention the pooling equals :meth:`gap_logits`'.
        """
        unit = F.normalize(features, dim=1)
        attention = self.attention_scores(features)
        pooled = (unit * attention).sum(dim=(2, 3)) / attention.sum(dim=(2, 3)).clamp_min(1e-6)
        logits: torch.Tensor = self.attention_classifier(POOL_SCALE * pooled)
        return logits

    def gap_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Class logits (N, classes) from the plain mean of the L2-normalised cell features (N, C, h, w),
        times :data:`POOL_SCALE`."""
        pooled = F.normalize(features, dim=1).mean(dim=(2, 3))
        logits: torch.Tensor = self.gap_classifier(POOL_SCALE * pooled)
        return logits


def create_delf_model(
    backbone: str,
    pretrained: str,
    num_classes: int,
    attention_hidden: int = 512,
    feature_stride: int = FEATURE_STRIDE,
) -> DelfModel:
    """A :class:`DelfModel` on timm ``backbone`` cut after its block of reduction 16, weights per ``pretrained``
    (see backbones); ``feature_stride`` 8 runs that block dilated (the module docstring). The parameters are
    the same for both strides, so weights trained at one load at the other.

    Raises:
        ValueError: a stride other than 8 or 16, or a backbone without a reduction-16 block.
    """
    if feature_stride not in FEATURE_STRIDES:
        raise ConfigError(f"feature_stride must be one of {FEATURE_STRIDES}, got {feature_stride}")
    full = create_backbone(backbone, pretrained)
    index = _feature_index(full, FEATURE_STRIDE)
    if feature_stride != FEATURE_STRIDE:
        full = create_backbone(backbone, pretrained, output_stride=feature_stride)
    body, channels = _truncate(full, index)
    return DelfModel(
        body,
        channels,
        backbone_normalisation(backbone, pretrained),
        num_classes,
        attention_hidden,
        feature_stride,
    )


@dataclass(frozen=True, eq=False)
class DelfPca:
    """PCA of L2-normalised local descriptors (fitted on training images, saved with the model).

    Attributes:
        mean: (C,) float32 mean of the fitted descriptors.
        components: (D, C) float32 principal directions, largest variance first.
        variances: (D,) float32 variance along each direction.
        whiten: divide each projection by its standard deviation.
    """

    mean: np.ndarray
    components: np.ndarray
    variances: np.ndarray
    whiten: bool = False

    def __post_init__(self) -> None:
        mean = np.asarray(self.mean, np.float32)
        components = np.asarray(self.components, np.float32)
        variances = np.asarray(self.variances, np.float32)
        if mean.ndim != 1 or components.ndim != 2 or components.shape[1] != mean.shape[0]:
            raise ValueError(f"PCA components {components.shape} do not fit a mean of shape {mean.shape}")
        if variances.shape != (components.shape[0],):
            raise ValueError(f"PCA variances must have shape ({components.shape[0]},), got {variances.shape}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "components", components)
        object.__setattr__(self, "variances", variances)

    @property
    def input_dim(self) -> int:
        """C, the descriptor dimension the PCA expects."""
        return int(self.mean.shape[0])

    @property
    def dim(self) -> int:
        """D, the reduced dimension."""
        return int(self.components.shape[0])

    def transform(self, descriptors: np.ndarray) -> np.ndarray:
        """(N, C) raw descriptors -> L2 normalise -> PCA (whitened if set) -> L2 normalise: (N, D) float32."""
        x = _l2_rows(np.asarray(descriptors, np.float32))
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise ValueError(f"descriptors must have shape (N, {self.input_dim}), got {x.shape}")
        projected = (x - self.mean) @ self.components.T
        if self.whiten:
            projected = projected / np.sqrt(self.variances + 1e-8)
        return _l2_rows(projected)


def _l2_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def fit_pca(descriptors: np.ndarray, dim: int, whiten: bool = False) -> DelfPca:
    """PCA of (N, C) descriptors after L2 normalisation, keeping ``dim`` directions.

    Raises:
        ValueError: fewer than ``dim + 1`` descriptors or ``dim`` above C.
    """
    x = _l2_rows(np.asarray(descriptors, np.float32)).astype(np.float64)
    if x.ndim != 2 or x.shape[0] <= dim or not 1 <= dim <= x.shape[1]:
        raise ValueError(
            f"PCA to {dim} dimensions needs more than {dim} descriptors of dimension >= {dim}, got {x.shape}"
        )
    mean = x.mean(axis=0)
    _, singular, vh = np.linalg.svd(x - mean, full_matrices=False)
    # SVD signs are arbitrary: make each direction's largest-magnitude entry positive, so a refit is identical.
    signs = np.sign(vh[np.arange(vh.shape[0]), np.abs(vh).argmax(axis=1)])
    vh = vh * signs[:, None]
    return DelfPca(mean, vh[:dim], singular[:dim] ** 2 / (x.shape[0] - 1), whiten)
