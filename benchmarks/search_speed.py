"""Search speed and accuracy of exact vs IVF-PQ FAISS indexes, and the per-query cost of each re-ranking step.

    python benchmarks/search_speed.py [--sizes 100000,1000000] [--queries 500] [--dim 512] [--set index.nprobe=64]

Vectors are clustered random unit vectors (so an inverted file has structure to exploit): ``--clusters`` centres,
each vector a centre plus Gaussian noise, L2-normalised. For every size: build time, queries/s and recall@100 of
IVF-PQ (nlist, pq_m, pq_nbits, nprobe, train_size from params.yaml's ``index`` section; trained once on a
sample of the same distribution, then filled per size) against exact search. The GPU is used
when faiss sees one (faiss-gpu); on CPU-only machines that column is absent. Then the re-ranking steps are timed
on a smaller world (``--rerank-db`` index vectors, as many train vectors). Writes
benchmarks/results/search_speed.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_config_args, write_result

from landmark.config import IndexConfig, RerankConfig, load_config
from landmark.retrieval.index import (
    build_exact_index,
    build_in_memory,
    create_empty_index,
    gpu_available,
    search,
    to_search_device,
    train_index,
)
from landmark.retrieval.recognize import neighbour_labels, predict_labels
from landmark.retrieval.rerank import (
    alpha_query_expansion,
    database_side_augmentation,
    discriminative_query_expansion,
    dqe_negatives,
    insert_step,
    sort_step,
    spatial_rerank,
)

REPO = Path(__file__).resolve().parents[1]
TOP = 100


def clustered_vectors(
    n: int, dim: int, centres: np.ndarray, noise: float, seed: int, chunk: int = 100_000
) -> tuple[np.ndarray, np.ndarray]:
    """(vectors (n, dim) float32 unit rows, cluster of each (n,)), generated chunk by chunk.

    Each vector is a random centre plus Gaussian noise whose per-dimension scale is drawn uniformly from
    [noise / 2, 3 noise / 2], so members of a cluster are graded (the ones near the centre are near each other).
    """
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    labels = rng.integers(0, centres.shape[0], n)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        scale = rng.uniform(0.5 * noise, 1.5 * noise, (e - s, 1)).astype(np.float32)
        x = centres[labels[s:e]] + scale * rng.standard_normal((e - s, dim), dtype=np.float32)
        out[s:e] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out, labels


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def recall_at(found: np.ndarray, exact: np.ndarray, k: int) -> float:
    """Mean share of the exact top-k (first k columns of ``exact``) found anywhere in ``found``'s rows."""
    return float(np.mean([len(set(f) & set(e[:k])) / k for f, e in zip(found, exact, strict=True)]))


def train_ivfpq(args: argparse.Namespace, cfg: IndexConfig, centres: np.ndarray) -> tuple[Any, float]:
    """An empty IVF-PQ index trained once on ``cfg.train_size`` vectors of the same distribution, and seconds."""
    sample, _ = clustered_vectors(cfg.train_size, args.dim, centres, args.noise, seed=9)
    template = create_empty_index("ivfpq", args.dim, cfg)
    _, seconds = timed(lambda: train_index(template, "ivfpq", sample, cfg))
    return template, seconds


def search_benchmark(
    size: int, args: argparse.Namespace, template: Any, centres: np.ndarray
) -> dict[str, Any]:
    """Flat and IVF-PQ over ``size`` vectors: add time, queries/s, recall@100 of IVF-PQ against flat."""
    db, _ = clustered_vectors(size, args.dim, centres, args.noise, seed=1)
    queries, _ = clustered_vectors(args.queries, args.dim, centres, args.noise, seed=2)
    row: dict[str, Any] = {"size": size, "queries": args.queries}
    flat, build_flat = timed(lambda: build_exact_index(db))
    (_, exact), search_flat = timed(lambda: search(flat, queries, TOP))
    row["flat"] = {
        "add_s": round(build_flat, 2),
        "qps": round(args.queries / search_flat, 1),
        "recall@100": 1.0,
    }
    print(f"{size}: flat {row['flat']}", flush=True)
    ivf = faiss.clone_index(template)
    _, add_ivf = timed(lambda: ivf.add(db))
    (_, approx), search_ivf = timed(lambda: search(ivf, queries, TOP))
    row["ivfpq"] = {
        "add_s": round(add_ivf, 2),
        "qps": round(args.queries / search_ivf, 1),
        "recall@100": round(recall_at(approx, exact, TOP), 4),
        "top10_recall@100": round(recall_at(approx, exact, 10), 4),
    }
    print(f"{size}: ivfpq {row['ivfpq']}", flush=True)
    if gpu_available():
        for name, index in (("flat", flat), ("ivfpq", ivf)):
            gpu_index = to_search_device(index, "auto")
            (_, found), seconds = timed(lambda gpu_index=gpu_index: search(gpu_index, queries, TOP))
            row[f"gpu_{name}"] = {
                "qps": round(args.queries / seconds, 1),
                "recall@100": round(recall_at(found, exact, TOP), 4),
            }
    return row


def per_query_ms(seconds: float, n: int) -> float:
    return round(1000.0 * seconds / n, 4)


