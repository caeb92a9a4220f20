"""From a planned :class:`~landmark.data.synthetic.world.PhotoSpec` to pixels.

Landmark facets are drawn once per process and cached (photos are rendered grouped by facet, so a worker keeps
hitting the cache). Non-landmark photos show a one-off generic facade, never reused, or only street clutter.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from landmark.config import SynthConfig
from landmark.data.synthetic.photo import RenderedPhoto, facet_pyramid, render_photo, view_difficulty
from landmark.data.synthetic.textures import FAMILIES, render_facet
from landmark.data.synthetic.world import STREAM_FACET, PhotoSpec

# A landmark photo is re-drawn (same generator, continued) until its measured difficulty matches the plan, so
# the planned quotas of easy/hard/junk views hold exactly; after this many tries the last draw is kept.
MAX_TRIES = 12

# Share of non-landmark photos whose main subject is a one-off generic building (the rest: street clutter only).
GENERIC_BUILDING_SHARE = 0.75


@dataclass(frozen=True)
class RenderSettings:
    """The rendering knobs of a :class:`SynthConfig` plus the world seed (picklable, sent to workers)."""

    seed: int
    image_size: int
    facet_size: int
    jpeg_quality: tuple[int, int]

    @classmethod
    def from_config(cls, cfg: SynthConfig, seed: int) -> RenderSettings:
        """Settings for ``cfg`` and ``seed``."""
        return cls(seed, cfg.image_size, cfg.facet_size, cfg.jpeg_quality)


def landmark_facet(seed: int, landmark: int, facet: int, family: str, size: int) -> np.ndarray:
    """Facet ``facet`` of ``landmark`` in the world of ``seed``: (size, size, 3) uint8 RGB, read-only, cached."""
    return _landmark_pyramid(seed, landmark, facet, family, size)[0][..., :3]


@functools.lru_cache(maxsize=32)
def _landmark_pyramid(seed: int, landmark: int, facet: int, family: str, size: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(np.random.SeedSequence([seed, STREAM_FACET, landmark, facet]))
    pyramid = facet_pyramid(render_facet(rng, size, family))
    for level in pyramid:
        level.flags.writeable = False  # shared through the cache
    return pyramid


def photo_difficulty(photo: RenderedPhoto, planned: str) -> str:
    """Measured difficulty (``easy``/``hard``/``junk``) of a landmark photo rendered with viewpoint ``planned``:
    see :func:`~landmark.data.synthetic.photo.view_difficulty`."""
    h, w = photo.visible.shape
    return view_difficulty(photo.visible_fraction, int(photo.visible.sum()), h * w, planned)


def render_spec(spec: PhotoSpec, settings: RenderSettings) -> RenderedPhoto:
    """Render the photo described by ``spec`` (identical output for identical inputs, in any process)."""
    rng = np.random.default_rng(np.random.SeedSequence(list(spec.entropy)))
    if spec.facet >= 0:
        pyramid = _landmark_pyramid(
            settings.seed, spec.landmark, spec.facet, spec.family, settings.facet_size
        )
        for _ in range(MAX_TRIES):
            photo = render_photo(rng, pyramid, spec.level, settings.image_size, settings.jpeg_quality)
            if photo_difficulty(photo, spec.level) == spec.level:
                break
        return photo
    if rng.random() < GENERIC_BUILDING_SHARE:
        family = FAMILIES[int(rng.integers(len(FAMILIES)))]
        facet_rng = np.random.default_rng(np.random.SeedSequence([*spec.entropy, STREAM_FACET]))
        generic = facet_pyramid(render_facet(facet_rng, max(64, settings.facet_size // 2), family))
        level = "easy" if rng.random() < 0.5 else "hard"
        return render_photo(rng, generic, level, settings.image_size, settings.jpeg_quality)
    return render_photo(rng, None, "easy", settings.image_size, settings.jpeg_quality)
