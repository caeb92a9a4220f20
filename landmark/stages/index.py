"""Stage ``index``: the FAISS index of a split (default "index") built shard by shard from its feature store."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from landmark.config import Config


def iter_feature_chunks(
    store: Path, ids: Sequence[str], chunk_size: int
) -> Iterator[tuple[list[str], np.ndarray]]:
    """Yield ``(ids, vectors (n, dim))`` for consecutive slices of ``ids`` (only one slice in memory)."""
    from landmark.features.store import load_features

    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    for start in range(0, len(ids), chunk_size):
        yield load_features(store, ids[start : start + chunk_size])


def build_index(
    cfg: Config, data_dir: Path, features_dir: Path, out_dir: Path, *, split: str = "index", fmt: str = "auto"
) -> dict[str, Any]:
    """Index the usable images of ``split`` from ``features_dir/<split>`` into ``out_dir`` (atomically).

    The index kind follows ``cfg.index`` (IVF-PQ is trained on a seeded sample of ``train_size`` vectors); the
    feature store's metadata and its model version are recorded so a later search can refuse descriptors from
    another model.

    Returns:
        The index metadata written to ``out_dir/meta.json``.
    """
    from landmark.data.formats import read_dataset
    from landmark.features.store import load_features, read_meta
    from landmark.index import model_version, resolve_kind, sample_rows, write_index

    dataset = read_dataset(Path(data_dir), fmt)  # type: ignore[arg-type]
    ids = list(dataset.ok_ids(split))
    if not ids:
        raise ValueError(f"split {split!r} of {data_dir} has no usable images to index")
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
    }
    return write_index(
        out_dir,
        iter_feature_chunks(store, ids, cfg.index.chunk_size),
        dim=int(feature_meta["dim"]),  # type: ignore[call-overload]
        kind=kind,
        cfg=cfg.index,
        train_sample=sample,
        meta=meta,
    )
