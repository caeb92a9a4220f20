"""Stage ``index``: the FAISS index of a split (default "index") built shard by shard from its feature store."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from landmark.config import Config
from landmark.data.bad_images import skipped_note, usable_ids
from landmark.data.datasets import open_dataset
from landmark.data.groundtruth import LandmarkDataset
from landmark.errors import InputError
from landmark.features.store import iter_feature_chunks, load_features, read_meta
from landmark.retrieval.index import check_compatible, model_version, resolve_kind, sample_rows, write_index
from landmark.retrieval.index_labels import write_index_labels, write_labelled_set
from landmark.stages.common import load_train_set

logger = logging.getLogger(__name__)


def build_index(
    cfg: Config, data_dir: Path, features_dir: Path, out_dir: Path, *, split: str = "index", fmt: str = "auto"
) -> dict[str, Any]:
    """Index the usable images of ``split`` from ``features_dir/<split>`` into ``out_dir`` (atomically).

    The index kind follows ``cfg.index`` (IVF-PQ is trained on a seeded sample of ``train_size`` vectors); the
    feature store's metadata and its model version are recorded so a later search can refuse descriptors from
    another model. Written with it (:mod:`landmark.retrieval.index_labels`): the manifest labels of the indexed images and,
    when ``features_dir/train`` holds descriptors of the same model, the labelled train set ``evaluate`` votes
    over, so a registry version can recognise and re-rank on its own (``landmark serve``).

    Returns:
        The index metadata written to ``out_dir/meta.json``.
    """
    dataset = open_dataset(cfg, Path(data_dir), fmt)
    ids, skipped = usable_ids(dataset, split, Path(features_dir))
    if skipped:
        logger.warning("index: %s", skipped_note({split: skipped}))
    if not ids:
        raise InputError(f"split {split!r} of {data_dir} has no usable images to index")
    store = Path(features_dir) / split
    feature_meta = read_meta(store)
    kind = resolve_kind(cfg.index, len(ids))
    sample = None
    if kind == "ivfpq":
        rows = sample_rows(len(ids), cfg.index.train_size, cfg.seed)
        _, sample = load_features(store, [ids[i] for i in rows])
    meta = {
        "model_version": model_version(feature_meta),
        "features": feature_meta,
        "split": split,
        "dataset": str(data_dir),
        "undecodable_left_out": len(skipped),
    }
    return write_index(
        out_dir,
        iter_feature_chunks(store, ids, cfg.index.chunk_size),
        dim=int(feature_meta["dim"]),  # type: ignore[call-overload]
        kind=kind,
        cfg=cfg.index,
        train_sample=sample,
        meta=meta,
        extra=lambda tmp: write_serving_labels(tmp, dataset, split, ids, Path(features_dir), meta),
    )


def write_serving_labels(
    index_dir: Path,
    dataset: LandmarkDataset,
    split: str,
    ids: Sequence[str],
    features_dir: Path,
    index_meta: Mapping[str, Any],
) -> dict[str, Any]:
    """Write the indexed images' manifest labels and the labelled train set (when its descriptors come from
    the index's model) into ``index_dir``; returns what meta.json records about them."""
    frame = dataset.manifest(split)
    label_of = dict(zip(frame["image_id"].astype(str), frame["landmark_id"].astype(int), strict=True))
    recorded = write_index_labels(index_dir, split, [label_of.get(i, -1) for i in ids])
    train, note = load_train_set(dataset, features_dir)
    if train is not None:
        try:
            check_compatible(index_meta, read_meta(Path(features_dir) / "train"))
        except ValueError as exc:
            train, note = None, f"train descriptors are not comparable with the index: {exc}"
    if train is None or len(train.ids) == 0:
        return {**recorded, "train_set": {"skipped": note or "no labelled train images"}}
    return {**recorded, **write_labelled_set(index_dir, train)}
