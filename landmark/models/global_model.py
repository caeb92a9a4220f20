"""The global descriptor model: backbone -> GeM -> (FC -> BatchNorm1d) -> L2-normalised embedding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from landmark.config import ModelConfig
from landmark.models.backbones import Normalisation, backbone_normalisation, create_backbone
from landmark.models.pooling import GeM


class GlobalDescriptor(nn.Module):
    """Image -> L2-normalised global descriptor.

    With ``embedding_dim == 0`` the descriptor is the GeM-pooled backbone feature (the off-the-shelf baseline);
    otherwise a linear layer projects it to ``embedding_dim`` followed by BatchNorm1d (Yokoo et al. 2020).
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, backbone: nn.Module, normalisation: Normalisation, cfg: ModelConfig) -> None:
        super().__init__()
        self.backbone = backbone
        self.pool = GeM(p=cfg.gem_p, eps=cfg.gem_eps)
        features = int(getattr(backbone, "num_features"))  # noqa: B009  (timm attribute, not typed)
        self.pool_dim = features
        self.neck: nn.Module
        if cfg.embedding_dim > 0:
            self.neck = nn.Sequential(
                nn.Linear(features, cfg.embedding_dim), nn.BatchNorm1d(cfg.embedding_dim)
            )
            self.dim = cfg.embedding_dim
        else:
            self.neck = nn.Identity()
            self.dim = features
        self.register_buffer("mean", torch.tensor(normalisation.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(normalisation.std).view(1, 3, 1, 1), persistent=False)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) RGB in [0, 1] -> the backbone's input normalisation."""
        return (images - self.mean) / self.std

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Un-normalised embedding, shape (N, dim), from (N, 3, H, W) RGB images in [0, 1]."""
        return self.neck(self.pooled(images))

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        """GeM-pooled backbone features before the neck, shape (N, C), from RGB images in [0, 1]."""
        return self.pool(self.backbone.forward_features(self.normalise(images)))  # type: ignore[operator]

    @torch.no_grad()
    def init_neck_pca(self, pooled: torch.Tensor) -> None:
        """Initialise FC -> BatchNorm1d as PCA whitening of ``pooled`` (N, C) features.

        The FC rows become the top principal directions (bias removes the mean) and the BatchNorm statistics
        their variances, so before any training the embedding is the whitened, PCA-reduced off-the-shelf
        descriptor (a strong retrieval baseline, Radenovic et al.) instead of a random projection.
        """
        fc = self.neck[0] if isinstance(self.neck, nn.Sequential) else None
        bn = self.neck[1] if isinstance(self.neck, nn.Sequential) else None
        if not isinstance(fc, nn.Linear) or not isinstance(bn, nn.BatchNorm1d):
            raise ValueError("init_neck_pca needs a model with an FC -> BatchNorm1d neck (embedding_dim > 0)")
        if bn.running_mean is None or bn.running_var is None:
            raise ValueError("init_neck_pca needs a BatchNorm1d that tracks running statistics")
        x = pooled.double()
        if x.ndim != 2 or x.shape[1] != fc.in_features or x.shape[0] < 2:
            raise ValueError(f"pooled features must be (N >= 2, {fc.in_features}), got {tuple(x.shape)}")
        mean = x.mean(dim=0)
        _, singular, vh = torch.linalg.svd(x - mean, full_matrices=False)
        k = min(self.dim, vh.shape[0])
        weight = fc.weight.double().clone()
        weight[:k] = vh[:k]
        fc.weight.copy_(weight.to(fc.weight.dtype))
        fc.bias.copy_((-(weight @ mean)).to(fc.bias.dtype))
        variance = torch.ones(self.dim, dtype=torch.float64)
        variance[:k] = (singular[:k] ** 2 / (x.shape[0] - 1)).clamp(min=1e-6)
        bn.running_mean.zero_()
        bn.running_var.copy_(variance.to(bn.running_var.dtype))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised descriptors, shape (N, dim), from (N, 3, H, W) RGB images in [0, 1]."""
        return F.normalize(self.embed(images), dim=-1)


def create_global_model(cfg: ModelConfig) -> GlobalDescriptor:
    """Build the global descriptor model from its config, loading backbone weights per ``cfg.pretrained``."""
    backbone = create_backbone(cfg.backbone, cfg.pretrained)
    backbone.reset_classifier(0)  # type: ignore[operator]  # the ImageNet classifier is unused (and DDP minds)
    return GlobalDescriptor(backbone, backbone_normalisation(cfg.backbone, cfg.pretrained), cfg)
