"""Stage ``train``: fine-tune the global descriptor model on the (cleaned) train split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from landmark.config import Config, config_to_dict, resolve_device
from landmark.data.groundtruth import LandmarkDataset

if TYPE_CHECKING:
    from landmark.training.loop import TrainItem


@dataclass(frozen=True)
class TrainSummary:
    """Where the model went and how training ended."""

    model_dir: Path | None  # None on non-zero ranks of a distributed run
    classes: int
    images: int
    dropped_classes: int
    steps: int
    final_loss: float
    final_accuracy: float
    seconds: float


def label_set(manifest: pd.DataFrame, min_images: int) -> tuple[pd.DataFrame, list[int], int]:
    """Usable rows (status ok, a landmark label, classes with >= ``min_images`` images), the sorted landmark ids
    that become class indices, and how many classes were dropped for having too few images."""
    rows = manifest[(manifest["status"] == "ok") & (manifest["landmark_id"] >= 0)]
    counts = rows["landmark_id"].value_counts()
    keep = counts[counts >= min_images].index
    kept = rows[rows["landmark_id"].isin(keep)]
    return kept, sorted(int(x) for x in keep), int((counts < min_images).sum())


def training_items(
    cfg: Config, data_dir: Path, manifest: Path | None, fmt: str, min_images: int, what: str
) -> tuple[list[TrainItem], list[int], int]:
    """The labelled training images of ``data_dir``'s train split (or of a cleaned ``manifest``): items with
    class indices, the landmark ids those indices stand for, and how many classes were too small.

    Raises:
        ValueError: fewer than 2 classes with ``min_images`` images (``what`` names the training in the message).
    """
    from landmark.data.datasets import open_dataset
    from landmark.data.images import read_image_size
    from landmark.data.manifest import read_manifest, resolve_uri
    from landmark.training.loop import TrainItem

    dataset: LandmarkDataset = open_dataset(cfg, Path(data_dir), fmt)
    frame = read_manifest(manifest) if manifest is not None else dataset.manifest("train")
    rows, labels, dropped = label_set(frame, min_images)
    if len(labels) < 2:
        raise ValueError(f"{what} needs at least 2 classes with >= {min_images} images; found {len(labels)}")
    index = {landmark: i for i, landmark in enumerate(labels)}
    items = []
    for image_id, uri, landmark, width, height in zip(
        rows["image_id"], rows["uri"], rows["landmark_id"], rows["width"], rows["height"], strict=True
    ):
        path = resolve_uri(dataset.root, str(uri))
        if width <= 0 or height <= 0:
            width, height = read_image_size(path, name=str(image_id))
        items.append(TrainItem(path, index[int(landmark)], int(width), int(height)))
    return items, labels, dropped


def train(
    cfg: Config,
    data_dir: Path,
    out_dir: Path,
    *,
    manifest: Path | None = None,
    work_dir: Path | None = None,
    resume: bool = False,
    fmt: str = "auto",
    progress: bool = True,
) -> TrainSummary:
    """Train on ``data_dir``'s train split (or the given cleaned ``manifest``) and write a model directory.

    Checkpoints and the per-step log go to ``work_dir`` (default: ``<out_dir>.work``); ``resume`` continues a
    killed run from its last checkpoint.
    """
    from landmark.models.model_dir import save_model_dir
    from landmark.training.loop import LOG, train_global_model, training_metrics

    items, labels, dropped = training_items(
        cfg, data_dir, manifest, fmt, cfg.train.min_images_per_class, "training"
    )
    out_dir = Path(out_dir)
    work = Path(work_dir) if work_dir is not None else out_dir.with_name(out_dir.name + ".work")
    result = train_global_model(
        items, len(labels), cfg.model, cfg.train, work,
        seed=cfg.seed, device=resolve_device(cfg.device), resume=resume, progress=progress,
    )  # fmt: skip
    import torch.distributed as dist

    is_main = not dist.is_initialized() or dist.get_rank() == 0
    if is_main:
        save_model_dir(
            out_dir, result.model, cfg.model, labels,
            metrics={"train": training_metrics(result, {"classes": len(labels), "images": len(items)})},
            extra_config={"train": config_to_dict(cfg.train), "seed": cfg.seed, "data": str(data_dir)},
            head=result.head, extra_files=[work / LOG],
        )  # fmt: skip
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    return TrainSummary(
        model_dir=out_dir if is_main else None,
        classes=len(labels),
        images=len(items),
        dropped_classes=dropped,
        steps=result.steps,
        final_loss=result.final_loss,
        final_accuracy=result.final_accuracy,
        seconds=result.seconds,
    )
