"""Spatial verification speed and quality on real photos (IMC 2022 sagrada_familia), ours vs a reference.

On SIFT features (``landmark.features.local``, backend ``sift``) of a seeded subset of pairs:
- positives: sagrada_familia pairs with covisibility > ``--min-covisibility`` (ground-truth F known);
- negatives: a sagrada_familia photo with a brandenburg_gate or grand_place_brussels photo.

Reported for our verifier (``landmark.cleaning.verify.verify_pairs`` with the default ``verify`` settings: int8-product
matcher + a seeded USAC fit, MSAC scoring; one process) and for
the reference (scipy cKDTree nearest neighbour with distance <= 0.8 + scikit-image
``ransac(AffineTransform, min_samples=3, residual_threshold=20, max_trials=1000)``): pairs/s, ROC AUC of the
inlier counts (positives vs negatives) and the median Sampson error (px^2) of inliers of positive pairs under
the ground-truth F. Also SIFT extraction images/s, local-store bytes per image, and the store-backed path
the pipeline runs (:class:`~landmark.cleaning.verify.StoreVerifier`, chunks carry ids) on ``--store-pairs``
random pairs of the stored photos, in one process and on ``--parallel-workers`` processes.

    python benchmarks/verify_speed.py [--positives 60] [--negatives 60] [--reference-pairs 40] [--repeats 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result

from landmark.cleaning.verify import StoreVerifier, sampson_error, verify_pairs
from landmark.config import VerifyConfig
from landmark.data.imc import read_imc_pairs
from landmark.features.local import LocalFeatures, create_local_extractor
from landmark.features.local_store import LocalFeatureWriter, local_bytes_per_image

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "imc2022-landmarks"
SCENE = "sagrada_familia"
OTHER_SCENES = ("brandenburg_gate", "grand_place_brussels")


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties count one half)."""
    from scipy.stats import rankdata

    scores, labels = np.asarray(scores, np.float64), np.asarray(labels, bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def reference_inliers(f1: LocalFeatures, f2: LocalFeatures, seed: int) -> np.ndarray:
    """The reference: cKDTree NN with distance threshold 0.8, then skimage affine RANSAC; inlier mask per f1 row
    (False for unmatched rows) and the matched rows of f2 (-1 unmatched)."""
    from scipy.spatial import cKDTree
    from skimage.measure import ransac
    from skimage.transform import AffineTransform

    matched = np.full(len(f1), -1, np.int64)
    if len(f1) == 0 or len(f2) == 0:
        return matched
    dist, idx = cKDTree(f2.descriptors).query(f1.descriptors, k=1, distance_upper_bound=0.8)
    rows = np.flatnonzero(np.isfinite(dist))
    if len(rows) < 3:
        return matched
    src, dst = f1.locations[rows].astype(np.float64), f2.locations[idx[rows]].astype(np.float64)
    _, mask = ransac(
        (src, dst), AffineTransform, min_samples=3, residual_threshold=20, max_trials=1000, rng=seed
    )
    if mask is None:
        return matched
    matched[rows[mask]] = idx[rows[mask]]
    return matched


def gray_image(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise ValueError(f"cannot decode {path}")
    return image


def choose_pairs(
    root: Path, positives: int, negatives: int, min_covisibility: float, seed: int
) -> tuple[list[tuple[Path, Path]], np.ndarray, list[np.ndarray | None]]:
    rng = np.random.default_rng(seed)
    scene = root / SCENE
    table = read_imc_pairs(scene)
    table = table[table["covisibility"] > min_covisibility]
    take = rng.choice(len(table), size=min(positives, len(table)), replace=False)
    pairs: list[tuple[Path, Path]] = []
    fundamentals: list[np.ndarray | None] = []
    for row in table.iloc[np.sort(take)].itertuples():
        pairs.append((scene / "images" / f"{row.id1}.jpg", scene / "images" / f"{row.id2}.jpg"))
        fundamentals.append(np.asarray(row.F, np.float64))
    own = sorted((scene / "images").glob("*.jpg"))
    others = sorted(p for s in OTHER_SCENES for p in (root / s / "images").glob("*.jpg"))
    for _ in range(negatives):
        pairs.append((own[rng.integers(len(own))], others[rng.integers(len(others))]))
        fundamentals.append(None)
    labels = np.array([f is not None for f in fundamentals])
    return pairs, labels, fundamentals


def median_sampson(
    features: dict[Path, LocalFeatures],
    pairs: Sequence[tuple[Path, Path]],
    fundamentals: Sequence[np.ndarray | None],
    correspondences: Sequence[tuple[np.ndarray, np.ndarray]],
) -> float:
    errors = []
    for (a, b), F, (rows1, rows2) in zip(pairs, fundamentals, correspondences, strict=True):
        if F is not None and len(rows1):
            errors.append(sampson_error(F, features[a].locations[rows1], features[b].locations[rows2]))
    return float(np.median(np.concatenate(errors))) if errors else float("nan")


# the reference takes ~0.2 s a pair, ours ~0.05 s for all 40: each method runs in blocks of comparable length (ours
# PASSES times over every pair, then 1/ROUNDS of the reference's pairs), alternating, so both are timed in their
# steady state (as a cleaning run's thousands of pairs are) and load from other jobs falls on both. Ours' earlier
# single pass per round measured it over ~0.25 s in all, and single repeats moved by +-10%.
ROUNDS, PASSES = 8, 10


def write_store(root: Path, features: Sequence[LocalFeatures]) -> list[str]:
    """A local feature store of ``features`` (float16 descriptors, int16 locations) under ids img0, img1, ..."""
    ids = [f"img{k}" for k in range(len(features))]
    with LocalFeatureWriter(root, dim=128) as writer:
        for image_id, f in zip(ids, features, strict=True):
            writer.add(image_id, f)
    return ids


def float32_bytes_per_image(features: Sequence[LocalFeatures]) -> float:
    """Bytes per image as plain float32 (descriptors, locations, scale, score)."""
    return float(np.mean([len(f) * (128 + 2 + 1 + 1) * 4 for f in features]))


def store_rates(
    root: Path, ids: Sequence[str], config: VerifyConfig, workers: int, pairs: int, seed: int
) -> dict[str, float]:
    """Pairs/s of store-backed verification (what cleaning and re-ranking run: chunks carry ids, workers read
    the store) on ``pairs`` random pairs of stored images, in one process and on ``workers`` processes."""
    rng = np.random.default_rng(seed)
    chosen = [tuple(rng.choice(len(ids), size=2, replace=False)) for _ in range(pairs)]
    id_pairs = [(ids[a], ids[b]) for a, b in chosen]
    rates = {}
    for name, n in (("one_process", 0), ("workers", workers)):
        verifier = StoreVerifier(root, dataclasses.replace(config, workers=n))
        verifier.pair_counts(id_pairs[:4])  # warm-up
        start = time.perf_counter()
        verifier.pair_counts(id_pairs)
        rates[name] = len(id_pairs) / (time.perf_counter() - start)
    return rates


def interleaved_rates(
    timed: Sequence[tuple[LocalFeatures, LocalFeatures]], config: VerifyConfig, seed: int
) -> tuple[float, float]:
    """Pairs/s of ours and of the reference on the same pairs, measured over the same stretch of time in
    alternating blocks (see ROUNDS, PASSES)."""
    ref_s = ours_s = 0.0
    for part in np.array_split(np.arange(len(timed)), ROUNDS):
        start = time.perf_counter()
        for _ in range(PASSES):
            verify_pairs(timed, config)
        ours_s += time.perf_counter() - start
        start = time.perf_counter()
        for k in part:
            reference_inliers(timed[k][0], timed[k][1], seed)
        ref_s += time.perf_counter() - start
    return ROUNDS * PASSES * len(timed) / ours_s, len(timed) / ref_s


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="IMC 2022 landmarks folder")
    parser.add_argument("--positives", type=int, default=60, help="covisible sagrada_familia pairs")
    parser.add_argument("--negatives", type=int, default=60, help="cross-landmark pairs")
    parser.add_argument(
        "--reference-pairs", type=int, default=40, help="pairs timed for the (slow) reference"
    )
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timings; the median is reported")
    parser.add_argument("--min-covisibility", type=float, default=0.1)
    parser.add_argument("--max-features", type=int, default=1000)
    parser.add_argument("--max-side", type=int, default=1024)
    parser.add_argument(
        "--parallel-workers",
        type=int,
        default=2,
        help="also time store-backed verification on this many processes (0 = skip)",
    )
    parser.add_argument(
        "--store-pairs", type=int, default=2000, help="random stored pairs timed for the store-backed rows"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if not (args.root / SCENE).is_dir():
        raise SystemExit(f"IMC photos not found under {args.root}")

    pairs, labels, fundamentals = choose_pairs(
        args.root, args.positives, args.negatives, args.min_covisibility, args.seed
    )
    extractor = create_local_extractor("sift", max_features=args.max_features, max_side=args.max_side)
    paths = sorted({p for pair in pairs for p in pair})
    images = {p: gray_image(p) for p in paths}
    start = time.perf_counter()
    features = {p: extractor(images[p]) for p in paths}
    extract_s = time.perf_counter() - start
    feature_pairs = [(features[a], features[b]) for a, b in pairs]
    float32_bytes = float32_bytes_per_image(list(features.values()))

    config = VerifyConfig()  # one process, like the reference
    verify_pairs(feature_pairs[:2], config)  # warm-up: lazy imports, first OpenCV/torch calls
    start = time.perf_counter()
    ours = verify_pairs(feature_pairs, config)
    ours_s = time.perf_counter() - start
    ours_counts = np.array([d.num_inliers for d in ours])
    ours_corr = [(d.matches[d.inliers, 0], d.matches[d.inliers, 1]) for d in ours]

    ref_matched = [reference_inliers(f1, f2, args.seed) for f1, f2 in feature_pairs]
    ref_counts = np.array([int((m >= 0).sum()) for m in ref_matched])
    ref_corr = [(np.flatnonzero(m >= 0), m[m >= 0]) for m in ref_matched]
    subset = np.random.default_rng(args.seed).permutation(len(feature_pairs))[: args.reference_pairs]
    timed = [feature_pairs[k] for k in np.sort(subset)]
    # repeated: one measurement's speed-up moves by +-10% from run to run even on a quiet machine
    repeats = [interleaved_rates(timed, config, args.seed) for _ in range(args.repeats)]
    ours_rate, ref_rate = repeats[int(np.argsort([o / r for o, r in repeats])[len(repeats) // 2])]
    parallel: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="verify_speed_") as tmp:
        store = Path(tmp)
        store_ids = write_store(store, [features[p] for p in paths])
        store_bytes = local_bytes_per_image(store)
        # the store-backed path on N processes (the machine's cores) against one, and against the reference's
        # single process; enough pairs that the pool's start-up is a small part of the time
        rates = (
            store_rates(store, store_ids, config, args.parallel_workers, args.store_pairs, args.seed)
            if args.parallel_workers
            else {}
        )
    if rates:
        parallel = {
            "pairs": args.store_pairs,
            "workers": args.parallel_workers,
            "pairs_per_s": rates["workers"],
            "one_process_pairs_per_s": rates["one_process"],
            "speedup_vs_one_process": rates["workers"] / rates["one_process"],
            # other pairs (2000 random stored ones, float16 descriptors) than the reference's 40: rates compared
            "speedup_vs_reference_rate": rates["workers"] / ref_rate,
        }
    payload = {
        "scene": SCENE,
        "positives": int(labels.sum()),
        "negatives": int((~labels).sum()),
        "min_covisibility": args.min_covisibility,
        "sift": {"max_features": args.max_features, "max_side": args.max_side, "root_sift": True},
        "mean_keypoints": float(np.mean([len(f) for f in features.values()])),
        "extract_images_per_s": len(paths) / extract_s,
        "store_bytes_per_image": store_bytes,  # local store: float16 descriptors, int16 locations
        "float32_bytes_per_image": float32_bytes,
        "verify_config": {k: getattr(config, k) for k in config.__dataclass_fields__},
        "ours": {
            "pairs_per_s": ours_rate,
            "pairs_per_s_all_pairs": len(pairs) / ours_s,  # one pass over every pair
            "auc": roc_auc(ours_counts, labels),
            "median_sampson_px2": median_sampson(features, pairs, fundamentals, ours_corr),
            "median_inliers_pos": float(np.median(ours_counts[labels])),
            "median_inliers_neg": float(np.median(ours_counts[~labels])),
        },
        "reference": {
            "method": "cKDTree NN dist<=0.8 + skimage ransac(AffineTransform, 3, 20 px, 1000 trials)",
            "pairs_per_s": ref_rate,
            "auc": roc_auc(ref_counts, labels),
            "median_sampson_px2": median_sampson(features, pairs, fundamentals, ref_corr),
            "median_inliers_pos": float(np.median(ref_counts[labels])),
            "median_inliers_neg": float(np.median(ref_counts[~labels])),
        },
        "timed_pairs": len(timed),
        "timing": f"alternating blocks: ours {PASSES} times over the timed pairs, then 1/{ROUNDS} of them by the"
        f" reference, {ROUNDS} rounds; {args.repeats} repeats, the median speed-up's reported",
        "speedup": ours_rate / ref_rate,  # the median repeat's
        "repeats": [{"ours": o, "reference": r, "speedup": o / r} for o, r in repeats],
        "ours_store_parallel": parallel,
        "note": "2 shared cores: other engineers' jobs ran at the same time",
    }
    write_result("verify_speed", payload, args.out)


if __name__ == "__main__":
    main()
