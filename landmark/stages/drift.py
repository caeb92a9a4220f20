"""Stage ``drift``: Evidently drift report of a current image set against a reference one.

What reference and current are, per use (``purpose``):

- ``ingest``: current = the newest ingested batch (by default the last ``batch_id`` of the ingestion manifest;
  ``current_batch="all"`` takes every row), reference = the training data (the train split of the dataset the
  production model was trained on). Run after ``landmark ingest``/``validate``: it says whether new data looks
  like what the model was trained on.
- ``retrain``: current = the test split (the evaluation queries), reference = the train split, usually of the
  same dataset. Run after ``landmark evaluate``: the promotion gate bounds its drift share, so a model is not
  promoted on an evaluation set that no longer resembles its training data.

A side is a dataset directory (any supported format; ``split`` picks the manifest), an ingestion root (its
``manifests/<split>.parquet``) or a manifest parquet file. Images are sampled (seeded) up to
``drift.sample_size`` per side. With feature stores for both sides (``landmark extract`` output: the store
itself or its parent holding ``<split>/``), the descriptors' PCA columns join the image statistics.

Outputs under ``out_dir``: ``drift.json`` (the :class:`~landmark.drift.DriftResult`, read by the promotion
gate), ``report.html`` (Evidently's interactive report), ``evidently.json``; the snapshot goes to the Evidently
workspace (``drift.workspace``) unless ``workspace`` is switched off.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from landmark.config import Config
from landmark.drift import DriftResult

DEFAULT_CURRENT_SPLIT: dict[str, str] = {"ingest": "train", "retrain": "test"}
DEFAULT_CURRENT_BATCH: dict[str, str] = {"ingest": "latest", "retrain": "all"}


@dataclass(frozen=True)
class ImageSet:
    """The manifest rows of one side and the directory their relative uris resolve against."""

    label: str  # what it is, in words, e.g. "build/synth [test]"
    manifest: pd.DataFrame
    root: Path


@dataclass(frozen=True)
class DriftSummary:
    """What ``landmark drift`` did: the result, the files written and the snapshot stored."""

    result: DriftResult
    purpose: str
    files: dict[str, str]
    snapshot_id: str | None
    workspace: str | None
    embedding_columns: int
    seconds: float
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "result": self.result.to_dict(),
            "purpose": self.purpose,
            "files": dict(self.files),
            "snapshot_id": self.snapshot_id,
            "workspace": self.workspace,
            "embedding_columns": self.embedding_columns,
            "seconds": round(self.seconds, 2),
            "notes": list(self.notes),
        }


def select_batch(manifest: pd.DataFrame, batch: str) -> tuple[pd.DataFrame, str]:
    """Rows of one ingestion batch: ``"latest"`` (the batch of the last row; batches are appended in order),
    ``"all"`` (every row) or a batch id.

    Returns:
        (rows, the batch id chosen or "all").

    Raises:
        ValueError: an empty manifest for "latest", or a batch id the manifest does not hold.
    """
    if batch == "all":
        return manifest.reset_index(drop=True), "all"
    if batch == "latest":
        if manifest.empty:
            raise ValueError("the manifest is empty: there is no latest batch")
        batch = str(manifest["batch_id"].iloc[-1])
    rows = manifest[manifest["batch_id"] == batch].reset_index(drop=True)
    if rows.empty:
        known = list(dict.fromkeys(manifest["batch_id"].astype(str)))[-5:]
        raise ValueError(f"no rows of batch {batch!r} in the manifest (latest batches: {known})")
    return rows, batch


def load_image_set(source: Path, split: str, *, batch: str = "all", fmt: str = "auto") -> ImageSet:
    """One side of the comparison from a manifest file, an ingestion root or a dataset directory.

    Raises:
        FileNotFoundError: ``source`` does not exist, or an ingestion root without that split's manifest.
        ValueError / KeyError: an unreadable manifest, an unknown split or batch.
    """
    from landmark.data.catalog import images_root
    from landmark.data.formats import read_dataset
    from landmark.data.ingest import MANIFESTS_DIR
    from landmark.data.manifest import manifest_path, read_manifest

    source = Path(source)
    if source.is_file():
        manifest = read_manifest(source)
        # an ingestion manifest lives in <root>/manifests/ and its uris are relative to <root>
        root = source.parent.parent if source.parent.name == MANIFESTS_DIR else source.parent
        label = str(source)
    elif (source / MANIFESTS_DIR).is_dir():
        path = manifest_path(source / MANIFESTS_DIR, split)
        if not path.is_file():
            raise FileNotFoundError(f"no manifest for split {split!r} at {path}")
        manifest, root, label = read_manifest(path), images_root(source), f"{path}"
    elif source.is_dir():
        dataset = read_dataset(source, fmt)
        manifest, root, label = dataset.manifest(split), dataset.root, f"{source} [{split}]"
    else:
        raise FileNotFoundError(f"{source} is neither a manifest file nor a directory")
    rows, chosen = select_batch(manifest, batch)
    if chosen != "all":
        label += f" batch {chosen}"
    if rows.empty:
        raise ValueError(f"{label}: no images to compare")
    return ImageSet(label, rows, Path(root))


def without_images_of(reference: ImageSet, current: ImageSet) -> ImageSet:
    """``reference`` without the images ``current`` holds: a new batch is compared with the data that was there
    before it (the catalog it was just added to holds it too), never with itself.

    Raises:
        ValueError: nothing is left on the reference side.
    """
    mask = reference.manifest["image_id"].isin(set(current.manifest["image_id"]))
    if not mask.any():
        return reference
    if mask.all():
        raise ValueError(
            f"{reference.label}: every reference image is also a current one; nothing to compare"
        )
    rows = reference.manifest[~mask].reset_index(drop=True)
    return ImageSet(f"{reference.label} without the current images", rows, reference.root)


def feature_store_dir(root: Path, split: str) -> Path:
    """``root`` when it is a feature store, else ``root/<split>`` (the layout ``landmark extract`` writes).

    Raises:
        FileNotFoundError: neither holds a store.
    """
    root = Path(root)
    for candidate in (root, root / split):
        if (candidate / "store.json").is_file():
            return candidate
    raise FileNotFoundError(f"no feature store at {root} or {root / split} (run `landmark extract`)")


def load_side_features(store: Path, ids: list[str]) -> tuple[list[str], np.ndarray]:
    """Descriptors of those ``ids`` that the store holds (images that failed to decode have none)."""
    from landmark.features.store import load_features, stored_ids

    held = set(stored_ids(store))
    wanted = [i for i in ids if i in held]
    if not wanted:
        raise ValueError(f"the feature store {store} holds none of the {len(ids)} sampled images")
    return load_features(store, wanted)


def drift(
    cfg: Config,
    reference: Path,
    current: Path,
    out_dir: Path,
    *,
    purpose: str = "retrain",
    reference_split: str = "train",
    current_split: str | None = None,
    current_batch: str | None = None,
    reference_features: Path | None = None,
    current_features: Path | None = None,
    workspace: Path | None = None,
    log_to_workspace: bool = True,
    fmt: str = "auto",
    progress: bool = False,
) -> DriftSummary:
    """Compare ``current`` with ``reference`` (see the module docstring for the two purposes), write the reports
    and store the snapshot in the Evidently workspace.

    Args:
        current_split: default ``train`` for ingest (the split the batch was ingested into), ``test`` for
            retrain.
        current_batch: ``latest``, ``all`` or a batch id; default ``latest`` for ingest, ``all`` for retrain.
        reference_features, current_features: feature stores; both or neither.
        workspace: default ``drift.workspace``; ``log_to_workspace=False`` stores nothing there.

    Raises:
        ValueError: an unknown purpose, features for one side only, nothing to compare.
        FileNotFoundError: a missing input.
    """
    from landmark.drift import (
        add_to_workspace,
        drift_frame,
        drift_report,
        embedding_frame,
        fit_embedding_pca,
        image_stats,
        manifest_images,
        sample_rows,
        save_report,
    )

    if purpose not in DEFAULT_CURRENT_SPLIT:
        raise ValueError(f"purpose must be one of {sorted(DEFAULT_CURRENT_SPLIT)}, got {purpose!r}")
    if (reference_features is None) != (current_features is None):
        raise ValueError(
            "pass feature stores for both sides (--reference-features and --current-features) or none"
        )
    start = time.perf_counter()
    c = cfg.drift
    split = current_split or DEFAULT_CURRENT_SPLIT[purpose]
    ref_set = load_image_set(reference, reference_split, fmt=fmt)
    cur_set = load_image_set(current, split, batch=current_batch or DEFAULT_CURRENT_BATCH[purpose], fmt=fmt)
    ref_set = without_images_of(ref_set, cur_set)
    # different seeds: when both sides are the same table, the samples are still independent draws
    ref_rows = sample_rows(ref_set.manifest, c.sample_size, cfg.seed)
    cur_rows = sample_rows(cur_set.manifest, c.sample_size, cfg.seed + 1)
    max_pixels = cfg.ingest.max_pixels
    ref_stats = image_stats(
        manifest_images(ref_rows, ref_set.root), workers=c.workers, max_pixels=max_pixels, progress=progress
    )
    cur_stats = image_stats(
        manifest_images(cur_rows, cur_set.root), workers=c.workers, max_pixels=max_pixels, progress=progress
    )
    notes: list[str] = []
    ref_frame, cur_frame, n_embedding = ref_stats, cur_stats, 0
    if reference_features is not None and current_features is not None:
        if c.embedding_components == 0:
            notes.append("feature stores ignored: drift.embedding_components is 0")
        else:
            ref_ids, ref_x = load_side_features(
                feature_store_dir(reference_features, reference_split), list(ref_stats.index)
            )
            cur_ids, cur_x = load_side_features(
                feature_store_dir(current_features, split), list(cur_stats.index)
            )
            pca = fit_embedding_pca(ref_x, c.embedding_components)
            n_embedding = pca.components.shape[0]
            ref_frame = drift_frame(ref_stats, embedding_frame(ref_ids, ref_x, pca))
            cur_frame = drift_frame(cur_stats, embedding_frame(cur_ids, cur_x, pca))
            notes.append(
                f"embeddings: {n_embedding} PCA axes of the reference descriptors "
                f"({100 * float(pca.explained_variance_ratio.sum()):.1f}% of their variance) + residual; "
                f"{len(ref_ids)} reference and {len(cur_ids)} current images have descriptors"
            )
    metadata = {"purpose": purpose, "reference": ref_set.label, "current": cur_set.label}
    result, snapshot = drift_report(
        ref_frame, cur_frame, c, timestamp=datetime.now(UTC), tags=[purpose], metadata=metadata
    )
    files = {name: str(path) for name, path in save_report(result, snapshot, Path(out_dir)).items()}
    snapshot_id: str | None = None
    target = Path(workspace) if workspace is not None else Path(c.workspace)
    if log_to_workspace:
        snapshot_id = add_to_workspace(snapshot, target, c.project)[0]
    return DriftSummary(
        result=result,
        purpose=purpose,
        files=files,
        snapshot_id=snapshot_id,
        workspace=str(target) if log_to_workspace else None,
        embedding_columns=n_embedding,
        seconds=time.perf_counter() - start,
        notes=tuple(notes),
    )
