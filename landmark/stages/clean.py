"""Stage ``clean``: drop wrongly labelled and junk train images by spatial verification (see
:mod:`landmark.cleaning.clean`), write the cleaned train manifest and the reports, then run the cleaning quality gate.

Outputs in ``out_dir``:

- ``train.parquet``: the train manifest with the same schema and every row; dropped images are quarantined with
  the reason ``clean_<code>: ...`` (``clean_unverified``, ``clean_small_class``, ``clean_no_label``), and images
  that ``extract`` or ``local`` could not decode (their ``quarantined.json``) with their decode reason, so
  training (ok rows only) skips them and nothing is silently lost;
- ``dropped.parquet``: the dropped rows alone, with ``clean_reason``, ``candidates``, ``verified`` and
  ``max_inliers`` next to the manifest columns;
- ``class_report.parquet``: per class (:data:`landmark.ops.quality.CLASS_REPORT_COLUMNS` plus extra columns);
- ``clean.json``: counts, shares, pair statistics, params, the bootstrap model, seconds, the gate verdict;
- ``gx/`` and ``validate_clean.json``: the Great Expectations cleaning gate and its Data Docs.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from landmark.cleaning.clean import CleaningResult, clean_train_set
from landmark.cleaning.verify import StoreVerifier
from landmark.config import Config, config_to_dict
from landmark.data.atomic import atomic_path, write_json
from landmark.data.bad_images import BadImage, quarantine_bad_images, read_quarantine, reason_counts
from landmark.data.datasets import open_dataset
from landmark.data.manifest import STATUS_QUARANTINED, format_reason, make_manifest, write_manifest
from landmark.features.local_store import LocalFeatureReader, LocalStoreError
from landmark.features.store import load_features, read_meta
from landmark.ops.quality import QualityGateError
from landmark.stages.common import CLEANING_REPORT, describe_files, validate_cleaning

CLEANED_MANIFEST = "train.parquet"
DROPPED = "dropped.parquet"
CLASS_REPORT = "class_report.parquet"
SUMMARY = "clean.json"


@dataclass(frozen=True)
class CleanSummary:
    """The counts of one cleaning run and where its outputs are."""

    out_dir: Path
    images: int  # ok train images considered
    kept: int
    dropped: dict[str, int]  # reason code -> images
    classes_before: int
    classes_kept: int
    unique_pairs: int
    directed_pairs: int
    verified_pairs: int
    gate_passed: bool
    seconds: float
    undecodable: dict[str, int] = dataclasses.field(default_factory=dict)  # reason code -> images left out


# ---------------------------------------------------------------------------------------------------------------
# Tables


def complete_manifest(manifest: pd.DataFrame, root: Path) -> tuple[pd.DataFrame, int]:
    """Fill sha1, width and height of ok rows that lack them (a dataset read straight from CSVs, not ingested)
    from the image files (:func:`landmark.stages.common.describe_files`), so the cleaned manifest carries what
    the quality gate checks; unreadable files are quarantined with the reason. Returns the manifest and how
    many rows needed it.
    """
    frame = manifest.reset_index(drop=True)
    todo = (frame["status"] == "ok") & (
        (frame["sha1"] == "") | (frame["width"] <= 0) | (frame["height"] <= 0)
    )
    return make_manifest(describe_files(frame, root)), int(todo.sum())


def cleaned_manifest(manifest: pd.DataFrame, decisions: pd.DataFrame) -> pd.DataFrame:
    """The manifest with every dropped ok row quarantined as ``clean_<reason>: <cnt> of <candidates> ...``."""
    frame = manifest.reset_index(drop=True).copy()
    dropped = decisions[~decisions["kept"]].set_index("image_id")
    ok = frame["status"] == "ok"
    mask = ok & frame["image_id"].isin(dropped.index)
    reasons = [
        format_reason(
            f"clean_{dropped.at[i, 'reason']}",
            f"{dropped.at[i, 'verified']} of {dropped.at[i, 'candidates']} same-label neighbours verified",
        )
        for i in frame.loc[mask, "image_id"]
    ]
    frame.loc[mask, "status"] = STATUS_QUARANTINED
    frame.loc[mask, "reason"] = reasons
    return make_manifest(frame)


def dropped_table(manifest: pd.DataFrame, decisions: pd.DataFrame) -> pd.DataFrame:
    """The dropped images' original manifest rows plus ``clean_reason``, ``candidates``, ``verified``,
    ``max_inliers``."""
    extra = decisions.loc[~decisions["kept"], ["image_id", "reason", "candidates", "verified", "max_inliers"]]
    extra = extra.rename(columns={"reason": "clean_reason"})
    ok = manifest[manifest["status"] == "ok"]
    return ok.merge(extra, on="image_id", how="inner").reset_index(drop=True)


def summary_dict(
    cfg: Config, result: CleaningResult, manifest: pd.DataFrame, boot_meta: dict[str, Any],
    local_meta: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """The content of ``clean.json`` (without the gate and total seconds)."""
    d = result.decisions
    n = len(d)
    reasons = d["reason"].value_counts().to_dict()
    classes = result.classes
    return {
        "images": n,
        "kept": int(d["kept"].sum()),
        "dropped": int((~d["kept"]).sum()),
        "dropped_by_reason": {r: int(reasons.get(r, 0)) for r in ("unverified", "small_class", "no_label")},
        "kept_share": round(float(d["kept"].mean()), 6) if n else 0.0,
        "dropped_share": round(float((~d["kept"]).mean()), 6) if n else 0.0,
        "already_quarantined": int((manifest["status"] != "ok").sum()),
        "classes_before": len(classes),
        "classes_kept": int((classes["images_kept"] > 0).sum()),
        "classes_dropped": int(classes["dropped"].sum()),
        "pairs": {
            "directed": result.directed_pairs,
            "unique": result.unique_pairs,
            "verified": result.verified_pairs,
            "saved_by_dedup": result.saved_pairs,
            "skipped_decided": result.skipped_pairs,
            "saved_share": round(1 - result.verified_pairs / result.directed_pairs, 6)
            if result.directed_pairs
            else 0.0,
            "verify_rounds": result.verify_rounds,
        },
        "class_drop_rounds": result.rounds,
        "params": {
            "clean": config_to_dict(cfg.clean),
            "verify": config_to_dict(cfg.verify),
            "seed": cfg.seed,
        },
        "bootstrap": boot_meta,
        "local_features": local_meta,
        "seconds": dict(result.seconds),
    }


def bootstrap_identity(store_meta: dict[str, Any]) -> dict[str, Any]:
    """Which model produced the bootstrap descriptors, from the feature store's metadata."""
    identity: dict[str, Any] = {
        k: store_meta[k] for k in ("model_dir", "weights_sha1", "model") if k in store_meta
    }
    identity["kind"] = "trained" if "model_dir" in store_meta else "pretrained"
    identity["dim"] = store_meta.get("dim")
    return identity


