"""Local-feature backends compared: extraction speed, store size and verification quality (sift vs our delf).

1. DELF is trained on the synthetic default world (``landmark train-delf`` defaults; world and model cached
   under ``--work``, default build/bench/delf); its training time is reported.
2. Per backend at default settings: extraction images/s on ``--images`` synthetic train images, keypoints per
   image, and bytes per image in the local store (float16 descriptors, int16 locations).
3. Per backend: ROC AUC of the inlier counts of our verifier (``landmark.verify``, default VerifyConfig) on the
   protocol of ``benchmarks/verify_speed.py``: covisible sagrada_familia pairs (covisibility > 0.1) vs a
   sagrada_familia photo with a brandenburg_gate / grand_place_brussels photo; plus the median Sampson error
   (px^2) of positive pairs' inliers under the ground-truth F.

    python benchmarks/local_features.py [--work build/bench/delf] [--images 20] [--positives 60] [--negatives 60]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cached_world, config_parser, write_result
from verify_speed import DEFAULT_ROOT, SCENE, choose_pairs, median_sampson, roc_auc

from landmark.config import Config, load_config
from landmark.data.images import decode_image
from landmark.features.local import LocalExtractor, LocalFeatures, create_local_extractor
from landmark.features.local_store import LocalFeatureWriter, local_bytes_per_image
from landmark.verify import verify_pairs_detailed

REPO = Path(__file__).resolve().parents[1]


def trained_delf(cfg: Config, work: Path) -> tuple[Path, dict[str, Any]]:
    """The DELF model trained on the synthetic default (cached), and its training metrics."""
    from landmark.stages.train_delf import train_delf

    world, model = cached_world(cfg, work), work / "model"
    if not (model / "metrics.json").exists():
        train_delf(cfg, world, model)
    metrics: dict[str, Any] = json.loads((model / "metrics.json").read_text())["train"]
    return model, metrics


def timed_extraction(
    extractor: LocalExtractor, images: Sequence[np.ndarray]
) -> tuple[list[LocalFeatures], float]:
    """Features of every image and images per second (after one warm-up image)."""
    extractor(images[0])
    start = time.perf_counter()
    features = [extractor(image) for image in images]
    return features, len(images) / (time.perf_counter() - start)


def store_bytes(features: Sequence[LocalFeatures]) -> float:
    """Bytes per image when ``features`` are written to a local feature store."""
    with tempfile.TemporaryDirectory() as tmp:
        with LocalFeatureWriter(tmp, dim=features[0].dim) as writer:
            for k, f in enumerate(features):
                writer.add(f"img{k}", f)
        return local_bytes_per_image(tmp)


def imc_quality(extractor: LocalExtractor, args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    """AUC, Sampson error and inlier medians of our verifier on the IMC pairs with this backend's features."""
    pairs, labels, fundamentals = choose_pairs(
        args.root, args.positives, args.negatives, args.min_covisibility, args.seed
    )
    paths = sorted({p for pair in pairs for p in pair})
    start = time.perf_counter()
    features = {p: extractor(decode_image(p)) for p in paths}
    extract_s = time.perf_counter() - start
    details = verify_pairs_detailed([(features[a], features[b]) for a, b in pairs], cfg.verify)
    counts = np.array([d.num_inliers for d in details])
    corr = [(d.matches[d.inliers, 0], d.matches[d.inliers, 1]) for d in details]
    return {
        "auc": roc_auc(counts, labels),
        "median_sampson_px2": median_sampson(features, pairs, fundamentals, corr),
        "median_inliers_pos": float(np.median(counts[labels])),
        "median_inliers_neg": float(np.median(counts[~labels])),
        "imc_images": len(paths),
        "imc_mean_keypoints": float(np.mean([len(f) for f in features.values()])),
        "imc_extract_images_per_s": len(paths) / extract_s,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = config_parser(__doc__, REPO / "build" / "bench" / "delf")
    parser.add_argument("--images", type=int, default=20, help="synthetic images timed per backend")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="IMC 2022 landmarks folder")
    parser.add_argument("--positives", type=int, default=60)
    parser.add_argument("--negatives", type=int, default=60)
    parser.add_argument("--min-covisibility", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if not (args.root / SCENE).is_dir():
        raise SystemExit(f"IMC photos not found under {args.root}")
    cfg = load_config(args.params, args.overrides)

    start = time.perf_counter()
    model_dir, train_metrics = trained_delf(cfg, args.work)
    print(f"DELF model ready in {time.perf_counter() - start:.0f}s: {model_dir}")
    synth_paths = sorted((args.work / "synth" / "train").rglob("*.jpg"))[: args.images]
    images = [decode_image(p) for p in synth_paths]
    backends: dict[str, LocalExtractor] = {
        "sift": create_local_extractor("sift"),
        "delf": create_local_extractor("delf", model_dir=model_dir, device=cfg.device),
    }
    results: dict[str, Any] = {}
    for name, extractor in backends.items():
        features, rate = timed_extraction(extractor, images)
        results[name] = {
            "synthetic_images_per_s": rate,
            "synthetic_mean_keypoints": float(np.mean([len(f) for f in features])),
            "descriptor_dim": features[0].dim,
            "store_bytes_per_image": store_bytes(features),
            **imc_quality(extractor, args, cfg),
        }
        print(name, json.dumps(results[name], indent=1))
    payload = {
        "synthetic_images": len(images),
        "synthetic_image_size": cfg.synth.image_size,
        "delf_training": {
            "seconds": train_metrics["train_seconds"],
            "images": train_metrics["images"],
            "classes": train_metrics["classes"],
            "descriptor_phase": train_metrics["descriptor_phase"],
            "attention_phase": train_metrics["attention_phase"],
            "model_dir": str(model_dir),
        },
        "delf_config": {k: getattr(cfg.delf, k) for k in cfg.delf.__dataclass_fields__},
        "sift_config": "SiftExtractor defaults (RootSIFT, max 1000 keypoints, max side 1024)",
        "verify_config": {k: getattr(cfg.verify, k) for k in cfg.verify.__dataclass_fields__},
        "imc_protocol": {
            "scene": SCENE,
            "positives": args.positives,
            "negatives": args.negatives,
            "min_covisibility": args.min_covisibility,
            "seed": args.seed,
        },
        "backends": results,
    }
    write_result("local_features", payload, args.out)


if __name__ == "__main__":
    main()
