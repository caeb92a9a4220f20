"""Stage ``extract``: global descriptors of a dataset's splits into feature stores."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from landmark.config import Config, config_to_dict, resolve_device
from landmark.data.groundtruth import LandmarkDataset

BBox = tuple[float, float, float, float]


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

    Returns:
        split -> number of images newly extracted.
    """
    import torch

    from landmark.data.formats import read_dataset
    from landmark.features.global_desc import ImageItem, extract_to_store
    from landmark.models.model_dir import descriptor_model

    dataset = read_dataset(Path(data_dir), fmt)  # type: ignore[arg-type]
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
        added[split] = extract_to_store(
            model, items, cfg.extract, device, Path(out_dir) / split, meta=meta, progress=progress
        )
    return added
