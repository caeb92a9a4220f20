"""The labelled training images of a dataset's train split (or of a cleaned manifest).

Images the manifest has no size for (a dataset read straight from disk, not ingested) are decoded once before
training, in ``workers`` processes: an undecodable one is left out before the epoch plan is made (so the run equals
one without it) and returned as a :class:`~landmark.data.bad_images.BadImage` record; the trainings bound their
share with ``train.max_bad_share``. Ingested rows were decoded at ingestion.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from landmark.config import Config
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
from landmark.training.loop import TrainItem

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingSet:
    """The labelled training images: items with class indices, the landmark ids those indices stand for, how
    many classes were too small, and the images left out because they cannot be decoded."""

    items: list[TrainItem]
    labels: list[int]
    dropped_classes: int
    bad_images: list[BadImage]
    candidates: int  # ok labelled rows looked at (bad ones included): the base of the bad share

    def counts(self) -> dict[str, object]:
        """What a model's metrics.json records of its training set: classes, images, left-out images by reason."""
        return {
            "classes": len(self.labels),
            "images": len(self.items),
            "bad_images": reason_counts(self.bad_images),
        }

    def record_files(self, record_in: Path) -> list[Path]:
        """The quarantine record :func:`checked_training_set` wrote in ``record_in`` (none when nothing was left
        out), for the model directory."""
        return [record_in / QUARANTINE_FILE] if self.bad_images else []


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


def checked_training_set(
    cfg: Config,
    data_dir: Path,
    manifest: Path | None,
    fmt: str,
    min_images: int,
    stage: str,
    *,
    record_in: Path | None,
    workers: int = 0,
) -> TrainingSet:
    """:func:`training_set` for a training stage: the images left out are recorded in
    ``record_in/quarantined.json`` (None: not written, e.g. by a torchrun rank other than 0) and logged, then more
    than ``train.max_bad_share`` of them, or fewer than 2 classes, stop the stage before it trains.

    Raises:
        TooManyBadImagesError: too many undecodable images (the record is written first).
        InputError: fewer than 2 classes with ``min_images`` images.
    """
    data = training_set(cfg, data_dir, manifest, fmt, min_images, stage, workers=workers)
    bad = data.bad_images
    if record_in is not None:
        write_quarantine(record_in, bad, stage=stage, images=data.candidates)
    if bad:
        where = f", listed in {record_in / QUARANTINE_FILE}" if record_in is not None else ""
        logger.warning("%s: %d undecodable images left out %s%s", stage, len(bad), reason_counts(bad), where)
    check_bad_share(stage, "train.max_bad_share", cfg.train.max_bad_share, bad, data.candidates)
    require_classes(data, min_images, stage)
    return data