# ---------------------------------------------------------------------------------------------------------------
# The stage


def clean(
    cfg: Config,
    data_dir: Path,
    features_dir: Path,
    local_dir: Path,
    out_dir: Path,
    *,
    fmt: str = "auto",
    progress: bool = True,
) -> CleanSummary:
    """Clean ``data_dir``'s train split with global descriptors from ``features_dir/train`` and local features
    from ``local_dir/train``; write the outputs of the module docstring and run the cleaning gate. Images those
    stages skipped as undecodable are quarantined with their reason and left out of the verification.

    Raises:
        FeatureStoreError: train images without global descriptors (run ``landmark extract --split train``).
        LocalStoreError: train images without local features (run ``landmark local``).
        QualityGateError: the cleaning gate failed (every output and the gate report are written first).
    """
    start = time.perf_counter()
    inputs = _read_inputs(cfg, data_dir, features_dir, local_dir, fmt)
    # a pair with fewer putative matches than T_inlier cannot be verified: it is not fitted
    verifier = StoreVerifier(
        inputs.reader,
        dataclasses.replace(cfg.verify, workers=cfg.clean.workers),
        reject_below=cfg.clean.min_inliers,
        parallel=cfg.parallel,
    )
    with tqdm(desc="clean: verify pairs", unit="pair", disable=not progress) as bar:
        result = clean_train_set(
            inputs.ids,
            inputs.labels,
            inputs.descriptors,
            verifier.pair_counts,
            cfg.clean,
            progress=bar.update,
        )

    out = Path(out_dir)
    _write_tables(out, inputs.manifest, result)
    local_meta = {**inputs.reader.meta, "store": str(inputs.reader.root)}
    summary = summary_dict(cfg, result, inputs.manifest, bootstrap_identity(inputs.boot_meta), local_meta)
    summary["manifest_rows_completed"] = inputs.completed
    left_out = reason_counts({b.image_id: b for b in reversed(inputs.undecodable)}.values())
    summary["undecodable_left_out"] = left_out
    gate_error: QualityGateError | None = None
    try:
        validate_cleaning(cfg, out / CLEANED_MANIFEST, out / CLASS_REPORT, out)
    except QualityGateError as exc:
        gate_error = exc
    summary["gate"] = {"passed": gate_error is None, "report": CLEANING_REPORT}
    seconds = time.perf_counter() - start
    summary["seconds"]["total"] = round(seconds, 3)
    write_json(out / SUMMARY, summary)
    if gate_error is not None:
        raise gate_error
    d = result.decisions
    return CleanSummary(
        out_dir=out,
        images=len(d),
        kept=int(d["kept"].sum()),
        dropped=dict(summary["dropped_by_reason"]),
        classes_before=int(summary["classes_before"]),
        classes_kept=int(summary["classes_kept"]),
        unique_pairs=result.unique_pairs,
        directed_pairs=result.directed_pairs,
        verified_pairs=result.verified_pairs,
        gate_passed=True,
        seconds=seconds,
        undecodable=left_out,
    )


