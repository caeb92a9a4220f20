"""Stage ``local``: local features (SIFT or DELF, ``local.backend``) of a split's usable images into a local
feature store at ``<out>/<split>/`` (resumable: ids already in complete shards are skipped). An image that cannot
be decoded is skipped and recorded in ``<out>/<split>/quarantined.json`` (:mod:`landmark.data.bad_images`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from landmark.config import Config, ParallelConfig, resolve_device
from landmark.data.bad_images import (
    BadImage,
    check_bad_share,
    merge_bad_images,
    read_quarantine,
    reason_counts,
    write_quarantine,
)
from landmark.data.datasets import open_dataset
from landmark.data.images import ImageDecodeError
from landmark.features.local_extract import (
    LocalChunkResult,
    LocalItem,
    LocalPlan,
    collect_local_results,
    extract_local_chunk,
    local_workers,
    plan_local_extraction,
)
from landmark.features.local_store import LocalFeatureReader, stored_local_ids
from landmark.platform.parallel import map_chunks

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalSummary:
    """What one run did: images of the split, how many were already stored, newly extracted, time taken, and
    the split's images skipped as undecodable (earlier runs' records of images not tried again included)."""

    store: Path
    images: int
    already_stored: int
    extracted: int
    mean_keypoints: float  # over the newly extracted images (0 when none)
    bytes_per_image: float  # whole store on disk
    seconds: float
    bad_images: tuple[BadImage, ...] = ()
    quarantine: Path | None = None  # the record of ``bad_images``, None when there are none


@dataclass(frozen=True)
class LocalSplitPlan:
    """The local stage's work on one split: its images, store, chunks and earlier skip records."""

    split: str
    store: Path
    paths: dict[str, Path]
    work: LocalPlan
    earlier: tuple[BadImage, ...]
    parallel: ParallelConfig  # where the chunks run (chunk size included)
    workers: int  # local processes
    started: float  # time.perf_counter() when planning began


def plan_local(
    cfg: Config,
    data_dir: Path,
    out_dir: Path,
    *,
    split: str = "train",
    fmt: str = "auto",
    shard_size: int | None = None,
    limit: int | None = None,
) -> LocalSplitPlan:
    """Plan the local stage on ``split``: chunks of the ok images not yet in ``out_dir/<split>`` (see
    :func:`local` for the arguments)."""
    started = time.perf_counter()
    dataset = open_dataset(cfg, Path(data_dir), fmt)
    paths = {image_id: Path(path) for image_id, path in dataset.image_paths(split).items()}
    store = Path(out_dir) / split
    parallel = cfg.parallel if shard_size is None else replace(cfg.parallel, chunk_images=shard_size)
    device = resolve_device(cfg.device)
    work = plan_local_extraction(
        [LocalItem(image_id, path) for image_id, path in paths.items()], store, cfg.local, device=device,
        chunk_images=parallel.chunk_images, limit=limit,
    )  # fmt: skip
    earlier = tuple(read_quarantine(store))
    return LocalSplitPlan(
        split, store, paths, work, earlier, parallel, local_workers(cfg.local, device), started
    )


def finish_local(cfg: Config, plan: LocalSplitPlan, results: Iterable[LocalChunkResult]) -> LocalSummary:
    """Collect a split's chunk results: record its undecodable images (``quarantined.json``), bound their share.

    Raises:
        TooManyBadImagesError: more than ``local.max_bad_share`` of the split's images cannot be decoded (the
            good ones are stored and the bad ones recorded first).
    """
    split, store = plan.split, plan.store
    new: list[BadImage] = []

    def skip(item: LocalItem, error: ImageDecodeError) -> None:
        new.append(BadImage.from_error(item.key, split, error))
        logger.info("local %s: skipped %s: %s", split, item.key, error)

    run = collect_local_results(plan.work, results, skip)
    stored = stored_local_ids(store) if store.exists() else []
    bad = merge_bad_images(list(plan.earlier), new, set(stored), set(plan.paths))
    quarantine = write_quarantine(store, bad, stage="local", images=len(plan.paths))
    if bad:
        logger.warning(
            "local %s: %d images skipped as undecodable %s, listed in %s",
            split, len(bad), reason_counts(bad), quarantine,
        )  # fmt: skip
    check_bad_share(f"local {split}", "local.max_bad_share", cfg.local.max_bad_share, bad, len(plan.paths))
    return LocalSummary(
        store=store,
        images=run.items,
        already_stored=run.already_stored,
        extracted=run.extracted,
        mean_keypoints=run.keypoints / run.extracted if run.extracted else 0.0,
        bytes_per_image=LocalFeatureReader(store).bytes_per_image() if stored else 0.0,
        seconds=time.perf_counter() - plan.started,
        bad_images=tuple(bad),
        quarantine=quarantine,
    )


def local(
    cfg: Config,
    data_dir: Path,
    out_dir: Path,
    *,
    split: str = "train",
    fmt: str = "auto",
    shard_size: int | None = None,
    limit: int | None = None,
    progress: bool = True,
) -> LocalSummary:
    """Extract local features of every ok image of ``split`` not yet stored in ``out_dir/<split>``.

    Args:
        cfg: ``local`` (backend, model, image size, features, workers, max_bad_share), ``parallel`` (where the
            chunks run) and ``device`` (torch DELF).
        data_dir: dataset root (any supported format).
        out_dir: local feature root; the store is ``out_dir/<split>``.
        split: which split.
        fmt: dataset format or "auto".
        shard_size: images per chunk and store shard (default ``parallel.chunk_images``; a lost worker or a
            killed run costs at most one chunk's work).
        limit: extract at most this many missing images (e.g. a time-boxed run; the next run resumes).
        progress: show a progress bar.

    Raises:
        LocalStoreError: the store was written with other settings.
        KeyError: no such split.
        TooManyBadImagesError: more than ``local.max_bad_share`` of the split's images cannot be decoded (the
            good ones are stored and the bad ones recorded first).
    """
    plan = plan_local(cfg, data_dir, out_dir, split=split, fmt=fmt, shard_size=shard_size, limit=limit)
    results = map_chunks(
        extract_local_chunk, plan.work.chunks, plan.parallel, workers=plan.workers, desc=f"local {split}",
        progress=progress, sizes=plan.work.sizes,
    )  # fmt: skip
    return finish_local(cfg, plan, results)
