"""Cleaning throughput (train images per minute) at 1k, 10k and 100k images, from cached synthetic features.

Global descriptors: clustered 512-d unit vectors, ``--per-class`` images per landmark (the synthetic default's
16). Local features: the real SIFT features of the default world's train images (``landmark local`` output of
``benchmarks/clean_quality.py``), replicated with seeded perturbations (locations +-1 px, descriptor noise):
image j of synthetic landmark c reuses a real image of real landmark c mod 40, so same-label pairs are real
same-landmark pairs with their real match and inlier statistics.

Up to ``--full-knn-max`` images the kNN step (exact FAISS inner product, k from params, chunked) and the pair
deduplication run in full; above it (100k: ~5e12 flops on 2 busy cores) the kNN of a seeded query sample is
timed against the full index and projected linearly in the number of queries. Verification runs in full up to
``--full-verify-max`` unique pairs; above that the candidate pairs of a seeded sample of queries are verified
and the total is projected from the measured pairs/s. The JSON keeps measured and projected numbers apart.

    python benchmarks/clean_scale.py [--sizes 1000 10000 100000] [--sample-queries 100]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import config_parser, write_result

from landmark.clean import candidate_table, clean_train_set, unique_pairs
from landmark.config import Config, load_config
from landmark.data.formats import read_dataset
from landmark.features.local import LocalFeatures, l2_normalize_rows
from landmark.features.local_store import LocalFeatureReader
from landmark.stages.clean import StorePairVerifier

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "build" / "bench" / "clean"
DIM = 512


class PerturbedReader:
    """A reader-like view of synthetic ids ``img<N>`` over a small real store: seeded, perturbed copies."""

    def __init__(self, base: LocalFeatureReader, base_of: dict[str, str]) -> None:
        self.base, self.base_of, self.meta = base, base_of, base.meta
        self.root = base.root

    def __contains__(self, image_id: object) -> bool:
        return image_id in self.base_of

    def load(self, image_id: str) -> LocalFeatures:
        f = self.base.load(self.base_of[image_id])
        rng = np.random.default_rng(zlib.crc32(image_id.encode()))
        return LocalFeatures(
            locations=f.locations + rng.normal(0, 1.0, f.locations.shape).astype(np.float32),
            scales=f.scales,
            scores=f.scores,
            descriptors=l2_normalize_rows(f.descriptors + rng.normal(0, 0.02, f.descriptors.shape)),
        )


def synthetic_world(
    n: int, per_class: int, real: dict[int, list[str]], seed: int
) -> tuple[list[str], np.ndarray, np.ndarray, dict[str, str]]:
    """Ids, labels, clustered global descriptors and the real image each synthetic image copies."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) // per_class
    centroids = rng.normal(size=(labels[-1] + 1, DIM)).astype(np.float32)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    desc = centroids[labels] + rng.normal(0, 0.9 / np.sqrt(DIM), (n, DIM)).astype(np.float32)
    ids = [f"img{i:07d}" for i in range(n)]
    real_labels = sorted(real)
    base_of = {}
    for i, image_id in enumerate(ids):
        pool = real[real_labels[labels[i] % len(real_labels)]]
        base_of[image_id] = pool[(i % per_class) % len(pool)]
    return ids, labels, desc, base_of


