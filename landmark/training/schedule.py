"""Learning-rate schedule: linear warm-up, then cosine annealing per optimizer step."""

from __future__ import annotations

import math


def lr_at(
    step: int, total_steps: int, base_lr: float, warmup_steps: int, final_fraction: float = 0.01
) -> float:
    """Learning rate for optimizer step ``step`` (0-based) of ``total_steps``.

    Linear from ``base_lr / warmup_steps`` up to ``base_lr`` over the warm-up, then cosine down to
    ``final_fraction * base_lr`` at the last step.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps - 1)
    progress = min(1.0, (step - warmup_steps) / span)
    floor = final_fraction * base_lr
    return floor + (base_lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
