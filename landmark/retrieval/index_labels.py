"""Labels saved next to an index, so a registry version can answer "which landmark" on its own.

Written by the ``index`` stage into the index directory (and so published with it to the registry)::

    labels.json        {"format", "split", "labels"}: the manifest's landmark id of each indexed image, in the
                       order of ids.txt (-1 = unknown, e.g. GLDv2's unlabelled index split)
    train_set/         the labelled train descriptors ``evaluate`` votes over (recognition, sort/insert steps):
      vectors.npy      (n, dim) float32
      labels.npy       (n,) int64 landmark ids
      ids.txt          one train image id per line

Both are optional for readers: an index without them still searches; serving then reports what it cannot do.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from landmark.errors import InputError
from landmark.retrieval.recognize import LabelledSet

LABELS_FILE = "labels.json"
LABELS_FORMAT = "landmark-index-labels/1"
TRAIN_SET_DIR = "train_set"
_VECTORS, _LABELS, _IDS = "vectors.npy", "labels.npy", "ids.txt"


def write_index_labels(index_dir: Path, split: str, labels: Sequence[int]) -> dict[str, Any]:
    """Write ``labels.json`` (one landmark id per indexed image, ids.txt order); returns what meta.json records."""
    payload = {"format": LABELS_FORMAT, "split": split, "labels": [int(x) for x in labels]}
    (Path(index_dir) / LABELS_FILE).write_text(json.dumps(payload, separators=(",", ":")) + "\n")
    known = sum(1 for x in labels if int(x) >= 0)
    return {"labels": {"file": LABELS_FILE, "known": known, "unknown": len(labels) - known}}


def read_index_labels(index_dir: Path, n: int) -> np.ndarray | None:
    """The (n,) int64 landmark ids of the indexed images, or None when the index has no ``labels.json``.

    Raises:
        ValueError: the file is malformed or holds another number of labels than the index has images.
    """
    path = Path(index_dir) / LABELS_FILE
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text())
        labels = np.asarray(payload["labels"], dtype=np.int64)
        well_formed = payload.get("format") == LABELS_FORMAT and labels.ndim == 1
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path} is not an index labels file: {exc}") from exc
    if not well_formed:
        raise InputError(f"{path} is not an index labels file of format {LABELS_FORMAT!r}")
    if labels.size != n:
        raise InputError(f"{path} holds {labels.size} labels for an index of {n} images")
    return labels


def write_labelled_set(index_dir: Path, labelled: LabelledSet) -> dict[str, Any]:
    """Write ``train_set/`` (vectors, labels, ids); returns what meta.json records."""
    if len(labelled.ids) != np.size(labelled.labels):
        raise ValueError("a labelled set saved for serving needs the image id of every vector")
    root = Path(index_dir) / TRAIN_SET_DIR
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / _VECTORS, np.ascontiguousarray(labelled.vectors, dtype=np.float32))
    np.save(root / _LABELS, np.asarray(labelled.labels, dtype=np.int64))
    (root / _IDS).write_text("".join(f"{i}\n" for i in labelled.ids), encoding="utf-8")
    for name in (_VECTORS, _LABELS, _IDS):
        with open(root / name, "rb") as fh:
            os.fsync(fh.fileno())
    return {
        "train_set": {
            "dir": TRAIN_SET_DIR,
            "images": int(np.size(labelled.labels)),
            "classes": int(np.unique(labelled.labels).size),
        }
    }


def read_labelled_set(index_dir: Path) -> LabelledSet | None:
    """The labelled train descriptors saved with an index, or None when it has no ``train_set/``.

    Raises:
        ValueError: a partial or inconsistent ``train_set/``.
    """
    root = Path(index_dir) / TRAIN_SET_DIR
    if not root.is_dir():
        return None
    missing = [name for name in (_VECTORS, _LABELS, _IDS) if not (root / name).is_file()]
    if missing:
        raise InputError(f"{root} is incomplete: missing {', '.join(missing)}")
    vectors = np.load(root / _VECTORS, allow_pickle=False)
    labels = np.load(root / _LABELS, allow_pickle=False)
    ids = tuple((root / _IDS).read_text(encoding="utf-8").splitlines())
    try:
        return LabelledSet(np.asarray(vectors, np.float32), np.asarray(labels, np.int64), ids)
    except ValueError as exc:
        raise InputError(f"{root}: {exc}") from exc
