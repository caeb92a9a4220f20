"""One function per pipeline stage, shared by the CLI, DVC (through the CLI) and the Prefect flows.

Each stage takes the typed :class:`~landmark.config.Config` plus input/output paths, reads its inputs, writes
its outputs and returns a small summary. No stage parses arguments, prints tables or reads params.yaml itself.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from landmark.config import Config, config_to_dict, resolve_device
from landmark.data.groundtruth import LandmarkDataset, QueryTruth

BBox = tuple[float, float, float, float]


def synth(cfg: Config, out_dir: Path, *, progress: bool = True) -> Any:
    """Generate the synthetic landmark world (GLDv2 layout + solutions + gnd) into ``out_dir``."""
    from landmark.data.synthetic import generate_world

    return generate_world(cfg.synth, Path(out_dir), seed=cfg.seed, progress=progress)


def _manifest_bboxes(dataset: LandmarkDataset, split: str) -> dict[str, BBox]:
    frame = dataset.manifest(split)
    cols = ["bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"]
    boxes: dict[str, BBox] = {}
    for row in frame[["image_id", *cols]].itertuples(index=False):
        values = tuple(float(v) for v in row[1:])
        if all(math.isfinite(v) for v in values):
            boxes[str(row[0])] = (values[0], values[1], values[2], values[3])
    return boxes


def query_bboxes(dataset: LandmarkDataset, split: str) -> dict[str, BBox]:
    """Crop boxes of a split's images: the manifest's bbox columns, then the retrieval ground truth's boxes."""
    boxes = _manifest_bboxes(dataset, split)
    if split == "test":
        boxes.update({q.query_id: q.bbox for q in dataset.retrieval if q.bbox is not None})
    return boxes


def extract(
    cfg: Config,
    data_dir: Path,
    out_dir: Path,
    *,
    splits: Sequence[str] = (),
    fmt: str = "auto",
    progress: bool = True,
) -> dict[str, int]:
    """Global descriptors of every usable image of each split into ``out_dir/<split>/`` (resumable).

    Test-split queries with a bounding box are cropped to it first (Revisited Oxford/Paris protocol).

    Returns:
        split -> number of images newly extracted.
    """
    import torch

    from landmark.data.formats import read_dataset
    from landmark.features.global_desc import ImageItem, extract_to_store
    from landmark.models.global_model import create_global_model

    dataset = read_dataset(Path(data_dir), fmt)  # type: ignore[arg-type]
    chosen = list(splits) or list(dataset.splits)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = create_global_model(cfg.model)
    meta = {"model": config_to_dict(cfg.model), "extract": config_to_dict(cfg.extract)}
    added: dict[str, int] = {}
    for split in chosen:
        frame = dataset.manifest(split)
        ok = frame[frame["status"] == "ok"]
        boxes = query_bboxes(dataset, split)
        paths = dataset.image_paths(split)
        items = [
            ImageItem(image_id, paths[image_id], boxes.get(image_id), width, height)
            for image_id, width, height in zip(
                ok["image_id"].astype(str), ok["width"].astype(int), ok["height"].astype(int), strict=True
            )
        ]
        added[split] = extract_to_store(
            model, items, cfg.extract, device, Path(out_dir) / split, meta=meta, progress=progress
        )
    return added


def retrieval_ranks(db: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Full ranking of the database for each query: (n_database, n_queries), best first (revisitop layout)."""
    from landmark.index import build_exact_index, search

    _, idx = search(build_exact_index(db), queries, k=db.shape[0])
    return idx.T.copy()


def gnd_indices(truths: Sequence[QueryTruth], db_ids: Sequence[str]) -> list[dict[str, list[int]]]:
    """Convert id-based query truths into the index-based ``gnd`` lists of the revisitop protocol."""
    position = {image_id: i for i, image_id in enumerate(db_ids)}

    def indices(ids: Sequence[str]) -> list[int]:
        return [position[i] for i in ids if i in position]

    return [{"easy": indices(t.easy), "hard": indices(t.hard), "junk": indices(t.junk)} for t in truths]


def revisitop_metrics(
    ranks: np.ndarray, gnd: Sequence[dict[str, list[int]]], kappas: Sequence[int]
) -> dict[str, Any]:
    """Revisited-protocol metrics as a JSON-ready dict, mAP and mP@k in percent."""
    from landmark.metrics import revisitop_map

    results = revisitop_map(ranks, gnd, kappas)
    return {
        protocol: {
            "mAP": round(100.0 * r.map, 3),
            **{f"mP@{k}": round(100.0 * v, 3) for k, v in r.mp_at_k.items()},
            "queries": r.queries,
        }
        for protocol, r in results.items()
    }


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def evaluate(
    cfg: Config, data_dir: Path, features_dir: Path, out_dir: Path, *, fmt: str = "auto"
) -> dict[str, Any]:
    """Retrieve the test queries against the index split and score them; writes ``out_dir/metrics.json``.

    Uses the revisited protocol (easy/medium/hard mAP, mP@k) when the dataset carries per-query ground truth.
    """
    from landmark.data.formats import read_dataset
    from landmark.features.store import load_features

    dataset = read_dataset(Path(data_dir), fmt)  # type: ignore[arg-type]
    if not dataset.retrieval:
        raise ValueError(f"{data_dir} has no retrieval ground truth (gnd_*.pkl): nothing to evaluate")
    db_ids, db = load_features(Path(features_dir) / "index", dataset.ok_ids("index"))
    query_ids, queries = load_features(Path(features_dir) / "test", [q.query_id for q in dataset.retrieval])
    ranks = retrieval_ranks(db, queries)
    metrics: dict[str, Any] = {
        "revisitop": revisitop_metrics(ranks, gnd_indices(dataset.retrieval, db_ids), cfg.evaluate.kappas),
        "n_database": len(db_ids),
        "n_queries": len(query_ids),
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.save(out_dir / "ranks.npy", ranks)
    _write_json(out_dir / "metrics.json", metrics)
    return metrics
