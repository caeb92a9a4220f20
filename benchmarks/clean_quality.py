"""Cleaning quality on the synthetic default world, which records its injected label noise.

1. How much of the injected noise (``wrong_label`` and ``junk_labelled`` train images, synth_meta.parquet) the
   cleaning removes and how many correct images it keeps (targets: >= 90% and >= 90%), for the configured
   thresholds and over a sweep of T_inlier x T_freq (the calibration evidence for the defaults).
2. The global model trained on the raw and on the cleaned train split with identical params and seed:
   revisited medium/hard mAP of the test queries (plain kNN and the configured re-ranking).

    python benchmarks/clean_quality.py [--work build/bench/clean] [--set train.max_steps=60] [--skip-train]

Everything (world, bootstrap descriptors, local features, the verified pair table, models, features) is cached
under --work; delete it to start over.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, cached_world, config_parser, digest, write_result

from landmark.cleaning.clean import (
    candidate_inliers,
    candidate_table,
    drop_small_classes,
    unique_pairs,
    verified_counts,
)
from landmark.cleaning.verify import StoreVerifier
from landmark.config import Config, load_config
from landmark.data.formats import read_dataset
from landmark.features.store import load_features
from landmark.retrieval.rerank import rerank_for_steps
from landmark.stages.clean import clean
from landmark.stages.evaluate import evaluate
from landmark.stages.extract import extract
from landmark.stages.local import local
from landmark.stages.train import train

REPO = Path(__file__).resolve().parents[1]
SWEEP_INLIERS = (6, 8, 10, 12, 15, 20, 25, 30)
SWEEP_FREQ = (1, 2, 3)


def noise_rates(kept: np.ndarray, meta: pd.DataFrame) -> dict[str, Any]:
    """Removed share of injected noise, kept share of correct images (also without junk viewpoints)."""
    noisy = (meta["noise"] != "none").to_numpy()
    hopeless = (meta["difficulty"] == "junk").to_numpy()  # correct label, landmark barely visible
    return {
        "noise_removed": round(float((~kept[noisy]).mean()), 4),
        "wrong_label_removed": round(float((~kept[(meta["noise"] == "wrong_label").to_numpy()]).mean()), 4),
        "junk_labelled_removed": round(
            float((~kept[(meta["noise"] == "junk_labelled").to_numpy()]).mean()), 4
        ),
        "correct_kept": round(float(kept[~noisy].mean()), 4),
        "correct_kept_without_junk_views": round(float(kept[~noisy & ~hopeless].mean()), 4),
        "noisy_images": int(noisy.sum()),
        "correct_images": int((~noisy).sum()),
    }


def threshold_sweep(
    cfg: Config, work: Path, ids: list[str], labels: np.ndarray, meta: pd.DataFrame
) -> list[dict[str, Any]]:
    """Verify every candidate pair once (cached), then re-decide for each (T_inlier, T_freq)."""
    # one cache per verifier setting (workers aside: they do not change a count); seeds from the pair's ids
    setting = {k: v for k, v in dataclasses.asdict(cfg.verify).items() if k != "workers"}
    cache = work / f"candidate_inliers_{digest(setting)}.npy"
    if not cache.exists():
        _, desc = load_features(work / "boot" / "train", ids)
        candidates = candidate_table(desc, labels, cfg.clean)
        pairs = unique_pairs(candidates)
        verifier = StoreVerifier(
            work / "local" / "train", dataclasses.replace(cfg.verify, workers=cfg.clean.workers)
        )
        counts = verifier.pair_counts([(ids[a], ids[b]) for a, b in pairs])
        np.save(cache, candidate_inliers(candidates, pairs, counts))
    inliers = np.load(cache)
    rows = []
    for t_inlier in SWEEP_INLIERS:
        for t_freq in SWEEP_FREQ:
            cnt = verified_counts(inliers, t_inlier)
            kept, _, _ = drop_small_classes(labels, cnt >= t_freq, cfg.clean.min_class_images)
            rows.append({"inlier_threshold": t_inlier, "min_verified": t_freq, **noise_rates(kept, meta)})
    return rows


def retrieval_map(cfg: Config, world: Path, model_dir: Path, features: Path, out: Path) -> dict[str, Any]:
    """Revisited easy/medium/hard mAP of the test queries: plain kNN and the configured re-ranking."""
    # index + test only: mAP of plain kNN needs no train features (label-based re-ranking steps are then skipped
    # for both models alike), which saves a third of the extraction on 2 CPU cores
    extract(cfg, world, features, splits=("index", "test"), model_dir=model_dir)
    plain = dataclasses.replace(cfg, rerank=rerank_for_steps(cfg.rerank, ["none"]))  # plain kNN
    result: dict[str, Any] = {}
    for name, run_cfg in (("knn", plain), ("reranked", cfg)):
        metrics = evaluate(run_cfg, world, features, out / name)
        result[name] = {p: metrics["revisitop"][p]["mAP"] for p in ("easy", "medium", "hard")}
        result[name]["notes"] = metrics.get("notes")
    return result


def earlier_training(path: Path) -> dict[str, Any] | None:
    """The raw-vs-cleaned training comparison in the result a ``--skip-train`` run replaces (kept, not re-run)."""
    if not path.exists():
        return None
    old = json.loads(path.read_text())
    if "previous_training_run" in old:
        return old["previous_training_run"]
    if "map_gain_cleaned_minus_raw" not in old:
        return None
    keep = ("configured", "train_overrides", "train_raw", "train_cleaned", "map_raw", "map_cleaned",
            "map_gain_cleaned_minus_raw")  # fmt: skip
    return {"note": "from the run before this one (--skip-train)", **{k: old[k] for k in keep if k in old}}


def main() -> None:
    parser = config_parser(__doc__, REPO / "build" / "bench" / "clean")
    parser.add_argument("--skip-train", action="store_true", help="only the removal/keep rates and the sweep")
    args = parser.parse_args()
    cfg = load_config(args.params, args.overrides)
    work: Path = args.work
    world = cached_world(cfg, work)
    result: dict[str, Any] = {
        "config": {"clean": cfg.clean.__dict__, "local": cfg.local.__dict__, "verify": cfg.verify.__dict__},
        "world": str(world),
    }

    start = time.perf_counter()
    extract(cfg, world, work / "boot", splits=("train",))  # pretrained bootstrap descriptors
    result["bootstrap_extract_seconds"] = round(time.perf_counter() - start, 1)
    summary = local(cfg, world, work / "local", split="train")
    result["local"] = {
        "images": summary.images, "extracted_now": summary.extracted, "seconds": round(summary.seconds, 1),
        "bytes_per_image": round(summary.bytes_per_image),
    }  # fmt: skip

    start = time.perf_counter()
    cleaned = clean(cfg, world, work / "boot", work / "local", work / "clean", progress=False)
    result["clean_seconds"] = round(time.perf_counter() - start, 1)
    decisions_kept = pd.read_parquet(work / "clean" / "train.parquet").set_index("image_id")["status"] == "ok"
    dataset = read_dataset(world)
    frame = dataset.manifest("train")
    ok = frame[frame["status"] == "ok"]
    ids = [str(i) for i in ok["image_id"]]
    labels = ok["landmark_id"].to_numpy(np.int64)
    meta = pd.read_parquet(world / "synth_meta.parquet").set_index("image_id").loc[ids]
    kept = decisions_kept.loc[ids].to_numpy()
    result["configured"] = {
        **noise_rates(kept, meta),
        "kept": cleaned.kept,
        "images": cleaned.images,
        "dropped": cleaned.dropped,
        "classes_kept": cleaned.classes_kept,
        "unique_pairs": cleaned.unique_pairs,
        "verified_pairs": cleaned.verified_pairs,
        "directed_pairs": cleaned.directed_pairs,
    }
    result["sweep"] = threshold_sweep(cfg, work, ids, labels, meta)

    if not args.skip_train:
        result["train_overrides"] = args.overrides
        for name, manifest in (("raw", None), ("cleaned", work / "clean" / "train.parquet")):
            # one model per training setting and train set: a changed cleaning trains its model again
            source = hashlib.sha1(manifest.read_bytes()).hexdigest() if manifest else None
            tag = f"{name}_{digest([dataclasses.asdict(cfg.train), dataclasses.asdict(cfg.model), cfg.seed, source])}"
            model_dir = work / f"model_{tag}"
            start = time.perf_counter()
            if (model_dir / "metrics.json").exists():
                result[f"train_{name}"] = json.loads((model_dir / "metrics.json").read_text())["train"]
            else:
                run = train(
                    cfg,
                    world,
                    model_dir,
                    manifest=manifest,
                    work_dir=work / f"model_{tag}.work",
                    resume=True,
                )
                result[f"train_{name}"] = {
                    "images": run.images, "classes": run.classes, "steps": run.steps,
                    "seconds": round(run.seconds, 1), "final_accuracy": round(run.final_accuracy, 4),
                }  # fmt: skip
            result[f"train_{name}_wall_seconds"] = round(time.perf_counter() - start, 1)
            result[f"map_{name}"] = retrieval_map(
                cfg, world, model_dir, work / f"feat_{tag}", work / f"eval_{tag}"
            )
        result["map_gain_cleaned_minus_raw"] = {
            kind: {
                p: round(result["map_cleaned"][kind][p] - result["map_raw"][kind][p], 3)
                for p in ("easy", "medium", "hard")
            }
            for kind in ("knn", "reranked")
        }
    else:
        result["previous_training_run"] = earlier_training(RESULTS / "clean_quality.json")
    write_result("clean_quality", result)


if __name__ == "__main__":
    main()
