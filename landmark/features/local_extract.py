"""Local features of image files into a local feature store (resumable), with optional query crops.

Shared by the ``local`` stage (a dataset split) and ``eval-revisitop --spatial`` (a benchmark's database and its
cropped queries): each image is decoded, cropped to its box if it has one, resized so its long side is
``LocalConfig.image_size``, described by the configured backend, and its keypoint locations are mapped back to
the ORIGINAL image's pixels (crop offset included). Work goes in chunks through :func:`landmark.platform.parallel.map_chunks`,
each chunk writing its own store shard.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from landmark.config import LocalConfig, ParallelConfig
from landmark.data.images import ImageDecodeError, bbox_pixels, decode_image
from landmark.errors import InputError
from landmark.features.local import LocalExtractor, LocalFeatures, create_local_extractor
from landmark.features.local_store import (
    LocalStoreError,
    ensure_local_meta,
    next_local_shard_number,
    read_local_meta,
    stored_local_ids,
    write_local_shard,
)
from landmark.platform.parallel import chunked, map_chunks

BBox = tuple[float, float, float, float]


@dataclass(frozen=True)
class LocalItem:
    """One image to describe: the store key, the file and an optional crop box (x0, y0, x1, y1) in pixels."""

    key: str
    path: Path
    bbox: BBox | None = None


def backend_params(cfg: LocalConfig, device: str = "cpu") -> dict[str, object]:
    """Keyword arguments of ``create_local_extractor(cfg.backend, ...)``.

    Images are resized to ``cfg.image_size`` here, so SIFT is told not to resize again; the DELF backends get
    their model directory (our torch DELF also the device).
    """
    if cfg.backend == "sift":
        return {"max_features": cfg.max_features, "max_side": 0}
    params: dict[str, object] = {"model_dir": cfg.model, "max_features": cfg.max_features}
    if cfg.backend == "delf":
        params["device"] = device
    return params


def store_meta(cfg: LocalConfig) -> dict[str, object]:
    """What a store records about its features; appending with other settings is refused."""
    return {"backend": cfg.backend, "model": cfg.model, "image_size": cfg.image_size,
            "max_features": cfg.max_features}  # fmt: skip


def check_store_settings(store: Path, cfg: LocalConfig) -> None:
    """Refuse to resume a store written with other local-feature settings (its features would not match).

    Raises:
        LocalStoreError: naming the settings that differ.
    """
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


ExtractTask = tuple[str, str, str, tuple[tuple[str, object], ...], int, BBox | None]


def extract_image(task: ExtractTask) -> tuple[str, LocalFeatures]:
    """Local features of one image file in original-image pixels: ``(key, features)``.

    ``task`` = (key, image path, backend, backend params as sorted items, long side, crop box or None); module
    level so a process pool can pickle it. A crop is taken before resizing and its offset added back.
    """
    key, path, backend, params, long_side, bbox = task
    return key, _describe(decode_image(path), backend, params, long_side, bbox)


def extract_image_or_error(task: ExtractTask) -> tuple[str, LocalFeatures | ImageDecodeError]:
    """:func:`extract_image`, with a file that cannot be decoded returned as its error instead of raised: one
    bad image must not end a worker's chunk of work (the error still names the file)."""
    try:
        return extract_image(task)
    except ImageDecodeError as exc:
        return task[0], exc


def local_features(
    image: np.ndarray, cfg: LocalConfig, *, device: str = "cpu", bbox: BBox | None = None
) -> LocalFeatures:
    """Local features of a decoded (H, W, 3) uint8 image exactly as the ``local`` stage stores them: resized to
    ``cfg.image_size``, locations and scales in original-image pixels (e.g. a query at serving time)."""
    params = tuple(sorted(backend_params(cfg, device).items()))
    return _describe(image, cfg.backend, params, cfg.image_size, bbox)


