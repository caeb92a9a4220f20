"""Stage ``train``: fine-tune the global descriptor model on the (cleaned) train split.

Images the manifest has no size for (a dataset read straight from disk, not ingested) are decoded once before
training, in ``train.workers`` processes: an undecodable one is left out before the epoch plan is made (so the run
equals one without it), recorded in ``quarantined.json`` in the work and model directories, and counted; more than
``train.max_bad_share`` of them stops training before it starts. Ingested rows were decoded at ingestion.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from landmark.config import Config, config_to_dict, resolve_device
from landmark.data.bad_images import (
    QUARANTINE_FILE,
    BadImage,
    check_bad_share,
    reason_counts,
    write_quarantine,
)
from landmark.data.datasets import open_dataset
from landmark.data.groundtruth import LandmarkDataset
from landmark.data.images import ImageDecodeError, decode_image
from landmark.data.manifest import read_manifest, resolve_uri
from landmark.errors import InputError
from landmark.platform.parallel import parallel_map

if TYPE_CHECKING:
    from landmark.training.loop import TrainItem

logger = logging.getLogger(__name__)


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
    bad_images: tuple[BadImage, ...] = ()  # left out as undecodable (the model's quarantined.json)


@dataclass(frozen=True)
class TrainingSet:
    """The labelled training images: items with class indices, the landmark ids those indices stand for, how
    many classes were too small, and the images left out because they cannot be decoded."""

    items: list[TrainItem]
    labels: list[int]
    dropped_classes: int
    bad_images: list[BadImage]
    candidates: int  # ok labelled rows looked at (bad ones included): the base of the bad share


def label_set(manifest: pd.DataFrame, min_images: int) -> tuple[pd.DataFrame, list[int], int]:
    """Usable rows (status ok, a landmark label, classes with >= ``min_images`` images), the sorted landmark ids
    that become class indices, and how many classes were dropped for having too few images."""
    rows = manifest[(manifest["status"] == "ok") & (manifest["landmark_id"] >= 0)]
    counts = rows["landmark_id"].value_counts()
    keep = counts[counts >= min_images].index
    kept = rows[rows["landmark_id"].isin(keep)]
    return kept, sorted(int(x) for x in keep), int((counts < min_images).sum())


def decoded_size(path: Path) -> tuple[int, int] | ImageDecodeError:
    """(width, height) of an image after EXIF orientation, from decoding it completely, or the decode error
    (returned, not raised: module level and picklable for a process pool)."""
    try:
        image = decode_image(path)
    except ImageDecodeError as exc:
        return exc
    return int(image.shape[1]), int(image.shape[0])


def screen_rows(
    rows: pd.DataFrame, root: Path, workers: int, split: str = "train"
) -> tuple[pd.DataFrame, list[BadImage]]:
    """Decode the rows without a recorded size (in ``workers`` processes) and fill in their sizes; rows that do
    not decode are removed and returned as :class:`BadImage` records.

    Args:
        rows: manifest rows (image_id, uri, width, height).
        root: what relative uris resolve against.
        workers: decoding processes (0 = this process).
        split: the split named in the records.
    """
    rows = rows.copy()
    unknown = rows.index[(rows["width"] <= 0) | (rows["height"] <= 0)]
    paths = [resolve_uri(root, str(rows.at[i, "uri"])) for i in unknown]
    bad: list[BadImage] = []
    bad_rows, sizes = [], {}
    results = parallel_map(
        decoded_size, paths, workers=workers, desc="decode check", progress=False, chunksize=16
    )
    for index, result in zip(unknown, results, strict=True):
        if isinstance(result, ImageDecodeError):
            bad.append(BadImage.from_error(str(rows.at[index, "image_id"]), split, result))
            bad_rows.append(index)
        else:
            sizes[index] = result
    if sizes:
        columns = ["width", "height"]
        known = pd.DataFrame(list(sizes.values()), index=pd.Index(list(sizes)), columns=columns)
        rows.loc[known.index, columns] = known.astype(rows[columns].dtypes.to_dict())
    return rows.drop(index=bad_rows), bad


def training_set(
    cfg: Config, data_dir: Path, manifest: Path | None, fmt: str, min_images: int, what: str, *, workers: int
) -> TrainingSet:
    """The labelled training images of ``data_dir``'s train split (or of a cleaned ``manifest``), undecodable
    ones left out (see the module docstring); :func:`require_classes` checks there is something to train on."""
    from landmark.training.loop import TrainItem

    dataset: LandmarkDataset = open_dataset(cfg, Path(data_dir), fmt)
    frame = read_manifest(manifest) if manifest is not None else dataset.manifest("train")
    candidates = frame[(frame["status"] == "ok") & (frame["landmark_id"] >= 0)]
    screened, bad = screen_rows(candidates, dataset.root, workers)
    rows, labels, dropped = label_set(screened, min_images)
    index = {landmark: i for i, landmark in enumerate(labels)}
    items = [
        TrainItem(resolve_uri(dataset.root, str(uri)), index[int(landmark)], int(width), int(height))
        for uri, landmark, width, height in zip(
            rows["uri"], rows["landmark_id"], rows["width"], rows["height"], strict=True
        )
    ]
    return TrainingSet(items, labels, dropped, bad, len(candidates))


def require_classes(data: TrainingSet, min_images: int, what: str) -> None:
    """Raise ValueError (``what`` names the training) unless at least 2 classes have ``min_images`` images."""
    if len(data.labels) < 2:
        raise InputError(
            f"{what} needs at least 2 classes with >= {min_images} images; found {len(data.labels)}"
        )


def training_items(
    cfg: Config,
    data_dir: Path,
    manifest: Path | None,
    fmt: str,
    min_images: int,
    what: str,
    *,
    workers: int = 0,
) -> tuple[list[TrainItem], list[int], int]:
    """:func:`training_set` as (items, landmark ids of the class indices, classes too small), for trainings
    that keep no record of the images left out (logged); more than ``train.max_bad_share`` of them fails.

    Raises:
        ValueError: fewer than 2 classes with ``min_images`` images.
        TooManyBadImagesError: too many undecodable images.
    """
    data = training_set(cfg, data_dir, manifest, fmt, min_images, what, workers=workers)
    if data.bad_images:
        logger.warning(
            "%s: %d undecodable images left out %s",
            what,
            len(data.bad_images),
            reason_counts(data.bad_images),
        )
    check_bad_share(what, "train.max_bad_share", cfg.train.max_bad_share, data.bad_images, data.candidates)
    require_classes(data, min_images, what)
    return data.items, data.labels, data.dropped_classes


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
    killed run from its last checkpoint. Undecodable images are left out and recorded (module docstring).

    Raises:
        TooManyBadImagesError: more than ``train.max_bad_share`` of the labelled images cannot be decoded
            (checked before training; the record is in the work directory).
    """
    from landmark.models.model_dir import save_model_dir
    from landmark.training.loop import ensemble_weights, train_global_model, training_metrics
    from landmark.training.trainer import LOG, launcher_rank

    data = training_set(
        cfg, data_dir, manifest, fmt, cfg.train.min_images_per_class, "training", workers=cfg.train.workers
    )
    items, labels, dropped, bad = data.items, data.labels, data.dropped_classes, data.bad_images
    out_dir = Path(out_dir)
    work = Path(work_dir) if work_dir is not None else out_dir.with_name(out_dir.name + ".work")
    is_main = launcher_rank() == 0  # torchrun's rank: the process group lives only while training
    if is_main:
        write_quarantine(work, bad, stage="train", images=data.candidates)
    if bad:
        logger.warning(
            "training: %d undecodable images left out %s, listed in %s",
            len(bad), reason_counts(bad), work / QUARANTINE_FILE,
        )  # fmt: skip
    check_bad_share("train", "train.max_bad_share", cfg.train.max_bad_share, bad, data.candidates)
    require_classes(data, cfg.train.min_images_per_class, "training")
    result = train_global_model(
        items, len(labels), cfg.model, cfg.train, work,
        seed=cfg.seed, device=resolve_device(cfg.device), resume=resume, progress=progress,
    )  # fmt: skip
    if is_main:
        ensemble_weights(result, cfg.train.wise_alpha)  # WiSE-FT: a step of its own after training
        extra = {"classes": len(labels), "images": len(items), "bad_images": reason_counts(bad)}
        save_model_dir(
            out_dir, result.model, cfg.model, labels,
            metrics={"train": training_metrics(result, extra)},
            extra_config={"train": config_to_dict(cfg.train), "seed": cfg.seed, "data": str(data_dir)},
            head=result.head, extra_files=[work / LOG, *([work / QUARANTINE_FILE] if bad else [])],
        )  # fmt: skip
    return TrainSummary(
        model_dir=out_dir if is_main else None,
        classes=len(labels),
        images=len(items),
        dropped_classes=dropped,
        steps=result.steps,
        final_loss=result.final_loss,
        final_accuracy=result.final_accuracy,
        seconds=result.seconds,
        bad_images=tuple(bad),
    )
