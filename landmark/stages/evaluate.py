"""Stage ``evaluate``: retrieve the test queries against the index split and score them."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from landmark.config import Config
from landmark.data.groundtruth import QueryTruth


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