def sampled_size(
    args: argparse.Namespace, cfg: Config, row: dict[str, Any], ids: list[str], labels: np.ndarray,
    desc: np.ndarray, verifier: StorePairVerifier, smaller: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """kNN of a seeded query sample against the full index and verification of their candidate pairs, both
    timed and projected to all N queries (the pair count too, with the unique/directed ratio measured in full
    at the largest smaller size)."""
    from landmark.clean import l2_normalized, same_label_candidates
    from landmark.index import build_exact_index, search

    n = len(ids)
    x = l2_normalized(desc)
    sample = np.sort(np.random.default_rng(0).choice(n, size=min(args.knn_sample_queries, n), replace=False))
    start = time.perf_counter()
    index = build_exact_index(x)
    candidates = np.concatenate(
        [
            same_label_candidates(
                search(index, x[rows], cfg.clean.k + 1)[1][:, 1:], labels, rows, cfg.clean.max_same_label
            )
            for rows in np.array_split(sample, max(1, len(sample) // cfg.clean.chunk_size))
        ]
    )
    knn_s = time.perf_counter() - start
    full_rows = [r for r in smaller.values() if "unique_pairs" in r]
    ratio = full_rows[-1]["unique_pairs"] / full_rows[-1]["directed_pairs"] if full_rows else 0.5
    directed = (candidates >= 0).sum() / len(sample) * n
    verify_rows = sample[: args.sample_queries]
    pairs = [(ids[q], ids[c]) for q, row_c in zip(verify_rows, candidates[: len(verify_rows)], strict=True)
             for c in row_c if c >= 0]  # fmt: skip
    start = time.perf_counter()
    verifier(pairs)
    verify_s = time.perf_counter() - start
    rate = len(pairs) / verify_s
    knn_projected = knn_s * n / len(sample)
    unique = directed * ratio
    row.update(
        mode="kNN timed on a seeded query sample against the full index; verification on a sample; projected",
        knn_sampled_queries=len(sample),
        knn_sample_seconds=round(knn_s, 2),
        knn_seconds_projected=round(knn_projected, 1),
        directed_pairs_projected=int(directed),
        unique_pairs_projected=int(unique),
        sampled_pairs=len(pairs),
        sample_verify_seconds=round(verify_s, 2),
        verify_pairs_per_s=round(rate, 1),
        verify_seconds_projected=round(unique / rate, 1),
    )
    row["seconds_projected"] = round(knn_projected + unique / rate, 1)
    row["images_per_minute_projected"] = round(60 * n / row["seconds_projected"], 1)
    row["knn_share_of_time"] = round(knn_projected / row["seconds_projected"], 4)
    return row


def main() -> None:
    parser = config_parser(__doc__, WORK)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--per-class", type=int, default=16)
    parser.add_argument(
        "--full-verify-max", type=int, default=10_000, help="verify all pairs up to this many"
    )
    parser.add_argument("--sample-queries", type=int, default=200, help="queries whose pairs are verified")
    parser.add_argument("--full-knn-max", type=int, default=20_000, help="kNN of every query up to this size")
    parser.add_argument("--knn-sample-queries", type=int, default=8192)
    args = parser.parse_args()
    cfg = load_config(args.params, args.overrides)
    base = LocalFeatureReader(args.work / "local" / "train")
    frame = read_dataset(args.work / "synth").manifest("train")
    real: dict[int, list[str]] = {}
    for image_id, label in zip(frame["image_id"], frame["landmark_id"], strict=True):
        if image_id in base:
            real.setdefault(int(label), []).append(str(image_id))
    verify_cfg = dataclasses.replace(cfg.verify, workers=cfg.clean.workers)
    result: dict[str, Any] = {
        "config": {"clean": cfg.clean.__dict__, "verify": verify_cfg.__dict__, "local": cfg.local.__dict__},
        "per_class": args.per_class,
        "global_dim": DIM,
        "local_features_per_image": round(float(np.mean([len(base.load(i)) for i in base.ids()[:100]])), 1),
        "sizes": {},
    }
    for n in args.sizes:
        ids, labels, desc, base_of = synthetic_world(n, args.per_class, real, seed=n)
        verifier = StorePairVerifier(PerturbedReader(base, base_of), verify_cfg)
        verifier([(ids[0], ids[1])] * 32)  # warm-up (lazy imports, first OpenCV/BLAS calls), not timed
        row: dict[str, Any] = {"images": n}
        if n > args.full_knn_max:
            result["sizes"][str(n)] = sampled_size(
                args, cfg, row, ids, labels, desc, verifier, result["sizes"]
            )
            print(row, flush=True)
            continue
        start = time.perf_counter()
        candidates = candidate_table(desc, labels, cfg.clean)
        pairs = unique_pairs(candidates)
        row["knn_and_pairs_seconds"] = round(time.perf_counter() - start, 2)
        row["directed_pairs"] = int((candidates >= 0).sum())
        row["unique_pairs"] = len(pairs)
        if len(pairs) <= args.full_verify_max:
            start = time.perf_counter()
            cleaned = clean_train_set(ids, labels, desc, verifier, cfg.clean)
            seconds = time.perf_counter() - start
            row["mode"] = "measured end to end (clean_train_set)"
            row["seconds"] = round(seconds, 2)
            row["stage_seconds"] = cleaned.seconds
            row["kept_share"] = round(len(cleaned.kept_ids) / n, 4)
            row["verify_pairs_per_s"] = round(cleaned.unique_pairs / max(cleaned.seconds["verify"], 1e-9), 1)
            row["images_per_minute"] = round(60 * n / seconds, 1)
        else:
            rng = np.random.default_rng(0)
            sample = rng.choice(n, size=min(args.sample_queries, n), replace=False)
            sampled = np.unique(
                np.concatenate([pairs[(pairs[:, 0] == q) | (pairs[:, 1] == q)] for q in sample]), axis=0
            )
            start = time.perf_counter()
            verifier([(ids[a], ids[b]) for a, b in sampled])
            verify_s = time.perf_counter() - start
            rate = len(sampled) / verify_s
            projected = len(pairs) / rate
            row["mode"] = (
                "kNN + dedup measured in full; verification measured on a seeded query sample, projected"
            )
            row["sampled_queries"] = len(sample)
            row["sampled_pairs"] = len(sampled)
            row["sample_verify_seconds"] = round(verify_s, 2)
            row["verify_pairs_per_s"] = round(rate, 1)
            row["verify_seconds_projected"] = round(projected, 1)
            row["seconds_projected"] = round(row["knn_and_pairs_seconds"] + projected, 1)
            row["images_per_minute_projected"] = round(60 * n / row["seconds_projected"], 1)
        row["knn_share_of_time"] = round(
            row["knn_and_pairs_seconds"] / row.get("seconds", row.get("seconds_projected", 1.0)), 4
        )
        result["sizes"][str(n)] = row
        print(row, flush=True)
    write_result("clean_scale", result)


if __name__ == "__main__":
    main()
