"""Stage ``local``: local features (SIFT or DELF, ``local.backend``) of a split's usable images into a local
feature store at ``<out>/<split>/`` (resumable: ids already in complete shards are skipped)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from landmark.config import Config, resolve_device
from landmark.features.local_extract import LocalItem, extract_local_to_store


@dataclass(frozen=True)
class LocalSummary:
    """What one run did: images of the split, how many were already stored, newly extracted, time taken."""

    store: Path
    images: int
    already_stored: int
    extracted: int
    mean_keypoints: float  # over the newly extracted images (0 when none)
    bytes_per_image: float  # whole store on disk
    seconds: float


def local(
    cfg: Config,
    data_dir: Path,
    out_dir: Path,
    *,
    split: str = "train",
    fmt: str = "auto",
    shard_size: int = 256,
    limit: int | None = None,
    progress: bool = True,
) -> LocalSummary:
    """Extract local features of every ok image of ``split`` not yet stored in ``out_dir/<split>``.

    Args:
        cfg: ``local`` (backend, model, image size, features, workers) and ``device`` (torch DELF).
        data_dir: dataset root (any supported format).
        out_dir: local feature root; the store is ``out_dir/<split>``.
        split: which split.
        fmt: dataset format or "auto".
        shard_size: images per store shard (a killed run loses at most one shard's work).
        limit: extract at most this many missing images (e.g. a time-boxed run; the next run resumes).
        progress: show a progress bar.

    Raises:
        LocalStoreError: the store was written with other settings.
        KeyError: no such split.
    """
    from landmark.data.datasets import open_dataset
    from landmark.features.local_store import LocalFeatureReader

    start = time.perf_counter()
    dataset = open_dataset(cfg, Path(data_dir), fmt)
    paths = dataset.image_paths(split)
    store = Path(out_dir) / split
    run = extract_local_to_store(
        [LocalItem(image_id, Path(path)) for image_id, path in paths.items()],
        store,
        cfg.local,
        device=resolve_device(cfg.device),
        shard_size=shard_size,
        limit=limit,
        desc=f"local {split}",
        progress=progress,
    )
    bytes_per_image = LocalFeatureReader(store).bytes_per_image() if store.exists() else 0.0
    return LocalSummary(
        store=store,
        images=run.items,
        already_stored=run.already_stored,
        extracted=run.extracted,
        mean_keypoints=run.keypoints / run.extracted if run.extracted else 0.0,
        bytes_per_image=bytes_per_image,
        seconds=time.perf_counter() - start,
    )
