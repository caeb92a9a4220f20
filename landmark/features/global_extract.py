"""Global descriptors of a dataset's splits into feature stores: the plan (chunks of the images not yet stored),
one chunk's work (describe and write one shard, on any worker), and each split's record of undecodable images.

The ``extract`` stage runs :func:`extract_dataset`; so does every evaluation that describes a benchmark.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from landmark.config import Config, ExtractConfig, ModelConfig, config_to_dict, resolve_device
from landmark.data.bad_images import (
    QUARANTINE_FILE,
    BadImage,
    check_bad_share,
    merge_bad_images,
    read_quarantine,
    reason_counts,
    write_quarantine,
)
from landmark.data.datasets import open_dataset
from landmark.data.groundtruth import LandmarkDataset
from landmark.data.images import ImageDecodeError
from landmark.features.global_desc import ImageItem, iter_chunk_descriptors, write_chunks
from landmark.features.store import ensure_meta, next_shard_number, read_meta, stored_ids
from landmark.models.model_dir import descriptor_model
from landmark.platform.parallel import chunked, map_chunks
from landmark.platform.threads import torch_threads

BBox = tuple[float, float, float, float]
logger = logging.getLogger(__name__)
# extraction settings that do not change a descriptor: a store written with other values is still current
_NOT_IN_META = ("max_bad_share",)


class ExtractSummary(dict[str, int]):
    """Split -> number of images newly extracted (a dict, as before), with the images skipped as undecodable.

    Attributes:
        bad_images: split -> the images of the split that could not be decoded (recorded in the split's
            ``quarantined.json``), earlier runs' records of images not tried again included.
    """

    def __init__(self) -> None:
        super().__init__()
        self.bad_images: dict[str, list[BadImage]] = {}

    def bad_counts(self) -> dict[str, int]:
        """Split -> number of skipped images."""
        return {split: len(bad) for split, bad in self.bad_images.items()}


def _manifest_bboxes(dataset: LandmarkDataset, split: str) -> dict[str, BBox]:
    frame = dataset.manifest(split)
    cols = ["bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"]
    boxes: dict[str, BBox] = {}
    for row in frame[["image_id", *cols]].itertuples(index=False):
        values = tuple(float(v) for v in row[1:])
        if all(math.isfinite(v) for v in values):
            boxes[str(row[0])] = (values[0], values[1], values[2], values[3])
    return boxes


def query_bboxes(dataset: LandmarkDataset, split: str) -> dict[str, BBox]:
    """Crop boxes of a split's images: the manifest's bbox columns, then the retrieval ground truth's boxes."""
    boxes = _manifest_bboxes(dataset, split)
    if split == "test":
        boxes.update({q.query_id: q.bbox for q in dataset.retrieval if q.bbox is not None})
    return boxes


def stale_store(store: Path, meta: Mapping[str, object]) -> bool:
    """True when ``store`` holds descriptors written with other metadata (model, weights or extract settings)
    than ``meta``: they are not comparable with new ones, so the split is extracted anew."""
    if not (store / "store.json").is_file():
        return False
    stored = {k: v for k, v in read_meta(store).items() if k not in ("dim", "dtype")}
    return stored != json.loads(json.dumps(dict(meta)))


def store_meta(identity: Mapping[str, object], cfg: Config) -> dict[str, object]:
    """What a split's store records: the model's identity and the extraction settings that shape descriptors."""
    settings = {k: v for k, v in config_to_dict(cfg.extract).items() if k not in _NOT_IN_META}
    return {**identity, "extract": settings}


@dataclass(frozen=True)
class GlobalChunk:
    """One chunk of the extract stage: describe ``items`` and write them as shard ``number`` of ``store``.

    Carries everything a Dask worker needs to load the same model (``model`` settings or ``model_dir``, which
    must be reachable from the worker: a shared filesystem or the image cache of the S3 store).
    """

    store: str
    number: int
    items: tuple[ImageItem, ...]
    extract: ExtractConfig
    model: ModelConfig
    model_dir: str | None
    device: str
    seed: int

    @property
    def store_name(self) -> str:
        """The store's directory name (the split), for naming the chunk's task run."""
        return Path(self.store).name