def rerank_benchmark(args: argparse.Namespace, rerank: RerankConfig, centres: np.ndarray) -> dict[str, Any]:
    """Per-query (or per index vector, for offline steps) milliseconds of each re-ranking step."""
    n = args.rerank_db
    db, _ = clustered_vectors(n, args.dim, centres, args.noise, seed=3)
    train, train_labels = clustered_vectors(n, args.dim, centres, args.noise, seed=4)
    queries, _ = clustered_vectors(args.queries, args.dim, centres, args.noise, seed=5)
    nq = queries.shape[0]
    flat = IndexConfig(kind="flat", gpu="off")
    db_index = build_in_memory(db, flat)
    cost: dict[str, Any] = {"db": n, "train": n, "queries": nq}
    (db_sims, db_idx), s_nn = timed(lambda: db_index.search(db, rerank.dba_n + 1))
    _, s_dba = timed(lambda: database_side_augmentation(db, db_sims, db_idx, rerank.dba_n, rerank.dba_alpha))
    cost["dba_ms_per_index_vector_offline"] = per_query_ms(s_nn + s_dba, n)
    (sims, ranked), s_search = timed(lambda: db_index.search(queries, TOP))
    cost["first_search_ms"] = per_query_ms(s_search, nq)
    expanded, s_qe = timed(
        lambda: alpha_query_expansion(queries, db, sims, ranked, rerank.qe_n, rerank.qe_alpha)
    )
    _, s_qe_search = timed(lambda: db_index.search(expanded, TOP))
    cost["alpha_qe_ms"] = per_query_ms(s_qe + s_qe_search, nq)
    negatives = dqe_negatives(n, rerank.dqe_negatives, 0)
    dqe, s_dqe = timed(
        lambda: discriminative_query_expansion(
            queries, db, ranked, rerank.qe_n, negatives, rerank.dqe_regularization
        )
    )
    _, s_dqe_search = timed(lambda: db_index.search(dqe, TOP))
    cost["dqe_ms"] = per_query_ms(s_dqe + s_dqe_search, nq)
    ids = [str(i) for i in range(n)]

    def stub(query_id: str, candidate_ids: list[str]) -> np.ndarray:
        return np.zeros(len(candidate_ids))

    _, s_spatial = timed(lambda: spatial_rerank(ranked, [str(i) for i in range(nq)], ids, stub, TOP))
    cost["spatial_hook_overhead_ms"] = per_query_ms(s_spatial, nq)
    train_index = build_in_memory(train, flat)
    k = rerank.label_k
    ((t_sims, t_idx), s_qlab) = timed(lambda: train_index.search(queries, k))
    q_pred = predict_labels(t_sims, neighbour_labels(t_idx, train_labels), k)
    (d_sims, d_idx), s_dlab = timed(lambda: train_index.search(db, k))
    d_pred, s_dvote = timed(lambda: predict_labels(d_sims, neighbour_labels(d_idx, train_labels), k))
    cost["label_prediction_ms"] = per_query_ms(s_qlab, nq)
    cost["index_label_prediction_ms_per_index_vector_offline"] = per_query_ms(s_dlab + s_dvote, n)
    sorted_lists, s_sort = timed(lambda: sort_step(ranked, q_pred.labels, d_pred.labels))
    cost["sort_step_ms"] = per_query_ms(s_sort, nq)
    _, s_insert = timed(
        lambda: insert_step(
            sorted_lists, q_pred.labels, d_pred.labels, d_pred.confidence, rerank.insert_threshold, TOP
        )
    )
    cost["insert_step_ms"] = per_query_ms(s_insert, nq)
    print(f"re-ranking cost {cost}", flush=True)
    return cost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated index sizes")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument(
        "--clusters", type=int, default=10000, help="cluster centres of the synthetic vectors"
    )
    parser.add_argument("--noise", type=float, default=0.04, help="mean per-dimension noise around a centre")
    parser.add_argument(
        "--rerank-db", type=int, default=20000, help="index (and train) size for re-ranking costs"
    )
    add_config_args(parser)
    parser.add_argument("--out", type=Path, help="result file (default benchmarks/results/search_speed.json)")
    args = parser.parse_args()
    cfg = load_config(args.params, args.overrides)
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((args.clusters, args.dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    template, train_s = train_ivfpq(args, cfg.index, centres)
    print(f"IVF-PQ trained on {cfg.index.train_size} vectors in {train_s:.1f}s", flush=True)
    rows = [search_benchmark(size, args, template, centres) for size in sizes]
    cost = rerank_benchmark(args, cfg.rerank, centres)
    write_result(
        "search_speed",
        {
            "dim": args.dim,
            "clusters": args.clusters,
            "noise": args.noise,
            "top": TOP,
            "index_config": {
                "nlist": cfg.index.nlist,
                "pq_m": cfg.index.pq_m,
                "pq_nbits": cfg.index.pq_nbits,
                "nprobe": cfg.index.nprobe,
                "train_size": cfg.index.train_size,
                "bytes_per_vector": cfg.index.pq_m * cfg.index.pq_nbits // 8,
            },
            "ivfpq_train_s": round(train_s, 2),
            "gpu": gpu_available(),
            "search": rows,
            "rerank_cost": cost,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
