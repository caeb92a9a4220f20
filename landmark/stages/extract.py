"""Stage ``extract``: global descriptors of a dataset's splits into feature stores."""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from landmark.config import Config, config_to_dict, resolve_device
from landmark.data.groundtruth import LandmarkDataset

BBox = tuple[float, float, float, float]
logger = logging.getLogger(__name__)


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
    from landmark.features.store import read_meta

    if not (store / "store.json").is_file():
        return False
    stored = {k: v for k, v in read_meta(store).items() if k not in ("dim", "dtype")}
    return stored != json.loads(json.dumps(dict(meta)))


def extract(
    cfg: Config,
    data_dir: Path,
    out_dir: Path,
    *,
    splits: Sequence[str] = (),
    fmt: str = "auto",
    model_dir: Path | None = None,
    progress: bool = True,
) -> dict[str, int]:
    """Global descriptors of every usable image of each split into ``out_dir/<split>/`` (resumable).

    Test-split queries with a bounding box are cropped to it first (Revisited Oxford/Paris protocol).
    ``model_dir`` selects a trained model; without it the off-the-shelf backbone + GeM is used.
    Incremental: only images not yet in a split's store are extracted (catalog ids are bound to their content:
    ingestion never gives an id new bytes); a store written by another model or setting is replaced.

    Returns:
        split -> number of images newly extracted.
    """
    import torch

    from landmark.data.datasets import open_dataset
    from landmark.features.global_desc import ImageItem, extract_to_store
    from landmark.models.model_dir import descriptor_model

    dataset = open_dataset(cfg, Path(data_dir), fmt)
    chosen = list(splits) or list(dataset.splits)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model, identity = descriptor_model(cfg.model, model_dir)
    meta = {**identity, "extract": config_to_dict(cfg.extract)}
    added: dict[str, int] = {}
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
        added[split] = extract_to_store(
            model, items, cfg.extract, device, store, meta=meta, progress=progress
        )
    return added
