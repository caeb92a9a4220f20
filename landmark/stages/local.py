"""Stage ``local``: local features (SIFT or DELF, ``local.backend``) of a split's usable images into a local
feature store at ``<out>/<split>/`` (resumable: ids already in complete shards are skipped)."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from landmark.config import Config, LocalConfig, resolve_device

if TYPE_CHECKING:
    from landmark.features.local import LocalExtractor, LocalFeatures


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


def backend_params(cfg: LocalConfig, device: str = "cpu") -> dict[str, object]:
    """Keyword arguments of ``create_local_extractor(cfg.backend, ...)``.

    The stage resizes every image to ``cfg.image_size`` itself, so SIFT is told not to resize again; the DELF
    backends get their model directory (our torch DELF also the device).
    """
    if cfg.backend == "sift":
        return {"max_features": cfg.max_features, "max_side": 0}
    params: dict[str, object] = {"model_dir": cfg.model, "max_features": cfg.max_features}
    if cfg.backend == "delf":
        params["device"] = device
    return params


def store_meta(cfg: LocalConfig) -> dict[str, object]:
    """What the store records about its features; appending with other settings is refused."""
    return {"backend": cfg.backend, "model": cfg.model, "image_size": cfg.image_size,
            "max_features": cfg.max_features}  # fmt: skip


def check_store_settings(store: Path, cfg: LocalConfig) -> None:
    """Refuse to resume a store written with other local-feature settings (its features would not match).

    Raises:
        LocalStoreError: naming the settings that differ.
    """
    from landmark.features.local_store import LocalStoreError, read_local_meta

    meta = read_local_meta(store)
    wanted = store_meta(cfg)
    changed = sorted(k for k in wanted if meta.get(k) != wanted[k])
    if changed:
        raise LocalStoreError(
            f"{store} holds local features written with a different {', '.join(changed)} "
            f"({', '.join(f'{k}={meta.get(k)!r}' for k in changed)}); remove it or choose another --out"
        )


@functools.lru_cache(maxsize=2)
def _extractor(backend: str, params: tuple[tuple[str, object], ...]) -> LocalExtractor:
    """One extractor per worker process and settings (a DELF model loads once, not per image)."""
    from landmark.features.local import create_local_extractor

    return create_local_extractor(backend, **dict(params))


def resize_long_side(image: np.ndarray, long_side: int) -> tuple[np.ndarray, float, float]:
    """Resize so the longer side is ``long_side`` (0 = unchanged); returns the image and the x, y factors
    original / resized that map locations back."""
    import cv2

    h, w = image.shape[:2]
    if long_side == 0 or max(h, w) == long_side:
        return image, 1.0, 1.0
    scale = long_side / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    method = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, (nw, nh), interpolation=method), w / nw, h / nh


ExtractTask = tuple[str, str, str, tuple[tuple[str, object], ...], int]


def extract_image(task: ExtractTask) -> tuple[str, LocalFeatures]:
    """Local features of one image file in original-image pixels: ``(image_id, features)``.

    ``task`` = (image id, image path, backend, backend params as sorted items, long side); module level so a
    process pool can pickle it.
    """
    from landmark.data.images import decode_image
    from landmark.features.local import LocalFeatures

    image_id, path, backend, params, long_side = task
    image = decode_image(path, name=image_id)
    resized, fx, fy = resize_long_side(image, long_side)
    feats = _extractor(backend, params)(resized)
    # pixel centres sit at integer coordinates: map centre-to-centre back to the original image
    locations = (feats.locations + 0.5) * np.array([fx, fy], np.float32) - 0.5
    return image_id, LocalFeatures(
        locations=locations,
        scales=feats.scales * np.float32((fx + fy) / 2),
        scores=feats.scores,
        descriptors=feats.descriptors,
    )


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
    from landmark.features.local_store import LocalFeatureReader, LocalFeatureWriter, stored_local_ids
    from landmark.parallel import parallel_map

    start = time.perf_counter()
    dataset = open_dataset(cfg, Path(data_dir), fmt)
    paths = dataset.image_paths(split)
    store = Path(out_dir) / split
    done = set(stored_local_ids(store)) if store.exists() else set()
    todo = [i for i in paths if i not in done]
    if limit is not None:
        todo = todo[: max(limit, 0)]
    if done:
        check_store_settings(store, cfg.local)
    device = resolve_device(cfg.device)
    params = tuple(sorted(backend_params(cfg.local, device).items()))
    # CUDA does not survive a fork: a GPU DELF extracts in this process
    workers = 0 if cfg.local.backend == "delf" and device == "cuda" else cfg.local.workers
    tasks = [(i, str(paths[i]), cfg.local.backend, params, cfg.local.image_size) for i in todo]
    keypoints = 0
    writer: LocalFeatureWriter | None = None
    try:
        for image_id, feats in parallel_map(
            extract_image, tasks, workers=workers, desc=f"local {split}", progress=progress
        ):
            if writer is None:
                writer = LocalFeatureWriter(
                    store, feats.dim, shard_size=shard_size, meta=store_meta(cfg.local)
                )
            writer.add(image_id, feats)
            keypoints += len(feats)
    finally:
        if writer is not None:
            writer.flush()  # what was extracted before an error or a kill is complete and valid
    bytes_per_image = LocalFeatureReader(store).bytes_per_image() if store.exists() else 0.0
    return LocalSummary(
        store=store,
        images=len(paths),
        already_stored=sum(1 for i in paths if i in done),
        extracted=len(todo),
        mean_keypoints=keypoints / len(todo) if todo else 0.0,
        bytes_per_image=bytes_per_image,
        seconds=time.perf_counter() - start,
    )
