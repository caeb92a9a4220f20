"""Stage ``extract``: global descriptors of a dataset's splits into feature stores."""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from landmark.config import Config, config_to_dict, resolve_device
from landmark.data.bad_images import (
    QUARANTINE_FILE,
    BadImage,
    check_bad_share,
    merge_bad_images,
    read_quarantine,
    reason_counts,
    write_quarantine,
)
from landmark.data.groundtruth import LandmarkDataset
from landmark.data.images import ImageDecodeError
from landmark.features.global_desc import ImageItem, extract_to_store
from landmark.features.store import read_meta, stored_ids

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


def _extract_split(
    model: torch.nn.Module, items: Sequence[ImageItem], cfg: Config, device: str, store: Path,
    meta: Mapping[str, object], split: str, progress: bool,
) -> tuple[int, list[BadImage]]:  # fmt: skip
    """Extract one split's missing items into ``store``; record the undecodable ones and bound their share.

    Returns:
        How many descriptors were added, and every skipped image of the split (this run's and earlier runs'
        records of images not tried again).

    Raises:
        TooManyBadImagesError: more than ``extract.max_bad_share`` of the split's images cannot be decoded (the
            good ones are stored and the bad ones recorded first).
    """
    new: list[BadImage] = []

    def skip(item: ImageItem, error: ImageDecodeError) -> None:
        new.append(BadImage.from_error(item.image_id, split, error))
        logger.info("extract %s: skipped %s: %s", split, item.image_id, error)

    earlier = read_quarantine(store)
    added = extract_to_store(
        model, items, cfg.extract, device, store, meta=meta, progress=progress, on_bad=skip
    )
    wanted = {item.image_id for item in items}
    bad = merge_bad_images(earlier, new, set(stored_ids(store)), wanted)
    write_quarantine(store, bad, stage="extract", images=len(items))
    check_bad_share(f"extract {split}", "extract.max_bad_share", cfg.extract.max_bad_share, bad, len(items))
    return added, bad


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
    """Global descriptors of every usable image of each split into ``out_dir/<split>/`` (resumable).

    Test-split queries with a bounding box are cropped to it first (Revisited Oxford/Paris protocol).
    ``model_dir`` selects a trained model; without it the off-the-shelf backbone + GeM is used.
    Incremental: only images not yet in a split's store are extracted (catalog ids are bound to their content:
    ingestion never gives an id new bytes); a store written by another model or setting is replaced.
    An image that cannot be decoded is skipped and recorded in ``out_dir/<split>/quarantined.json`` with its
    reason code (:mod:`landmark.data.bad_images`); the next run tries it again.

    Returns:
        split -> number of images newly extracted, with the skipped images in ``bad_images``.

    Raises:
        TooManyBadImagesError: a split with more than ``extract.max_bad_share`` undecodable images (the splits
            before it and its good images are stored).
    """
    from landmark.data.datasets import open_dataset
    from landmark.models.model_dir import descriptor_model

    dataset = open_dataset(cfg, Path(data_dir), fmt)
    chosen = list(splits) or list(dataset.splits)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model, identity = descriptor_model(cfg.model, model_dir)
    meta = store_meta(identity, cfg)
    summary = ExtractSummary()
    for split in chosen:
        frame = dataset.manifest(split)
        ok = frame[frame["status"] == "ok"]
        boxes = query_bboxes(dataset, split)
        paths = dataset.image_paths(split)
        items = [
            ImageItem(image_id, paths[image_id], boxes.get(image_id), width, height)
            for image_id, width, height in zip(
                ok["image_id"].astype(str), ok["width"].astype(int), ok["height"].astype(int), strict=True
            )
        ]
        store = Path(out_dir) / split
        if stale_store(store, meta):
            logger.info("%s holds descriptors of another model or setting: extracting %s anew", store, split)
            shutil.rmtree(store)
        summary[split], summary.bad_images[split] = _extract_split(
            model, items, cfg, device, store, meta, split, progress
        )
        if summary.bad_images[split]:
            logger.warning(
                "extract %s: %d images skipped as undecodable %s, listed in %s",
                split, len(summary.bad_images[split]), reason_counts(summary.bad_images[split]),
                store / QUARANTINE_FILE,
            )  # fmt: skip
    return summary
