"""Cleaning throughput (train images per minute) at 1k, 10k and 100k images, from cached synthetic features.

Global descriptors: clustered 512-d unit vectors, ``--per-class`` images per landmark (the synthetic default's
16). Local features: the real SIFT features of the default world's train images (``landmark local`` output of
``benchmarks/clean_quality.py``), replicated with seeded perturbations (locations +-1 px, descriptor noise):
image j of synthetic landmark c reuses a real image of real landmark c mod 40, so same-label pairs are real
same-landmark pairs with their real match and inlier statistics (the injected wrong-label and junk images too).

The cleaning runs as the stage runs it: ``StoreVerifier.pair_counts`` with ``clean.workers`` processes that read
the store themselves, pairs rejected before RANSAC below ``clean.min_inliers`` matches, neighbours verified
best first until ``clean.min_verified``. Up to ``--full-max`` images everything is measured end to end
(:func:`landmark.cleaning.clean.clean_train_set`). Above it (100k: the kNN alone is ~5e12 flops on 2 busy cores), a seeded
sample of whole classes is cleaned: their kNN against the full index and their verification are timed and
projected linearly in the number of images. Same-label neighbours never leave their class, so a class's
verification work does not depend on the other classes: the sample is exact per class, and every class of this
world is built alike. The JSON keeps measured and projected numbers apart, with the load average (the machine is
shared; other engineers' jobs were running).

    python benchmarks/clean_scale.py [--sizes 1000 10000 100000] [--sample-classes 200]
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import config_parser, write_result

from landmark.cleaning.clean import (
    clean_train_set,
    neighbours_of_rows,
    same_label_candidates,
    unique_pairs,
    unit_rows,
    verify_in_rank_order,
)
from landmark.cleaning.verify import StoreFeatures, StoreVerifier
from landmark.config import Config, load_config
from landmark.data.formats import read_dataset
from landmark.features.local import LocalFeatures
from landmark.normalize import l2_normalize

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "build" / "bench" / "clean"
DIM = 512


@dataclasses.dataclass(frozen=True)
class PerturbedStore:
    """Features of synthetic ids ``img<N>``: seeded, perturbed copies of a small real store's images.

    Image N has label N // per_class and copies image (N % per_class) of real landmark label % len(pools). Pickles
    as the store's path and the small pool table, so worker processes read the store themselves.
    """

    base: StoreFeatures
    pools: tuple[tuple[str, ...], ...]  # real image ids per real landmark
    per_class: int

    def base_id(self, image_id: str) -> str:
        i = int(image_id[3:])
        pool = self.pools[(i // self.per_class) % len(self.pools)]
        return pool[(i % self.per_class) % len(pool)]

    def load(self, image_id: str) -> LocalFeatures:
        f = self.base.load(self.base_id(image_id))
        rng = np.random.default_rng(zlib.crc32(image_id.encode()))
        return LocalFeatures(
            locations=f.locations + rng.normal(0, 1.0, f.locations.shape).astype(np.float32),
            scales=f.scales,
            scores=f.scores,
            descriptors=l2_normalize(f.descriptors + rng.normal(0, 0.02, f.descriptors.shape)),
        )


def synthetic_world(n: int, per_class: int, seed: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Ids, labels and clustered global descriptors."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) // per_class
    centroids = rng.normal(size=(labels[-1] + 1, DIM)).astype(np.float32)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    desc = centroids[labels] + rng.normal(0, 0.9 / np.sqrt(DIM), (n, DIM)).astype(np.float32)
    return [f"img{i:07d}" for i in range(n)], labels, desc


def measured_size(
    cfg: Config, ids: list[str], labels: np.ndarray, desc: np.ndarray, verifier: StoreVerifier
) -> dict[str, Any]:
    """The whole cleaning, end to end."""
    start = time.perf_counter()
    cleaned = clean_train_set(ids, labels, desc, verifier.pair_counts, cfg.clean)
    seconds = time.perf_counter() - start
    n = len(ids)
    return {
        "mode": "measured end to end (clean_train_set)",
        "seconds": round(seconds, 2),
        "stage_seconds": cleaned.seconds,
        "directed_pairs": cleaned.directed_pairs,
        "unique_pairs": cleaned.unique_pairs,
        "verified_pairs": cleaned.verified_pairs,
        "verify_rounds": cleaned.verify_rounds,
        "verified_pairs_per_image": round(cleaned.verified_pairs / n, 3),
        "kept_share": round(len(cleaned.kept_ids) / n, 4),
        "verify_pairs_per_s": round(cleaned.verified_pairs / max(cleaned.seconds["verify"], 1e-9), 1),
        "images_per_minute": round(60 * n / seconds, 1),
        "knn_share_of_time": round(cleaned.seconds["knn"] / seconds, 4),
    }


def sampled_size(
    cfg: Config, ids: list[str], labels: np.ndarray, desc: np.ndarray, verifier: StoreVerifier,
    sample_classes: int,
) -> dict[str, Any]:  # fmt: skip
    """kNN (against the full index) and verification of a seeded sample of whole classes, projected to all."""
    from landmark.retrieval.index import build_exact_index

    n = len(ids)
    classes = np.unique(labels)
    chosen = np.sort(
        np.random.default_rng(0).choice(classes, min(sample_classes, len(classes)), replace=False)
    )
    rows = np.flatnonzero(np.isin(labels, chosen))
    x = unit_rows(desc)
    start = time.perf_counter()
    index = build_exact_index(x)
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    parts = []
    for chunk in np.array_split(rows, max(1, len(rows) // cfg.clean.chunk_size)):
        _, idx = neighbours_of_rows(index, x, chunk, cfg.clean.k)
        parts.append(same_label_candidates(idx, labels, chunk, cfg.clean.max_same_label))
    candidates = np.concatenate(parts)
    knn_s = time.perf_counter() - start
    local = np.full(n, -1, np.int64)  # same-label neighbours stay inside the sampled classes
    local[rows] = np.arange(len(rows))
    sub = np.where(candidates >= 0, local[np.maximum(candidates, 0)], -1)
    start = time.perf_counter()
    _, verified, rounds = verify_in_rank_order(sub, [ids[r] for r in rows], verifier.pair_counts, cfg.clean)
    verify_s = time.perf_counter() - start
    scale = n / len(rows)
    knn_projected = build_s + knn_s * scale
    verify_projected = verify_s * scale
    total = knn_projected + verify_projected
    return {
        "mode": "whole classes sampled: their kNN against the full index and their verification, projected",
        "sampled_classes": len(chosen),
        "sampled_images": len(rows),
        "index_build_seconds": round(build_s, 2),
        "knn_sample_seconds": round(knn_s, 2),
        "knn_seconds_projected": round(knn_projected, 1),
        "directed_pairs_sample": int((sub >= 0).sum()),
        "unique_pairs_sample": len(unique_pairs(sub)),
        "verified_pairs_sample": verified,
        "verify_rounds": rounds,
        "verified_pairs_per_image": round(verified / len(rows), 3),
        "sample_verify_seconds": round(verify_s, 2),
        "verify_pairs_per_s": round(verified / max(verify_s, 1e-9), 1),
        "verify_seconds_projected": round(verify_projected, 1),
        "seconds_projected": round(total, 1),
        "images_per_minute_projected": round(60 * n / total, 1),
        "knn_share_of_time": round(knn_projected / total, 4),
    }


def main() -> None:
    parser = config_parser(__doc__, WORK)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--per-class", type=int, default=16)
    parser.add_argument("--full-max", type=int, default=10_000, help="measure end to end up to this many")
    parser.add_argument("--sample-classes", type=int, default=200, help="classes cleaned above --full-max")
    args = parser.parse_args()
    cfg = load_config(args.params, args.overrides)
    base = StoreFeatures([args.work / "local" / "train"])
    frame = read_dataset(args.work / "synth").manifest("train")
    real: dict[int, list[str]] = {}
    for image_id, label in zip(frame["image_id"], frame["landmark_id"], strict=True):
        if image_id in base:
            real.setdefault(int(label), []).append(str(image_id))
    store = PerturbedStore(base, tuple(tuple(real[k]) for k in sorted(real)), args.per_class)
    verify_cfg = dataclasses.replace(cfg.verify, workers=cfg.clean.workers)
    verifier = StoreVerifier(store, verify_cfg, reject_below=cfg.clean.min_inliers)
    sample_ids = [i for pool in store.pools for i in pool][:100]
    result: dict[str, Any] = {
        "config": {"clean": cfg.clean.__dict__, "verify": verify_cfg.__dict__, "local": cfg.local.__dict__},
        "per_class": args.per_class,
        "global_dim": DIM,
        "local_features_per_image": round(float(np.mean([len(base.load(i)) for i in sample_ids])), 1),
        "note": "2 shared cores: other engineers' jobs ran at the same time (load averages per size)",
        "sizes": {},
    }
    for n in args.sizes:
        ids, labels, desc = synthetic_world(n, args.per_class, seed=n)
        verifier.pair_counts([(ids[0], ids[1])] * 4)  # warm-up (first OpenCV/BLAS calls), not timed
        row: dict[str, Any] = {"images": n, "load_average_at_start": os.getloadavg()}
        if n <= args.full_max:
            row.update(measured_size(cfg, ids, labels, desc, verifier))
        else:
            row.update(sampled_size(cfg, ids, labels, desc, verifier, args.sample_classes))
        row["load_average_at_end"] = os.getloadavg()
        result["sizes"][str(n)] = row
        print(row, flush=True)
    write_result("clean_scale", result)


if __name__ == "__main__":
    main()
