"""Local features behind one interface: a small registry of extractor backends.

Every backend turns an image (H, W) or (H, W, 3) uint8 RGB array into :class:`LocalFeatures`: keypoint
locations in the ORIGINAL image's pixels, scales, scores and L2-normalised descriptors. Backends:

- ``sift``: OpenCV SIFT on the grey image (optionally RootSIFT), the classical baseline that needs no training.
- ``delf`` (:mod:`landmark.features.delf`, param ``model_dir``): our torch DELF (attention on the stride-16 map,
  image pyramid, PCA to 40-d).
- ``delf-tf`` (:mod:`landmark.features.delf_tf`, ``[tf]`` extra, param ``model_dir``): an official DELF/DELG
  TensorFlow SavedModel loaded from a local directory.

Create one with ``create_local_extractor(name, **params)``; :func:`local_extractor_names` lists the registry.
The model-based backends live in their own modules, imported on first use (torch/TensorFlow stay unloaded
for SIFT users).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from landmark.errors import ConfigError
from landmark.normalize import l2_normalize


@dataclass(frozen=True, eq=False)
class LocalFeatures:
    """Local features of one image.

    Attributes:
        locations: (N, 2) float32 keypoint centres (x, y) in original image pixels.
        scales: (N,) float32 keypoint scale (SIFT: diameter in original pixels).
        scores: (N,) float32 keypoint strength (SIFT response; DELF attention).
        descriptors: (N, D) float32, rows L2-normalised.
    """

    locations: np.ndarray
    scales: np.ndarray
    scores: np.ndarray
    descriptors: np.ndarray

    def __post_init__(self) -> None:
        locations = np.asarray(self.locations, dtype=np.float32)
        descriptors = np.asarray(self.descriptors, dtype=np.float32)
        n = locations.shape[0] if locations.ndim == 2 else -1
        if locations.ndim != 2 or locations.shape[1] != 2:
            raise ValueError(f"locations must have shape (N, 2), got {locations.shape}")
        if descriptors.ndim != 2 or descriptors.shape[0] != n:
            raise ValueError(f"descriptors must have shape ({n}, D), got {descriptors.shape}")
        object.__setattr__(self, "locations", locations)
        object.__setattr__(self, "descriptors", descriptors)
        for name in ("scales", "scores"):
            value = np.asarray(getattr(self, name), dtype=np.float32)
            if value.shape != (n,):
                raise ValueError(f"{name} must have shape ({n},), got {value.shape}")
            object.__setattr__(self, name, value)

    def __len__(self) -> int:
        return int(self.locations.shape[0])

    @property
    def dim(self) -> int:
        """Descriptor dimension D."""
        return int(self.descriptors.shape[1])


class LocalExtractor(Protocol):
    """A local-feature backend: ``extractor(image) -> LocalFeatures``."""

    @property
    def name(self) -> str:
        """The registry name of the backend."""
        ...

    def __call__(self, image: np.ndarray) -> LocalFeatures:
        """Features of one (H, W) grey or (H, W, 3) RGB uint8 image."""
        ...


_REGISTRY: dict[str, Callable[..., LocalExtractor]] = {}
# Backends registered by their own module, imported when first requested.
_LAZY_BACKENDS = {"delf": "landmark.features.delf", "delf-tf": "landmark.features.delf_tf"}


def register_local_extractor(
    name: str,
) -> Callable[[Callable[..., LocalExtractor]], Callable[..., LocalExtractor]]:
    """Decorator adding a backend factory to the registry under ``name``."""

    def add(factory: Callable[..., LocalExtractor]) -> Callable[..., LocalExtractor]:
        if name in _REGISTRY:
            raise ValueError(f"local extractor {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return add


def local_extractor_names() -> list[str]:
    """Registered backend names (including those imported on first use), sorted."""
    return sorted(set(_REGISTRY) | set(_LAZY_BACKENDS))


def create_local_extractor(name: str, **params: object) -> LocalExtractor:
    """A local-feature extractor of backend ``name`` built with ``params``.

    Raises:
        ValueError: an unknown backend name or bad parameters.
    """
    if name not in _REGISTRY and name in _LAZY_BACKENDS:
        importlib.import_module(_LAZY_BACKENDS[name])  # registers the backend
    if name not in _REGISTRY:
        raise ConfigError(
            f"unknown local feature backend {name!r}; available: {', '.join(local_extractor_names())}"
        )
    return _REGISTRY[name](**params)


def empty_features(dim: int) -> LocalFeatures:
    """No keypoints, descriptor dimension ``dim``."""
    return LocalFeatures(
        np.zeros((0, 2), np.float32),
        np.zeros(0, np.float32),
        np.zeros(0, np.float32),
        np.zeros((0, dim), np.float32),
    )


def _to_gray(image: np.ndarray) -> np.ndarray:
    import cv2

    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    raise ValueError(f"image must have shape (H, W) or (H, W, 3), got {image.shape}")


@dataclass(frozen=True)
class SiftExtractor:
    """OpenCV SIFT on the grey image, resized so its longer side is at most ``max_side``.

    Attributes:
        max_features: keep at most this many keypoints, strongest response first.
        max_side: longer image side before detection, pixels (0 = never resize); locations and scales are
            mapped back to the original image.
        root_sift: RootSIFT (L1 normalise, square root; Arandjelovic & Zisserman 2012) instead of plain SIFT.
        contrast_threshold: OpenCV's DoG contrast threshold.
    """

    max_features: int = 1000
    max_side: int = 1024
    root_sift: bool = True
    contrast_threshold: float = 0.04
    name: str = field(default="sift", init=False)

    def __post_init__(self) -> None:
        if self.max_features < 1:
            raise ValueError(f"max_features must be >= 1, got {self.max_features}")
        if self.max_side < 0:
            raise ValueError(f"max_side must be >= 0, got {self.max_side}")
        if self.contrast_threshold <= 0:
            raise ValueError(f"contrast_threshold must be > 0, got {self.contrast_threshold}")

    def __call__(self, image: np.ndarray) -> LocalFeatures:
        import cv2

        gray = _to_gray(image)
        h, w = gray.shape
        if self.max_side and max(h, w) > self.max_side:
            factor = self.max_side / max(h, w)
            size = (max(1, round(w * factor)), max(1, round(h * factor)))
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        sift = cv2.SIFT.create(contrastThreshold=self.contrast_threshold)
        keypoints, desc = sift.detectAndCompute(gray, None)
        if desc is None or not keypoints:
            return empty_features(128)
        response = np.array([k.response for k in keypoints], np.float32)
        keep = np.argsort(-response, kind="stable")[: self.max_features]
        points = np.array([keypoints[i].pt for i in keep], np.float32)
        sizes = np.array([keypoints[i].size for i in keep], np.float32)
        desc = desc[keep].astype(np.float32)
        if self.root_sift:
            desc = np.sqrt(desc / np.maximum(desc.sum(axis=1, keepdims=True), 1e-12))
        # OpenCV puts pixel centres at integer coordinates: map centre-to-centre back to the original image.
        scale_back = np.array([w / gray.shape[1], h / gray.shape[0]], np.float32)
        locations = (points + 0.5) * scale_back - 0.5
        return LocalFeatures(
            locations=locations,
            scales=sizes * float(scale_back.mean()),
            scores=response[keep],
            descriptors=l2_normalize(desc),
        )


@register_local_extractor("sift")
def _create_sift(**params: object) -> LocalExtractor:
    try:
        return SiftExtractor(**params)  # type: ignore[arg-type]  # checked at run time
    except TypeError as exc:
        raise ConfigError(f"bad parameters for the sift backend: {exc}") from exc
