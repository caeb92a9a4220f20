"""Helpers that more than one stage reads its inputs with, so stages never import each other."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from landmark.data.bad_images import usable_ids
from landmark.data.groundtruth import LandmarkDataset
from landmark.features.store import load_features
from landmark.retrieval.recognize import LabelledSet


def load_train_set(dataset: LandmarkDataset, features_dir: Path) -> tuple[LabelledSet | None, str]:
    """The labelled train descriptors (images extraction skipped as undecodable left out), or None with the
    reason (no train split, or no train features).

    The one definition of the labelled train set: evaluation votes over it and the index stage stores it for
    serving, so both vote over exactly the same images.
    """
    if "train" not in dataset.splits:
        return None, f"dataset {dataset.root} has no train split"
    store = Path(features_dir) / "train"
    if not store.is_dir():
        return None, f"no train features at {store} (run `landmark extract --split train`)"
    frame = dataset.manifest("train")
    described, _ = usable_ids(dataset, "train", features_dir)
    usable = frame[
        (frame["status"] == "ok") & (frame["landmark_id"] >= 0) & frame["image_id"].isin(described)
    ]
    ids, vectors = load_features(store, list(usable["image_id"].astype(str)))
    return LabelledSet(vectors, usable["landmark_id"].to_numpy(np.int64), tuple(ids)), ""
