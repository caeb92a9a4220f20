"""Margin-based classification heads for metric learning: ArcFace and CosFace.

Both compare L2-normalised embeddings with L2-normalised class weights (cosine logits) and penalise the target
class by a margin before scaling by ``s``:

- ArcFace (Deng et al., CVPR 2019): target logit ``s * cos(theta + m)``.
- CosFace (Wang et al., CVPR 2018): target logit ``s * (cos(theta) - m)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def cosine_logits(embeddings: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every embedding with every class weight.

    Args:
        embeddings: (N, D), any norm.
        weight: (C, D), any norm.

    Returns:
        (N, C) cosines in [-1, 1].
    """
    return F.linear(F.normalize(embeddings, dim=-1), F.normalize(weight, dim=-1)).clamp(-1.0, 1.0)


def _check_labels(cosine: torch.Tensor, labels: torch.Tensor) -> None:
    if labels.shape != cosine.shape[:1]:
        raise ValueError(f"labels must have shape ({cosine.shape[0]},), got {tuple(labels.shape)}")


def arcface_logits(
    cosine: torch.Tensor, labels: torch.Tensor, s: float = 30.0, m: float = 0.3
) -> torch.Tensor:
    """ArcFace logits: ``s * cos(theta + m)`` for the target class, ``s * cos(theta)`` otherwise.

    Where ``theta + m`` would pass pi (cos no longer monotone) the target uses the CosFace-style fallback
    ``cos(theta) - m * sin(m)`` (the "easy margin" alternative of the ArcFace paper's implementation notes).

    Args:
        cosine: (N, C) cosines.
        labels: (N,) int64 target classes.
        s: scale.
        m: additive angular margin in radians.
    """
    _check_labels(cosine, labels)
    sine = torch.sqrt((1.0 - cosine.pow(2)).clamp(min=0.0))
    with_margin = cosine * math.cos(m) - sine * math.sin(m)
    threshold = math.cos(math.pi - m)
    with_margin = torch.where(cosine > threshold, with_margin, cosine - math.sin(math.pi - m) * m)
    one_hot = F.one_hot(labels, cosine.size(1)).to(cosine.dtype)
    return s * (one_hot * with_margin + (1.0 - one_hot) * cosine)


def cosface_logits(
    cosine: torch.Tensor, labels: torch.Tensor, s: float = 30.0, m: float = 0.3
) -> torch.Tensor:
    """CosFace logits: ``s * (cos(theta) - m)`` for the target class, ``s * cos(theta)`` otherwise."""
    _check_labels(cosine, labels)
    one_hot = F.one_hot(labels, cosine.size(1)).to(cosine.dtype)
    return s * (cosine - m * one_hot)


_MARGINS: dict[str, Callable[[torch.Tensor, torch.Tensor, float, float], torch.Tensor]] = {
    "arcface": arcface_logits,
    "cosface": cosface_logits,
}


def head_names() -> list[str]:
    """Names accepted by :func:`create_head`."""
    return sorted(_MARGINS)


class MarginHead(nn.Module):
    """Class-weight matrix plus a margin function; ``forward(emb, labels)`` gives training logits."""

    def __init__(self, name: str, dim: int, num_classes: int, s: float = 30.0, m: float = 0.3) -> None:
        super().__init__()
        if name not in _MARGINS:
            raise ValueError(f"unknown head {name!r}; choose one of {head_names()}")
        if num_classes < 2:
            raise ValueError(f"a margin head needs at least 2 classes, got {num_classes}")
        self.name, self.s, self.m = name, s, m
        self.weight = nn.Parameter(torch.empty(num_classes, dim))
        nn.init.xavier_uniform_(self.weight)

    @torch.no_grad()
    def imprint(self, embeddings: torch.Tensor, labels: torch.Tensor) -> int:
        """Set each class weight that has examples to the normalised mean of their L2-normalised embeddings
        (weight imprinting, Qi et al. 2018), so training starts with a head that already fits the features
        instead of random directions whose large early gradients distort the pretrained backbone.

        Args:
            embeddings: (N, D) embeddings, any norm.
            labels: (N,) class indices in [0, C).

        Returns:
            the number of classes imprinted (the others keep their weights).
        """
        _check_labels(embeddings, labels)
        if embeddings.ndim != 2 or embeddings.shape[1] != self.weight.shape[1]:
            raise ValueError(f"embeddings must be (N, {self.weight.shape[1]}), got {tuple(embeddings.shape)}")
        if labels.numel() and not 0 <= int(labels.min()) <= int(labels.max()) < self.weight.shape[0]:
            raise ValueError(f"labels must be class indices in [0, {self.weight.shape[0]})")
        sums = torch.zeros_like(self.weight, dtype=torch.float64)
        sums.index_add_(0, labels, F.normalize(embeddings.double(), dim=1))
        present = torch.bincount(labels, minlength=self.weight.shape[0]) > 0
        self.weight[present] = F.normalize(sums[present], dim=1).to(self.weight.dtype)
        return int(present.sum())

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(N, D) -> (N, C) cosines with the class weights (margin-free, for prediction)."""
        return cosine_logits(embeddings.float(), self.weight.float())

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(N, D) embeddings and (N,) labels -> (N, C) margin logits."""
        return _MARGINS[self.name](self.cosine(embeddings), labels, self.s, self.m)

    def extra_repr(self) -> str:
        return (
            f"{self.name}, classes={self.weight.size(0)}, dim={self.weight.size(1)}, s={self.s}, m={self.m}"
        )


def create_head(name: str, dim: int, num_classes: int, s: float = 30.0, m: float = 0.3) -> MarginHead:
    """Create a margin head by name (``arcface`` or ``cosface``)."""
    return MarginHead(name, dim, num_classes, s, m)
