"""Stage ``drift``: Evidently drift report of a current image set against a reference one.

What reference and current are, per use (``purpose``):

- ``ingest``: current = the newest ingested batch (by default the last ``batch_id`` of the ingestion manifest;
  ``current_batch="all"`` takes every row), reference = the training data (the train split of the dataset the
  production model was trained on). Run after ``landmark ingest``/``validate``: it says whether new data looks
  like what the model was trained on.
- ``retrain``: current = the test split (the evaluation queries), reference = the train split, usually of the
  same dataset. Run after ``landmark evaluate``: the promotion gate bounds its drift share, so a model is not
  promoted on an evaluation set that no longer resembles its training data.

- ``serving``: current = the last ``serve.log_window`` queries of the query log ``landmark serve`` writes
  (``serve.log_dir``: their image statistics and descriptors), reference = the train split of the catalog. Run
  nightly: it says whether what users ask looks like what the model was trained on.

A side is a dataset directory (any supported format; ``split`` picks the manifest), an ingestion root (its
``manifests/<split>.parquet``) or a manifest parquet file; the current side of ``serving`` is a query log
directory. Images are sampled (seeded) up to ``drift.sample_size`` per side. With feature stores for both sides
(``landmark extract`` output: the store itself or its parent holding ``<split>/``), the descriptors' PCA columns
join the image statistics. For ``serving`` the query log holds the current descriptors: with a reference store,
the descriptors are compared when the store was written by the model that described the logged queries (its
``weights_sha1`` starts with their ``model_id``); queries of other models are left out of that comparison.

Outputs under ``out_dir``: ``drift.json`` (the :class:`~landmark.ops.drift.DriftResult`, read by the promotion
gate), ``report.html`` (Evidently's interactive report), ``evidently.json``; the snapshot goes to the Evidently
workspace (``drift.workspace``) unless ``workspace`` is switched off.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from landmark.config import Config
from landmark.errors import InputError
from landmark.features.store import read_meta
from landmark.ops.drift import (
    FAILURE_COLUMN,
    IMAGE_STAT_COLUMNS,
    PURPOSES,
    DriftResult,
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
from landmark.serving.query_log import QueryWindow, read_window

SERVING = "serving"
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
            raise InputError("the manifest is empty: there is no latest batch")
        batch = str(manifest["batch_id"].iloc[-1])
    rows = manifest[manifest["batch_id"] == batch].reset_index(drop=True)
    if rows.empty:
        known = list(dict.fromkeys(manifest["batch_id"].astype(str)))[-5:]
        raise InputError(f"no rows of batch {batch!r} in the manifest (latest batches: {known})")
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
        raise InputError(f"{label}: no images to compare")
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
        raise InputError(
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
        raise InputError(f"the feature store {store} holds none of the {len(ids)} sampled images")
    return load_features(store, wanted)


@dataclass(frozen=True)
class Frames:
    """The two frames a drift report compares, what they are, and notes on what was (not) compared."""

    reference: pd.DataFrame
    current: pd.DataFrame
    reference_label: str
    current_label: str
    embedding_columns: int = 0
    notes: tuple[str, ...] = ()


def with_embeddings(
    frames: Frames,
    ref_ids: list[str],
    ref_x: np.ndarray,
    cur_ids: list[str],
    cur_x: np.ndarray,
    components: int,
) -> Frames:
    """``frames`` with the PCA columns of both sides' descriptors (axes fitted on the reference side)."""
    pca = fit_embedding_pca(ref_x, components)
    n_embedding = pca.components.shape[0]
    note = (
        f"embeddings: {n_embedding} PCA axes of the reference descriptors "
        f"({100 * float(pca.explained_variance_ratio.sum()):.1f}% of their variance) + residual; "
        f"{len(ref_ids)} reference and {len(cur_ids)} current images have descriptors"
    )
    return Frames(
        drift_frame(frames.reference, embedding_frame(ref_ids, ref_x, pca)),
        drift_frame(frames.current, embedding_frame(cur_ids, cur_x, pca)),
        frames.reference_label,
        frames.current_label,
        n_embedding,
        (*frames.notes, note),
    )


