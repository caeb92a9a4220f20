"""Fixtures shared by the model tests."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from landmark.training.loop import TrainItem


@pytest.fixture(scope="module")
def items(tmp_path_factory: pytest.TempPathFactory) -> list[TrainItem]:
    """4 classes x 8 images: class-specific stripe orientation and colour, with per-image noise and shifts."""
    root = tmp_path_factory.mktemp("train_images")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:72, 0:96]
    out = []
    for label in range(4):
        angle = label * np.pi / 4
        colour = np.array([[255, 60, 60], [60, 255, 60], [60, 60, 255], [230, 230, 60]][label])
        for k in range(8):
            phase = rng.uniform(0, 2 * np.pi)
            stripes = 0.5 + 0.5 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) / 3.0 + phase)
            image = stripes[..., None] * colour + rng.normal(0, 20, (72, 96, 3))
            path = root / f"c{label}_{k}.png"
            Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path)
            out.append(TrainItem(path, label, 96, 72))
    return out
