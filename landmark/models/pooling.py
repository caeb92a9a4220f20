"""Global pooling of CNN feature maps: GeM (generalised mean) and friends.

The maths is in pure functions; modules only hold parameters (after Radenovic et al., TPAMI 2018).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from landmark.errors import ConfigError


def gem(x: torch.Tensor, p: torch.Tensor | float = 3.0, eps: float = 1e-6) -> torch.Tensor:
    """Generalised-mean pooling over the spatial dimensions.

    ``(mean(clamp(x, eps) ** p)) ** (1 / p)``: p = 1 is average pooling, p -> inf approaches max pooling.

    Args:
        x: feature map, shape (N, C, H, W).
        p: the exponent, a float or a scalar tensor (learnable).
        eps: lower clamp, keeps the power well defined for non-positive activations.

    Returns:
        Pooled descriptors, shape (N, C).
    """
    if x.dim() != 4:
        raise ValueError(f"gem expects a (N, C, H, W) feature map, got shape {tuple(x.shape)}")
    pooled = F.avg_pool2d(x.clamp(min=eps).pow(p), (x.size(-2), x.size(-1)))
    return pooled.pow(1.0 / p).flatten(1)


def average(x: torch.Tensor) -> torch.Tensor:
    """Average pooling, (N, C, H, W) -> (N, C)."""
    return x.mean(dim=(-2, -1))


def maximum(x: torch.Tensor) -> torch.Tensor:
    """Max pooling (MAC), (N, C, H, W) -> (N, C)."""
    return x.amax(dim=(-2, -1))


class GeM(nn.Module):
    """GeM pooling with a learnable exponent ``p`` (initialised to ``p``)."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6, learnable: bool = True) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)), requires_grad=learnable)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gem(x, self.p, self.eps)

    def extra_repr(self) -> str:
        return f"p={self.p.item():.4f}, eps={self.eps}"


class _Fixed(nn.Module):
    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


_POOLINGS: dict[str, Callable[..., nn.Module]] = {
    "gem": GeM,
    "avg": lambda **_: _Fixed(average),
    "max": lambda **_: _Fixed(maximum),
}


def pooling_names() -> list[str]:
    """Names accepted by :func:`create_pooling`."""
    return sorted(_POOLINGS)


def create_pooling(name: str, **kwargs: float) -> nn.Module:
    """Create a pooling module by name (``gem``, ``avg``, ``max``); kwargs go to GeM."""
    try:
        factory = _POOLINGS[name]
    except KeyError:
        raise ConfigError(f"unknown pooling {name!r}; choose one of {pooling_names()}") from None
    return factory(**kwargs)
