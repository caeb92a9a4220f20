"""The ``delf`` local-feature backend: our torch DELF model over an image pyramid.

Per pyramid scale s the image is resized by s, the model gives the stride-16 feature map and its attention;
cells with attention >= ``score_threshold`` are candidates. Over all scales the ``max_features`` candidates of
highest attention are kept (strongest first): location = the cell's receptive-field centre mapped back to the
original image's pixels, scale = s, score = attention, descriptor = the cell's feature, L2-normalised, reduced
by the model's PCA (40-d by default) and L2-normalised again.

Create it with ``create_local_extractor("delf", model_dir=PATH)``; the pyramid, threshold and keypoint budget
default to the values the model directory was trained with (its ``delf`` config) and can be overridden.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from landmark.errors import ConfigError
from landmark.features.local import LocalExtractor, LocalFeatures, register_local_extractor
from landmark.models.delf import DelfModel, DelfPca, original_centres
from landmark.platform.threads import torch_threads

MIN_SIDE = 16  # pyramid levels whose resized image is smaller than one feature cell are skipped


@dataclass(frozen=True)
class RawKeypoints:
    """Selected cells before the PCA: (N, 2) locations (x, y) in original pixels, (N,) scales, (N,) scores
    and (N, C) raw feature-map descriptors, highest attention first."""

    locations: np.ndarray
    scales: np.ndarray
    scores: np.ndarray
    descriptors: np.ndarray


def as_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W) grey or (H, W, 3) RGB uint8 -> (H, W, 3) uint8 RGB.

    Raises:
        ValueError: another dtype or shape.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ValueError(f"image must have shape (H, W) or (H, W, 3), got {image.shape}")


def resize_for_scale(image: np.ndarray, scale: float) -> np.ndarray:
    """The (H, W, 3) image resized by ``scale`` (sides rounded; area averaging down, bilinear up)."""
    import cv2

    h, w = image.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if size == (w, h):
        return image
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=interpolation)


def select_top(scores: np.ndarray, max_features: int, score_threshold: float) -> np.ndarray:
    """Indices of the at most ``max_features`` scores >= ``score_threshold``, highest first (ties: lower index)."""
    candidates = np.flatnonzero(scores >= score_threshold)
    order = np.argsort(-scores[candidates], kind="stable")
    return candidates[order[:max_features]]


@torch.inference_mode()
def pyramid_keypoints(
    model: DelfModel,
    image: np.ndarray,
    scales: Sequence[float],
    score_threshold: float,
    max_features: int,
    device: str = "cpu",
) -> RawKeypoints:
    """DELF keypoints of one image over the pyramid, before the PCA (see the module docstring)."""
    rgb = as_rgb(image)
    height, width = rgb.shape[:2]
    cuda = device.startswith("cuda")
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    for scale in scales:
        resized = resize_for_scale(rgb, scale)
        h, w = resized.shape[:2]
        if min(h, w) < MIN_SIDE:
            continue
        tensor = torch.from_numpy(np.array(resized, copy=True)).to(device).permute(2, 0, 1)[None]
        # (1, 3, h, w) in channels-last memory, the layout of the HWC image: oneDNN's faster convolutions
        tensor = tensor.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=cuda):
            features, attention = model(tensor.float().div_(255.0))
        fh, fw = features.shape[2:]
        scores = attention[0, 0].float().reshape(-1).cpu().numpy()
        # The global top max_features lie within the union of each scale's top max_features.
        keep = select_top(scores, max_features, score_threshold)
        if len(keep) == 0:
            continue
        centres = original_centres(model.receptive_field.centres(fh, fw), (h, w), (height, width))
        desc = (
            features[0].float().reshape(features.shape[1], -1).T[torch.from_numpy(keep).to(features.device)]
        )
        parts.append(
            (centres.numpy()[keep], np.full(len(keep), scale, np.float32), scores[keep], desc.cpu().numpy())
        )
    if not parts:
        return RawKeypoints(
            np.zeros((0, 2), np.float32),
            np.zeros(0, np.float32),
            np.zeros(0, np.float32),
            np.zeros((0, model.channels), np.float32),
        )
    locations, level_scales, scores, descriptors = (np.concatenate(p) for p in zip(*parts, strict=True))
    keep = select_top(scores, max_features, score_threshold)
    return RawKeypoints(
        locations[keep].astype(np.float32),
        level_scales[keep],
        scores[keep].astype(np.float32),
        descriptors[keep].astype(np.float32),
    )


@dataclass(frozen=True, eq=False)
class DelfExtractor:
    """Our DELF: attention keypoints over an image pyramid, PCA-reduced descriptors.

    Attributes:
        model: the trained :class:`DelfModel` (eval mode, on ``device``).
        pca: the descriptor PCA fitted at training time.
        scales: pyramid scales.
        score_threshold: minimum attention of a kept cell.
        max_features: keypoints kept per image over all scales.
        device: ``cpu`` or ``cuda`` (fp16 autocast on CUDA).
    """

    model: DelfModel
    pca: DelfPca
    scales: tuple[float, ...]
    score_threshold: float
    max_features: int
    device: str = "cpu"
    name: str = field(default="delf", init=False)

    def __post_init__(self) -> None:
        if not self.scales or any(s <= 0 for s in self.scales):
            raise ValueError(f"scales must be positive, got {list(self.scales)}")
        if self.max_features < 1:
            raise ValueError(f"max_features must be >= 1, got {self.max_features}")
        if self.score_threshold < 0:
            raise ValueError(f"score_threshold must be >= 0, got {self.score_threshold}")
        if self.pca.input_dim != self.model.channels:
            raise ValueError(
                f"PCA expects {self.pca.input_dim}-d features, the model gives {self.model.channels}"
            )
        # Channels-last weights match the channels-last input of pyramid_keypoints: ~15% less CPU time per image
        # on efficientnet_lite0 (0.085 vs 0.10 s at 640 x 480, one thread), same features up to rounding.
        self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs lack it

    def raw(self, image: np.ndarray) -> RawKeypoints:
        """Keypoints with the raw C-d feature-map descriptors (what the PCA is fitted on).

        Described with one CPU thread (:mod:`landmark.platform.threads`): the same features in this process, a
        pool process or on a Dask worker, so local stores are bit-identical whatever the backend.
        """
        with torch_threads():
            return pyramid_keypoints(
                self.model, image, self.scales, self.score_threshold, self.max_features, self.device
            )

    def __call__(self, image: np.ndarray) -> LocalFeatures:
        raw = self.raw(image)
        descriptors = self.pca.transform(raw.descriptors) if len(raw.scores) else np.zeros((0, self.pca.dim))
        return LocalFeatures(raw.locations, raw.scales, raw.scores, descriptors)


def load_delf_extractor(
    model_dir: str | Path,
    *,
    scales: Sequence[float] | None = None,
    score_threshold: float | None = None,
    max_features: int | None = None,
    feature_stride: int | None = None,
    device: str = "cpu",
) -> DelfExtractor:
    """A :class:`DelfExtractor` from a DELF model directory; unset settings come from its ``delf`` config.

    Raises:
        ModelDirError: the directory is not a loadable DELF model.
    """
    from landmark.config import resolve_device
    from landmark.models.delf_dir import load_delf_dir

    device = resolve_device(device)
    loaded = load_delf_dir(Path(model_dir), device=device, feature_stride=feature_stride)
    cfg = loaded.config
    return DelfExtractor(
        model=loaded.model,
        pca=loaded.pca,
        scales=tuple(float(s) for s in (scales if scales is not None else cfg.scales)),
        score_threshold=float(score_threshold if score_threshold is not None else cfg.score_threshold),
        max_features=int(max_features if max_features is not None else cfg.max_features),
        device=device,
    )


@register_local_extractor("delf")
def _create_delf(**params: object) -> LocalExtractor:
    if "model_dir" not in params:
        raise ConfigError(
            "the delf backend needs model_dir=<a DELF model directory from `landmark train-delf`>"
        )
    try:
        return load_delf_extractor(**params)  # type: ignore[arg-type]  # checked at run time
    except TypeError as exc:
        raise ConfigError(f"bad parameters for the delf backend: {exc}") from exc