def reference_stats(
    cfg: Config, reference: Path, split: str, *, fmt: str, progress: bool, current: ImageSet | None = None
) -> tuple[ImageSet, pd.DataFrame]:
    """The reference side's image set (without ``current``'s images) and the statistics of its sample."""
    ref_set = load_image_set(reference, split, fmt=fmt)
    if current is not None:
        ref_set = without_images_of(ref_set, current)
    rows = sample_rows(ref_set.manifest, cfg.drift.sample_size, cfg.seed)
    stats = image_stats(
        manifest_images(rows, ref_set.root),
        workers=cfg.drift.workers,
        parallel=cfg.parallel,
        max_pixels=cfg.ingest.max_pixels,
        progress=progress,
    )
    return ref_set, stats


def image_set_frames(
    cfg: Config,
    reference: Path,
    current: Path,
    *,
    purpose: str,
    reference_split: str,
    current_split: str | None,
    current_batch: str | None,
    reference_features: Path | None,
    current_features: Path | None,
    fmt: str,
    progress: bool,
) -> Frames:
    """The frames of ``ingest`` and ``retrain``: two image sets, with both sides' feature stores when given."""
    if (reference_features is None) != (current_features is None):
        raise InputError(
            "pass feature stores for both sides (--reference-features and --current-features) or none"
        )
    c = cfg.drift
    split = current_split or DEFAULT_CURRENT_SPLIT[purpose]
    cur_set = load_image_set(current, split, batch=current_batch or DEFAULT_CURRENT_BATCH[purpose], fmt=fmt)
    ref_set, ref_stats = reference_stats(
        cfg, reference, reference_split, fmt=fmt, progress=progress, current=cur_set
    )
    # different seeds: when both sides are the same table, the samples are still independent draws
    cur_rows = sample_rows(cur_set.manifest, c.sample_size, cfg.seed + 1)
    cur_stats = image_stats(
        manifest_images(cur_rows, cur_set.root),
        workers=c.workers,
        parallel=cfg.parallel,
        max_pixels=cfg.ingest.max_pixels,
        progress=progress,
    )
    frames = Frames(ref_stats, cur_stats, ref_set.label, cur_set.label)
    if reference_features is None or current_features is None:
        return frames
    if c.embedding_components == 0:
        return replace(frames, notes=("feature stores ignored: drift.embedding_components is 0",))
    ref_ids, ref_x = load_side_features(
        feature_store_dir(reference_features, reference_split), list(ref_stats.index)
    )
    cur_ids, cur_x = load_side_features(feature_store_dir(current_features, split), list(cur_stats.index))
    return with_embeddings(frames, ref_ids, ref_x, cur_ids, cur_x, c.embedding_components)


def window_stats(window: QueryWindow, size: int, seed: int) -> pd.DataFrame:
    """The image statistics of at most ``size`` logged queries (sampled with ``seed``), indexed by query id like
    :func:`landmark.ops.drift.image_stats` frames are by image id."""
    table = window.stats[[*IMAGE_STAT_COLUMNS, FAILURE_COLUMN]].rename_axis("image_id").reset_index()
    return sample_rows(table, size, seed).set_index("image_id")


def matching_model(window: QueryWindow, weights_sha1: str) -> str | None:
    """The model id of the logged queries that the reference descriptors' weights belong to, if any."""
    if not weights_sha1:
        return None
    return next((m for m in window.models() if m and weights_sha1.startswith(m)), None)