def _describe(
    image: np.ndarray,
    backend: str,
    params: tuple[tuple[str, object], ...],
    long_side: int,
    bbox: BBox | None,
) -> LocalFeatures:
    x0 = y0 = 0
    if bbox is not None:
        x0, y0, x1, y1 = bbox_pixels(bbox, image.shape[1], image.shape[0])
        image = np.ascontiguousarray(image[y0:y1, x0:x1])
    resized, fx, fy = resize_long_side(image, long_side)
    feats = _extractor(backend, params)(resized)
    # pixel centres sit at integer coordinates: map centre-to-centre back to the original image
    locations = (
        (feats.locations + 0.5) * np.array([fx, fy], np.float32) - 0.5 + np.array([x0, y0], np.float32)
    )
    return LocalFeatures(
        locations=locations,
        scales=feats.scales * np.float32((fx + fy) / 2),
        scores=feats.scores,
        descriptors=feats.descriptors,
    )


@dataclass(frozen=True)
class LocalExtraction:
    """What :func:`extract_local_to_store` did: items asked for, already stored, newly extracted, keypoints."""

    items: int
    already_stored: int
    extracted: int
    keypoints: int


# called with an image that cannot be decoded and the error; None: the error is raised
OnBadLocalItem = Callable[[LocalItem, ImageDecodeError], None]


@dataclass(frozen=True)
class LocalChunk:
    """One chunk of the local stage: describe ``tasks`` and write them as shard ``number`` of ``store``."""

    store: str
    number: int
    tasks: tuple[ExtractTask, ...]
    meta: tuple[tuple[str, object], ...]  # the store's recorded settings (:func:`store_meta`)

    @property
    def store_name(self) -> str:
        """The store's directory name (the split), for naming the chunk's task run."""
        return Path(self.store).name


@dataclass(frozen=True)
class LocalChunkResult:
    """What a chunk stored: keys in the shard (input order), keypoints, and the images it could not decode."""

    number: int
    stored: tuple[str, ...]
    keypoints: int
    bad: tuple[tuple[str, ImageDecodeError], ...]


def extract_local_chunk(chunk: LocalChunk) -> LocalChunkResult:
    """Describe a chunk's images and write them as one complete shard (atomic; idempotent, so a chunk whose worker
    died is simply run again). Module level: it runs in a process pool or on a Dask worker."""
    keys: list[str] = []
    feats: list[LocalFeatures] = []
    bad: list[tuple[str, ImageDecodeError]] = []
    for task in chunk.tasks:
        key, result = extract_image_or_error(task)
        if isinstance(result, ImageDecodeError):
            bad.append((key, result))
        else:
            keys.append(key)
            feats.append(result)
    if keys:
        root = Path(chunk.store)
        root.mkdir(parents=True, exist_ok=True)
        ensure_local_meta(root, feats[0].dim, "int16", dict(chunk.meta))
        write_local_shard(root, chunk.number, keys, feats, "int16")
    return LocalChunkResult(chunk.number, tuple(keys), sum(len(f) for f in feats), tuple(bad))


def plan_local_chunks(
    items: Sequence[LocalItem], store: Path, cfg: LocalConfig, *, device: str, chunk_images: int
) -> list[LocalChunk]:
    """The chunks that describe ``items`` (already filtered to the missing ones), numbered after the store's
    last complete shard so they never overwrite stored work."""
    params = tuple(sorted(backend_params(cfg, device).items()))
    tasks = [(item.key, str(item.path), cfg.backend, params, cfg.image_size, item.bbox) for item in items]
    first = next_local_shard_number(store) if store.exists() else 0
    meta = tuple(sorted(store_meta(cfg).items()))
    return [
        LocalChunk(str(store), first + k, tuple(part), meta)
        for k, part in enumerate(chunked(tasks, chunk_images))
    ]


@dataclass(frozen=True)
class LocalPlan:
    """The local-feature work on a store: the chunks of the missing items, and what is already there."""

    items: int
    already_stored: int
    chunks: tuple[LocalChunk, ...]
    todo: tuple[LocalItem, ...]

    @property
    def sizes(self) -> list[int]:
        """Images per chunk."""
        return [len(c.tasks) for c in self.chunks]


