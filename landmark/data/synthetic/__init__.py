"""The synthetic landmark world: procedural landmarks photographed under realistic nuisances.

The built-in default dataset of the demo and tests, written in the GLDv2 layout (plus revisitop ground truth and
per-image metadata) by :func:`generate_world`. Modules: ``textures`` (procedural facets), ``photo`` (one photo:
viewpoint, clutter, occluders, light, JPEG), ``world`` (the plan: landmarks, splits, ids, label noise), ``render``
(a planned photo to pixels) and ``writer`` (files on disk).
"""

from landmark.data.synthetic.writer import SynthSummary, generate_world, world_matches

__all__ = ["SynthSummary", "generate_world", "world_matches"]