@dataclass(frozen=True)
class GlobalChunkResult:
    """What one chunk stored: rows written, and the images it could not decode (id, error)."""

    number: int
    stored: int
    bad: tuple[tuple[str, ImageDecodeError], ...]


@dataclass(frozen=True)
class SplitPlan:
    """The extract work of one split: its usable items, the chunks of the missing ones, earlier skip records."""

    split: str
    store: Path
    items: tuple[ImageItem, ...]
    chunks: tuple[GlobalChunk, ...]
    earlier: tuple[BadImage, ...]


@functools.lru_cache(maxsize=2)
def _chunk_model(model_cfg: ModelConfig, model_dir: str | None, seed: int) -> torch.nn.Module:
    """The descriptor model of a worker process, loaded once per model (not per chunk)."""
    torch.manual_seed(seed)
    return descriptor_model(model_cfg, Path(model_dir) if model_dir else None)[0]


def extract_global_chunk(chunk: GlobalChunk) -> GlobalChunkResult:
    """Describe one chunk's images and write them as one complete store shard (atomic; idempotent, so a chunk
    whose worker died is run again elsewhere with the same result). Runs on a Dask worker or in this process.
    """
    model = _chunk_model(chunk.model, chunk.model_dir, chunk.seed)
    bad: list[tuple[str, ImageDecodeError]] = []
    # a Dask worker is a daemon process and may not start DataLoader processes: it decodes in-line
    cfg = dataclasses.replace(chunk.extract, workers=0)
    described = iter_chunk_descriptors(
        model, chunk.items, cfg, resolve_device(chunk.device), max(len(chunk.items), 1), progress=False,
        on_bad=lambda item, error: bad.append((item.image_id, error)),
    )  # fmt: skip
    with torch_threads():
        stored = sum(write_chunks(described, Path(chunk.store), chunk.number))
    return GlobalChunkResult(chunk.number, stored, tuple(bad))


def split_items(dataset: LandmarkDataset, split: str) -> list[ImageItem]:
    """The ok images of ``split`` to describe, with their crop boxes and known sizes."""
    frame = dataset.manifest(split)
    ok = frame[frame["status"] == "ok"]
    boxes = query_bboxes(dataset, split)
    paths = dataset.image_paths(split)
    return [
        ImageItem(image_id, paths[image_id], boxes.get(image_id), width, height)
        for image_id, width, height in zip(
            ok["image_id"].astype(str), ok["width"].astype(int), ok["height"].astype(int), strict=True
        )
    ]


def plan_extract(
    cfg: Config,
    data_dir: Path,
    out_dir: Path,
    *,
    splits: Sequence[str] = (),
    fmt: str = "auto",
    model_dir: Path | None = None,
) -> list[SplitPlan]:
    """Plan the extract stage: per split, the chunks of ``parallel.chunk_images`` images not yet stored, numbered
    after the store's complete shards. A store written by another model or setting is removed here (it is
    extracted anew); the model is loaded for its identity and dimension.
    """
    dataset = open_dataset(cfg, Path(data_dir), fmt)
    torch.manual_seed(cfg.seed)
    model, identity = descriptor_model(cfg.model, model_dir)
    meta = store_meta(identity, cfg)
    plans = []
    for split in list(splits) or list(dataset.splits):
        items = split_items(dataset, split)
        store = Path(out_dir) / split
        if stale_store(store, meta):
            logger.info("%s holds descriptors of another model or setting: extracting %s anew", store, split)
            shutil.rmtree(store)
        ensure_meta(store, int(getattr(model, "dim")), "float32", meta)  # noqa: B009
        done = set(stored_ids(store))
        todo = [item for item in items if item.image_id not in done]
        first = next_shard_number(store)
        chunks = tuple(
            GlobalChunk(str(store), first + k, tuple(part), cfg.extract, cfg.model,
                        str(model_dir) if model_dir else None, cfg.device, cfg.seed)
            for k, part in enumerate(chunked(todo, cfg.parallel.chunk_images))
        )  # fmt: skip
        plans.append(SplitPlan(split, store, tuple(items), chunks, tuple(read_quarantine(store))))
    return plans


