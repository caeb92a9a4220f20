"""Stage ``synth``: generate the synthetic landmark world."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from landmark.config import Config


def synth(cfg: Config, out_dir: Path, *, progress: bool = True) -> Any:
    """Generate the synthetic landmark world (GLDv2 layout + solutions + gnd) into ``out_dir``."""
    from landmark.data.synthetic import generate_world

    return generate_world(cfg.synth, Path(out_dir), seed=cfg.seed, progress=progress, parallel=cfg.parallel)
