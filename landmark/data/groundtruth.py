"""The in-memory dataset every format reads into and writes from: manifests per split plus ground truth."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from landmark.data.manifest import STATUS_OK, resolve_uri
from landmark.errors import InputError, LandmarkError, NotFoundError

DATASET_SPLITS = ("train", "index", "test")


class DatasetFormatError(LandmarkError, ValueError):
    """A dataset file that does not follow its format (the message names the file and what is wrong)."""


def _id_tuple(values: Iterable[str], what: str) -> tuple[str, ...]:
    ids = tuple(values)
    for value in ids:
        if not isinstance(value, str):
            raise InputError(f"{what} must hold string image ids, got {value!r} ({type(value).__name__})")
    return ids


@dataclass(frozen=True)
class QueryTruth:
    """Ground truth of one revisited-Oxford/Paris-style query, by image id.

    Attributes:
        query_id: the query image.
        easy: index images that are easy positives.
        hard: index images that are hard positives.
        junk: index images to ignore when ranking.
        bbox: (x0, y0, x1, y1) query region in pixels, or None for the whole image.
    """

    query_id: str
    easy: tuple[str, ...]
    hard: tuple[str, ...]
    junk: tuple[str, ...]
    bbox: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.query_id, str):
            raise InputError(f"query_id must be a string, got {self.query_id!r}")
        # Accept lists (and arrays of str) for convenience; store tuples so the object stays hashable.
        for name in ("easy", "hard", "junk"):
            object.__setattr__(self, name, _id_tuple(getattr(self, name), f"QueryTruth.{name}"))
        if self.bbox is not None:
            box = tuple(float(v) for v in self.bbox)
            if (
                len(box) != 4
                or not all(math.isfinite(v) for v in box)
                or box[2] <= box[0]
                or box[3] <= box[1]
            ):
                raise InputError(
                    f"query {self.query_id!r}: bbox must be 4 finite numbers with x1 > x0 and y1 > y0, "
                    f"got {self.bbox!r}"
                )
            object.__setattr__(self, "bbox", box)

    @property
    def positives(self) -> tuple[str, ...]:
        """Easy then hard positives (the "medium" protocol's positives)."""
        return self.easy + self.hard


@dataclass(frozen=True, eq=False)
class LandmarkDataset:
    """A dataset on disk: manifests per split and whatever ground truth its format carries.

    Attributes:
        root: directory that relative manifest uris are resolved against.
        manifests: split name ("train", "index", "test") -> manifest.
        retrieval: revisited-Oxford/Paris-style query ground truth (ids, not indices).
        retrieval_solution: GLDv2 test id -> relevant index ids.
        recognition_solution: GLDv2 test id -> landmark ids (empty tuple = not a landmark).
        usage: GLDv2 test id -> "Public", "Private" or "Ignored" (from the retrieval solution; ids only in the
            recognition solution take their Usage from there).
        recognition_usage: GLDv2 test id -> Usage as given by the recognition solution. It can differ from
            ``usage``: GLDv2 marks non-landmark test images "Ignored" for retrieval but scores them (as false
            positives) in recognition.
        label_names: landmark id -> name (when the format has names).
        issues: problems met while reading files that are not manifest rows (e.g. skipped solution lines).
    """

    root: Path
    manifests: dict[str, pd.DataFrame]
    retrieval: tuple[QueryTruth, ...] = ()
    retrieval_solution: dict[str, tuple[str, ...]] = field(default_factory=dict)
    recognition_solution: dict[str, tuple[int, ...]] = field(default_factory=dict)
    usage: dict[str, str] = field(default_factory=dict)
    recognition_usage: dict[str, str] = field(default_factory=dict)
    label_names: dict[int, str] = field(default_factory=dict)
    issues: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        object.__setattr__(self, "retrieval", tuple(self.retrieval))

    @property
    def splits(self) -> tuple[str, ...]:
        """Split names present, in insertion order."""
        return tuple(self.manifests)

    def manifest(self, split: str) -> pd.DataFrame:
        """The manifest of one split (all rows, quarantined included).

        Raises:
            KeyError: the dataset has no such split (the message lists the splits it has).
        """
        if split not in self.manifests:
            raise NotFoundError(f"dataset at {self.root} has no split {split!r}; it has {list(self.manifests)}")
        return self.manifests[split]

    def ok_ids(self, split: str) -> tuple[str, ...]:
        """Ids of the usable (status "ok") images of a split, in manifest order."""
        frame = self.manifest(split)
        return tuple(frame.loc[frame["status"] == STATUS_OK, "image_id"])

    def image_path(self, split: str, image_id: str) -> Path:
        """Local path of an ok image: its manifest uri resolved against ``root``.

        Raises:
            KeyError: no ok row with that id in the split.
            ValueError: the uri is not a local path (``s3://``).
        """
        frame = self.manifest(split)
        match = frame.loc[(frame["image_id"] == image_id) & (frame["status"] == STATUS_OK), "uri"]
        if match.empty:
            raise NotFoundError(f"no usable image {image_id!r} in split {split!r} of {self.root}")
        return resolve_uri(self.root, str(match.iloc[0]))

    def image_paths(self, split: str) -> dict[str, Path]:
        """image_id -> local path for every ok row of a split."""
        frame = self.manifest(split)
        ok = frame[frame["status"] == STATUS_OK]
        return {
            str(i): resolve_uri(self.root, str(u)) for i, u in zip(ok["image_id"], ok["uri"], strict=True)
        }

    def query(self, query_id: str) -> QueryTruth:
        """The retrieval ground truth of one query.

        Raises:
            KeyError: no query with that id.
        """
        for truth in self.retrieval:
            if truth.query_id == query_id:
                return truth
        raise NotFoundError(f"no retrieval ground truth for query {query_id!r}")