def plan_local_extraction(
    items: Sequence[LocalItem],
    store: Path,
    cfg: LocalConfig,
    *,
    device: str = "cpu",
    chunk_images: int = 256,
    limit: int | None = None,
) -> LocalPlan:
    """The chunks that extract the items whose key is not yet in the store at ``store`` (at most ``limit``).

    Raises:
        LocalStoreError: the store was written with other settings.
        ValueError: repeated keys.
    """
    keys = [item.key for item in items]
    if len(set(keys)) != len(keys):
        repeated = sorted({k for k in keys if keys.count(k) > 1})[:5]
        raise InputError(f"local feature keys must be unique, repeated: {repeated}")
    done = set(stored_local_ids(store)) if store.exists() else set()
    if done:
        check_store_settings(store, cfg)
    todo = [item for item in items if item.key not in done]
    if limit is not None:
        todo = todo[: max(limit, 0)]
    chunks = plan_local_chunks(todo, store, cfg, device=device, chunk_images=chunk_images)
    return LocalPlan(len(items), sum(1 for k in keys if k in done), tuple(chunks), tuple(todo))


def collect_local_results(
    plan: LocalPlan, results: Iterable[LocalChunkResult], on_bad: OnBadLocalItem | None = None
) -> LocalExtraction:
    """What the plan's chunks did; each undecodable image goes to ``on_bad`` (None: its error is raised)."""
    by_key = {item.key: item for item in plan.todo}
    keypoints = extracted = 0
    for result in results:
        for key, error in result.bad:
            if on_bad is None:
                raise error
            on_bad(by_key[key], error)
        keypoints += result.keypoints
        extracted += len(result.stored)
    return LocalExtraction(plan.items, plan.already_stored, extracted, keypoints)


def extract_local_to_store(
    items: Sequence[LocalItem],
    store: Path,
    cfg: LocalConfig,
    *,
    device: str = "cpu",
    shard_size: int = 256,
    limit: int | None = None,
    desc: str = "local",
    progress: bool = True,
    on_bad: OnBadLocalItem | None = None,
    parallel: ParallelConfig | None = None,
) -> LocalExtraction:
    """Extract the items whose key is not yet in the store at ``store`` (resumable, keyed by ``item.key``).

    The work is cut into chunks (``parallel.chunk_images`` images, else ``shard_size``); each chunk runs as one
    task on the ``parallel`` backend (local processes: ``cfg.workers``; or a Dask cluster) and writes its own
    shard, so the store is the same whatever the backend and a lost worker costs one chunk.
    An image that cannot be decoded is passed to ``on_bad`` with its :class:`ImageDecodeError` and not stored
    (a later run tries it again); without ``on_bad`` the error is raised here, naming the file.

    Args:
        items: images to describe (keys unique).
        store: local feature store directory.
        cfg: backend, model, image size, features, workers.
        device: torch device of the DELF backend (a GPU DELF extracts in this process: CUDA does not survive a
            fork).
        shard_size: images per shard without a ``parallel`` config (a killed run loses at most one shard).
        limit: extract at most this many missing items (the next run resumes).
        desc: progress-bar label.
        progress: show a progress bar.
        parallel: where chunks run (default: local processes, chunks of ``shard_size``).

    Raises:
        LocalStoreError: the store was written with other settings.
        ValueError: repeated keys.
    """
    config = parallel or ParallelConfig(chunk_images=shard_size)
    plan = plan_local_extraction(
        items, store, cfg, device=device, chunk_images=config.chunk_images, limit=limit
    )
    workers = local_workers(cfg, device)
    results = map_chunks(
        extract_local_chunk,
        plan.chunks,
        config,
        workers=workers,
        desc=desc,
        progress=progress,
        sizes=plan.sizes,
    )
    return collect_local_results(plan, results, on_bad)


def local_workers(cfg: LocalConfig, device: str) -> int:
    """Local processes of the local stage: ``cfg.workers``; none for a GPU DELF (CUDA does not survive a fork)."""
    return 0 if cfg.backend == "delf" and device == "cuda" else cfg.workers