def finish_split(
    cfg: Config, plan: SplitPlan, results: Sequence[GlobalChunkResult]
) -> tuple[int, list[BadImage]]:
    """Record a split's undecodable images (``quarantined.json``) and bound their share.

    Returns:
        How many descriptors were added, and every skipped image of the split (this run's and earlier runs'
        records of images not tried again).

    Raises:
        TooManyBadImagesError: more than ``extract.max_bad_share`` of the split's images cannot be decoded (the
            good ones are stored and the bad ones recorded first).
    """
    new = []
    by_id = {item.image_id: item for chunk in plan.chunks for item in chunk.items}
    for result in results:
        for image_id, error in result.bad:
            new.append(BadImage.from_error(image_id, plan.split, error))
            logger.info("extract %s: skipped %s: %s", plan.split, by_id[image_id].image_id, error)
    wanted = {item.image_id for item in plan.items}
    bad = merge_bad_images(list(plan.earlier), new, set(stored_ids(plan.store)), wanted)
    write_quarantine(plan.store, bad, stage="extract", images=len(plan.items))
    check_bad_share(
        f"extract {plan.split}", "extract.max_bad_share", cfg.extract.max_bad_share, bad, len(plan.items)
    )
    if bad:
        logger.warning(
            "extract %s: %d images skipped as undecodable %s, listed in %s",
            plan.split, len(bad), reason_counts(bad), plan.store / QUARANTINE_FILE,
        )  # fmt: skip
    return sum(r.stored for r in results), bad


def extract_dataset(
    cfg: Config,
    data_dir: Path,
    out_dir: Path,
    *,
    splits: Sequence[str] = (),
    fmt: str = "auto",
    model_dir: Path | None = None,
    progress: bool = True,
) -> ExtractSummary:
    """Global descriptors of every usable image of each split into ``out_dir/<split>/`` (resumable).

    Test-split queries with a bounding box are cropped to it first (Revisited Oxford/Paris protocol).
    ``model_dir`` selects a trained model; without it the off-the-shelf backbone + GeM is used.
    Incremental: only images not yet in a split's store are extracted (catalog ids are bound to their content:
    ingestion never gives an id new bytes); a store written by another model or setting is replaced.
    The missing images are cut into chunks of ``parallel.chunk_images``, each described with one CPU thread and
    written as its own store shard: in ``extract.workers`` local processes (``parallel.backend: local``; in this
    process on CUDA, with one worker, or when all splits' missing images fit in one chunk) or one Dask task per
    chunk (``dask``), with bit-identical stores.
    An image that cannot be decoded is skipped and recorded in ``out_dir/<split>/quarantined.json`` with its
    reason code (:mod:`landmark.data.bad_images`); the next run tries it again.

    Returns:
        split -> number of images newly extracted, with the skipped images in ``bad_images``.

    Raises:
        TooManyBadImagesError: a split with more than ``extract.max_bad_share`` undecodable images (every
            split's good images are stored, and the records of the splits up to it).
    """
    plans = plan_extract(cfg, data_dir, out_dir, splits=splits, fmt=fmt, model_dir=model_dir)
    # CUDA does not survive a fork: on the GPU the chunks run one after the other in this process
    workers = 0 if resolve_device(cfg.device).startswith("cuda") else cfg.extract.workers
    # every split's chunks in one map: one pool of worker processes (each imports torch and loads the model)
    # for the whole stage, not one per split; work that fits in one chunk runs in this process
    chunks = [chunk for plan in plans for chunk in plan.chunks]
    results = iter(
        list(
            map_chunks(
                extract_global_chunk, chunks, cfg.parallel, workers=workers, desc="extract", progress=progress,
                sizes=[len(c.items) for c in chunks],
            )
        )
    )  # fmt: skip
    summary = ExtractSummary()
    for plan in plans:  # every split's shards are written before a split's bad share can stop the stage
        done = [next(results) for _ in plan.chunks]
        summary[plan.split], summary.bad_images[plan.split] = finish_split(cfg, plan, done)
    return summary
