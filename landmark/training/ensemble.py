"""Weight-space ensembling of the fine-tuned model with its starting point (WiSE-FT, Wortsman et al., CVPR 2022).

Fine-tuning on a narrow domain (here: a few hundred images of one world) makes the descriptor forget some of what
the pretrained backbone knew about other photos. Interpolating the weights of the fine-tuned model with those of
the model it started from keeps most of the in-domain gain and much of the pretrained model's robustness:
``theta = (1 - alpha) * theta_0 + alpha * theta_ft``.

The starting point here is the *zero-shot* descriptor: the pretrained backbone and GeM, with the initial neck as
a plain projection of the pretrained features (the PCA directions, or random ones with ``neck_init: random``; no
centring, no whitening). Centring and whitening are statistics
of the training domain; they belong to the fine-tuned end, whose BatchNorm learned them.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from landmark.models.global_model import GlobalDescriptor


def interpolate_weights(
    start: Mapping[str, torch.Tensor], end: Mapping[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """``(1 - alpha) * start + alpha * end`` for every floating-point tensor of two state dicts of one model.

    Integer tensors (BatchNorm's ``num_batches_tracked``) are taken from ``end``.

    Raises:
        ValueError: ``alpha`` outside [0, 1], or state dicts with different keys or shapes.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if start.keys() != end.keys():
        raise ValueError(f"state dicts differ in keys: {sorted(set(start) ^ set(end))}")
    out: dict[str, torch.Tensor] = {}
    for name, last in end.items():
        first = start[name]
        if first.shape != last.shape:
            raise ValueError(f"{name}: shapes differ, {tuple(first.shape)} vs {tuple(last.shape)}")
        if last.is_floating_point():
            mixed = torch.lerp(first.to(last.device, torch.float64), last.double(), alpha)
            out[name] = mixed.to(last.dtype)
        else:
            out[name] = last.clone()
    return out


@torch.no_grad()
def zero_shot_state(model: GlobalDescriptor) -> dict[str, torch.Tensor]:
    """A CPU copy of ``model``'s weights with its FC -> BatchNorm1d neck turned into the plain projection
    ``x -> W x``: FC bias 0, BatchNorm the identity in eval mode (mean 0, variance 1 - eps, scale 1, shift 0).
    Call it on the model right after the PCA initialisation of its neck.

    Raises:
        ValueError: the model has no FC -> BatchNorm1d neck.
    """
    neck = model.neck
    if not (
        isinstance(neck, nn.Sequential)
        and len(neck) == 2
        and isinstance(neck[0], nn.Linear)
        and isinstance(neck[1], nn.BatchNorm1d)
    ):
        raise ValueError("zero_shot_state needs a model with an FC -> BatchNorm1d neck (embedding_dim > 0)")
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    bn = neck[1]
    state["neck.0.bias"].zero_()
    state["neck.1.weight"].fill_(1.0)
    state["neck.1.bias"].zero_()
    state["neck.1.running_mean"].zero_()
    state["neck.1.running_var"].fill_(1.0 - bn.eps)
    return state
