"""Training augmentation as one affine warp per image (crop + scale + shear), plus photometric jitter.

- ``none``: the whole image resized to the template.
- ``soft``: random crop of 60-100% of the area with slight aspect jitter (Yokoo et al.'s "soft" augmentation).
- ``hard``: stronger crop (35-100%), shear, brightness and contrast changes.
All randomness comes from the generator passed in.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

Augmentation = Literal["none", "soft", "hard"]

_AREA = {"none": (1.0, 1.0), "soft": (0.6, 1.0), "hard": (0.35, 1.0)}


def crop_box(
    width: int, height: int, target_aspect: float, area_range: tuple[float, float], rng: np.random.Generator
) -> tuple[float, float, float, float]:
    """A random crop (x0, y0, w, h) covering a fraction of the image area, near ``target_aspect`` (w/h)."""
    area = width * height * rng.uniform(*area_range)
    aspect = target_aspect * float(np.exp(rng.uniform(-0.1, 0.1)))
    w = min(float(width), float(np.sqrt(area * aspect)))
    h = min(float(height), w / aspect)
    x0 = rng.uniform(0.0, width - w) if width > w else 0.0
    y0 = rng.uniform(0.0, height - h) if height > h else 0.0
    return x0, y0, w, h


def warp_matrix(box: tuple[float, float, float, float], out_h: int, out_w: int, shear: float) -> np.ndarray:
    """2x3 affine matrix mapping the crop box onto an (out_h, out_w) image, sheared about the centre."""
    x0, y0, w, h = box
    scale = np.array([[out_w / w, 0.0, -x0 * out_w / w], [0.0, out_h / h, -y0 * out_h / h], [0.0, 0.0, 1.0]])
    cy = out_h / 2.0  # x' = x + shear * (y - cy): horizontal shear that keeps the centre row fixed
    shear_m = np.array([[1.0, shear, -shear * cy], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    return (shear_m @ scale)[:2]


def augment(
    image: np.ndarray, out_h: int, out_w: int, mode: Augmentation, rng: np.random.Generator
) -> np.ndarray:
    """Augment and resize an HxWx3 uint8 image to (out_h, out_w, 3) uint8."""
    if mode not in _AREA:
        raise ValueError(f"unknown augmentation {mode!r}; expected none, soft or hard")
    height, width = image.shape[:2]
    # Pre-shrink large images with area averaging so the warp below never aliases.
    limit = 2 * max(out_h, out_w)
    if max(height, width) > limit:
        factor = limit / max(height, width)
        image = cv2.resize(
            image, (round(width * factor), round(height * factor)), interpolation=cv2.INTER_AREA
        )
        height, width = image.shape[:2]
    if mode == "none":
        box = (0.0, 0.0, float(width), float(height))
    else:
        box = crop_box(width, height, out_w / out_h, _AREA[mode], rng)
    shear = float(rng.uniform(-0.15, 0.15)) if mode == "hard" else 0.0
    out = cv2.warpAffine(
        image,
        warp_matrix(box, out_h, out_w, shear),
        (out_w, out_h),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REFLECT_101,
    )
    if mode == "hard":
        gain = rng.uniform(0.7, 1.3)
        bias = rng.uniform(-25.0, 25.0)
        mean = out.mean()
        out = np.clip((out.astype(np.float32) - mean) * gain + mean + bias, 0, 255).astype(np.uint8)
    return out
