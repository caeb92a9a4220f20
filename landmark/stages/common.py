"""Helpers more than one stage uses, so stages never import each other: the labelled train set (evaluate, index),
file facts for manifests read from disk and the cleaning gate (validate, clean)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from landmark.config import Config
from landmark.data.bad_images import usable_ids
from landmark.data.groundtruth import LandmarkDataset
from landmark.data.images import ImageDecodeError, file_sha1, read_image_size
from landmark.data.manifest import format_reason, resolve_uri
from landmark.errors import InputError
from landmark.features.store import load_features
from landmark.ops.quality import QualityReport, cleaning_tables, require_passed, run_gate, write_report
from landmark.retrieval.recognize import LabelledSet

CLEANING_REPORT = "validate_clean.json"


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


def describe_files(manifest: pd.DataFrame, root: Path) -> pd.DataFrame:
    """Fill in what ingestion records but a dataset read from disk may lack (sha1, width, height) for ok rows,
    from the files themselves (header only, no pixel decode); a file that is missing or whose header cannot be
    read is quarantined with the reason, so the gate judges the data as it really is."""
    frame = manifest.copy()
    todo = (frame["status"] == "ok") & (
        (frame["sha1"] == "") | (frame["width"] <= 0) | (frame["height"] <= 0)
    )
    for row in frame.index[todo]:
        try:
            path = resolve_uri(root, str(frame.at[row, "uri"]))
            width, height = read_image_size(path, name=str(frame.at[row, "image_id"]))
            frame.at[row, "sha1"] = file_sha1(path)
            frame.at[row, "width"], frame.at[row, "height"] = width, height
        except ImageDecodeError as exc:
            frame.at[row, "status"], frame.at[row, "reason"] = (
                "quarantined",
                format_reason(exc.reason, exc.detail),
            )
        except (OSError, ValueError) as exc:
            frame.at[row, "status"], frame.at[row, "reason"] = (
                "quarantined",
                format_reason("unreadable", str(exc)),
            )
    return frame


def read_table(path: Path) -> pd.DataFrame:
    """A parquet or CSV table.

    Raises:
        FileNotFoundError: no such file.
        ValueError: another extension.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"table {path} not found")
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path)
    raise InputError(f"table {path} must be .parquet or .csv")


def validate_cleaning(
    cfg: Config, cleaned_manifest: Path, class_report: Path, reports_dir: Path
) -> QualityReport:
    """Run the cleaning gate on the cleaned manifest and the per-class report; writes ``validate_clean.json``.

    Raises:
        QualityGateError: a critical expectation failed.
    """
    tables = cleaning_tables(read_table(cleaned_manifest), read_table(class_report), cfg.validate)
    report = run_gate("cleaning", tables, reports_dir)
    write_report(report, Path(reports_dir) / CLEANING_REPORT)
    return require_passed(report)