@dataclass(frozen=True)
class _CleanInputs:
    """The train manifest (completed, undecodable images quarantined), its ok rows' ids, labels and global
    descriptors, and the local feature store every labelled one is in."""

    manifest: pd.DataFrame
    completed: int
    undecodable: list[BadImage]
    ids: list[str]
    labels: np.ndarray
    boot_meta: dict[str, Any]
    descriptors: np.ndarray
    reader: LocalFeatureReader


def _read_inputs(cfg: Config, data_dir: Path, features_dir: Path, local_dir: Path, fmt: str) -> _CleanInputs:
    dataset = open_dataset(cfg, Path(data_dir), fmt)
    boot_root = Path(features_dir) / "train"
    manifest, completed = complete_manifest(dataset.manifest("train"), dataset.root)
    # images extract or local could not decode have no features: quarantined with their reason, not verified
    undecodable = read_quarantine(boot_root) + read_quarantine(Path(local_dir) / "train")
    manifest = quarantine_bad_images(manifest, undecodable)
    ok = manifest[manifest["status"] == "ok"]
    ids = [str(i) for i in ok["image_id"]]
    labels = ok["landmark_id"].to_numpy(np.int64)

    boot_meta = read_meta(boot_root)
    _, descriptors = load_features(boot_root, ids)
    reader = LocalFeatureReader(Path(local_dir) / "train")
    missing = [i for i, label in zip(ids, labels, strict=True) if label >= 0 and i not in reader]
    if missing:
        raise LocalStoreError(
            f"{reader.root}: {len(missing)} train images have no local features, e.g. {missing[:3]}; "
            "run `landmark local --split train` first"
        )
    return _CleanInputs(manifest, completed, undecodable, ids, labels, boot_meta, descriptors, reader)


def _write_tables(out: Path, manifest: pd.DataFrame, result: CleaningResult) -> None:
    """The cleaned manifest, the dropped rows and the class report into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    write_manifest(cleaned_manifest(manifest, result.decisions), out / CLEANED_MANIFEST)
    for name, table in ((DROPPED, dropped_table(manifest, result.decisions)), (CLASS_REPORT, result.classes)):
        with atomic_path(out / name) as tmp:
            table.to_parquet(tmp, index=False)