def serving_frames(
    cfg: Config,
    reference: Path,
    log_dir: Path,
    *,
    reference_split: str,
    reference_features: Path | None,
    current_features: Path | None,
    fmt: str,
    progress: bool,
) -> Frames:
    """The frames of ``serving``: the train split of the catalog against the last window of logged queries,
    with descriptors on both sides when the reference store was written by the queries' model."""
    if current_features is not None:
        raise InputError(
            "--current-features does not apply to the serving drift: the query log holds the queries' descriptors"
        )
    window = read_window(Path(log_dir), cfg.serve.log_window)
    if len(window.stats) < 2:
        raise InputError(
            f"the query log {log_dir} holds {len(window.stats)} query; the serving drift needs at least 2"
        )
    ref_set, ref_stats = reference_stats(cfg, reference, reference_split, fmt=fmt, progress=progress)
    cur_stats = window_stats(window, cfg.drift.sample_size, cfg.seed + 1)
    label = f"query log {log_dir}: the last {len(window.stats)} queries ({', '.join(window.files)})"
    frames = Frames(ref_stats, cur_stats, ref_set.label, label)
    if reference_features is None:
        return frames
    if cfg.drift.embedding_components == 0:
        return replace(frames, notes=("feature store ignored: drift.embedding_components is 0",))
    store = feature_store_dir(reference_features, reference_split)
    weights = str(read_meta(store).get("weights_sha1", ""))
    model = matching_model(window, weights)
    cur_ids, cur_x = window.descriptors(model) if model is not None else ([], np.zeros((0, 0)))
    keep = [i for i, query_id in enumerate(cur_ids) if query_id in cur_stats.index]
    if len(keep) < 2:
        note = (
            f"descriptors not compared: {store} holds descriptors of weights {weights[:12] or '(unrecorded)'}, "
            f"the sampled queries were described by {', '.join(window.models()) or 'no model'}"
        )
        return replace(frames, notes=(note,))
    ref_ids, ref_x = load_side_features(store, list(ref_stats.index))
    return with_embeddings(
        frames, ref_ids, ref_x, [cur_ids[i] for i in keep], cur_x[keep], cfg.drift.embedding_components
    )


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
    """Compare ``current`` with ``reference`` (see the module docstring for the three purposes), write the
    reports and store the snapshot in the Evidently workspace.

    Args:
        current: the current images (``ingest``, ``retrain``) or the query log directory (``serving``).
        current_split: default ``train`` for ingest (the split the batch was ingested into), ``test`` for
            retrain; unused by serving.
        current_batch: ``latest``, ``all`` or a batch id; default ``latest`` for ingest, ``all`` for retrain.
        reference_features, current_features: feature stores; both or neither (serving: the reference store
            only).
        workspace: default ``drift.workspace``; ``log_to_workspace=False`` stores nothing there.

    Raises:
        ValueError: an unknown purpose, features for one side only, nothing to compare.
        FileNotFoundError: a missing input.
    """
    if purpose not in PURPOSES:
        raise InputError(f"purpose must be one of {', '.join(PURPOSES)}, got {purpose!r}")
    start = time.perf_counter()
    if purpose == SERVING:
        frames = serving_frames(
            cfg,
            reference,
            current,
            reference_split=reference_split,
            reference_features=reference_features,
            current_features=current_features,
            fmt=fmt,
            progress=progress,
        )
    else:
        frames = image_set_frames(
            cfg,
            reference,
            current,
            purpose=purpose,
            reference_split=reference_split,
            current_split=current_split,
            current_batch=current_batch,
            reference_features=reference_features,
            current_features=current_features,
            fmt=fmt,
            progress=progress,
        )
    target = Path(workspace) if workspace is not None else Path(cfg.drift.workspace)
    return report_drift(cfg, frames, purpose, Path(out_dir), target if log_to_workspace else None, start)


def report_drift(
    cfg: Config, frames: Frames, purpose: str, out_dir: Path, workspace: Path | None, start: float
) -> DriftSummary:
    """Run the drift report over ``frames``, write it under ``out_dir`` and store its snapshot in ``workspace``
    (None: nowhere); ``start`` is when the stage began (``time.perf_counter``)."""
    metadata = {"purpose": purpose, "reference": frames.reference_label, "current": frames.current_label}
    result, snapshot = drift_report(
        frames.reference,
        frames.current,
        cfg.drift,
        timestamp=datetime.now(UTC),
        tags=[purpose],
        metadata=metadata,
    )
    files = {name: str(path) for name, path in save_report(result, snapshot, out_dir).items()}
    snapshot_id: str | None = None
    if workspace is not None:
        snapshot_id = add_to_workspace(snapshot, workspace, cfg.drift.project)[0]
    return DriftSummary(
        result=result,
        purpose=purpose,
        files=files,
        snapshot_id=snapshot_id,
        workspace=str(workspace) if workspace is not None else None,
        embedding_columns=frames.embedding_columns,
        seconds=time.perf_counter() - start,
        notes=frames.notes,
    )
