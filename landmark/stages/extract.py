"""Stage ``extract``: global descriptors of a dataset's splits into feature stores."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from landmark.config import Config
from landmark.features.global_extract import ExtractSummary, extract_dataset


def extract(
    cfg: Config,
    data_dir: Path,
    out_dir: Path,
    *,
    splits: Sequence[str] = (),
    fmt: str = "auto",
    model_dir: Path | None = None,
    progress: bool = True,
) -> ExtractSummary:
    """Global descriptors of every usable image of each split (default: all) of ``data_dir`` into
    ``out_dir/<split>/``, resumable, with ``model_dir`` (None: the off-the-shelf backbone + GeM); see
    :func:`landmark.features.global_extract.extract_dataset`.

    Returns:
        split -> number of images newly extracted, with the skipped images in ``bad_images``.

    Raises:
        TooManyBadImagesError: a split with more than ``extract.max_bad_share`` undecodable images.
    """
    return extract_dataset(
        cfg, data_dir, out_dir, splits=splits, fmt=fmt, model_dir=model_dir, progress=progress
    )
