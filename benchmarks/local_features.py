"""Local-feature backends on real photos: sift vs our delf and its variants, per held-out IMC scene.

Protocol (three shared IMC 2022 scenes, ``--root``; poses give the truth, :mod:`landmark.data.imc_protocol`):

- per scene a seeded set of ``--images`` evaluation photos and a disjoint set of ``--fit-images`` photos;
- pairs of the evaluation photos, classed from the cameras: **positives** = covisible (easy or hard) pairs,
  **junk** = same-scene pairs the poses call non-overlapping, **other** = a photo of this scene with an
  evaluation photo of another scene (other landmark). ``--positives``/``--junk``/``--other`` pairs each;
- per scene and variant: ROC AUC of the inlier counts of our verifier (``landmark.cleaning.verify``) of positives vs all
  negatives (and vs junk only, vs other only), the median Sampson error (px^2) of positive pairs' inliers under
  the pose-derived fundamental matrix ``F = K2^-T [t]x R K1^-1``, median and mean inliers per positive pair,
  extraction images/s on this scene's photos (<= 640 px, as stored; one warm-up image first) and bytes per image
  in the local store.

Anything fitted on IMC photos is evaluated only on a scene it never saw: the ``pca: real`` variants fit their
descriptor PCA on the fit photos of the OTHER two scenes (held-out rotation); no evaluation photo of any scene is
in a fit set. The DELF models are trained on the synthetic world only (``landmark train-delf``, cached under
``--work``): ``synthetic`` with both of the paper's phases, ``frozen`` with the attention phase only
(``delf.descriptor_epochs=0``: descriptors are the frozen ImageNet backbone's). Extracted features are cached
per variant and image under ``--work/features``; a cached image keeps the seconds it took when extracted.

    python benchmarks/local_features.py [--work build/bench/delf] [--variants sift,delf-s16-p3,...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cached_world, config_parser, write_result
from verify_speed import DEFAULT_ROOT, roc_auc

from landmark.cleaning.verify import sampson_error, verify_pairs
from landmark.config import Config, VerifyConfig, load_config
from landmark.data.images import decode_image
from landmark.data.imc import fundamental_from_cameras, read_imc_cameras, scene_dirs
from landmark.data.imc_benchmark import ImcScene, read_imc_scene
from landmark.data.imc_protocol import EASY, HARD, JUNK
from landmark.features.delf import DelfExtractor
from landmark.features.local import LocalFeatures, create_local_extractor
from landmark.features.local_store import LocalFeatureWriter, local_bytes_per_image
from landmark.models.delf import DelfPca, fit_pca

REPO = Path(__file__).resolve().parents[1]
SQRT2 = float(np.sqrt(2.0))
FULL_PYRAMID = (0.25, 0.25 * SQRT2, 0.5, 0.5 * SQRT2, 1.0, SQRT2, 2.0)
# raw descriptors per fit photo (strongest attention first) for the real-photo PCA
PCA_SAMPLES_PER_IMAGE = 300


@dataclass(frozen=True)
class Variant:
    """One row of the table: how features are extracted, reduced and verified.

    Attributes:
        name: row name.
        backend: ``sift`` or ``delf``.
        model: DELF model: ``synthetic`` (both training phases) or ``frozen`` (attention phase only).
        scales: DELF pyramid.
        feature_stride: DELF feature-map stride (16, or 8 dilated).
        pca: ``model`` (the model's PCA, fitted on synthetic images) or ``real`` (fitted on the other scenes'
            fit photos).
        whiten: whitening with the real-photo PCA.
        ransac_threshold: pixels; None = params.yaml's verify.ransac_threshold.
        note: what the row tests.
    """

    name: str
    backend: str
    note: str
    model: str = "synthetic"
    scales: tuple[float, ...] = (1.0,)
    feature_stride: int = 16
    pca: str = "model"
    whiten: bool = False
    ransac_threshold: float | None = None

    @property
    def feature_key(self) -> str:
        """Cache key of the extracted (pre-PCA) features: everything but the PCA and the verifier."""
        if self.backend == "sift":
            return "sift"
        scales = "-".join(f"{s:.3f}" for s in self.scales)
        return f"delf-{self.model}-s{self.feature_stride}-{scales}"


P3 = (0.5, 0.5 * SQRT2, 1.0)
VARIANTS = {v.name: v for v in (
    Variant("sift", "sift", "RootSIFT, <= 1000 keypoints, native resolution (the default backend)"),
    Variant("delf-paper", "delf", "trained on synthetic, paper pyramid 0.25..2 (7 scales), stride 16",
            scales=FULL_PYRAMID),
    Variant("delf-s16-p3", "delf", "fewer scales: 0.5, 0.71, 1", scales=P3),
    Variant("delf-s16-p4", "delf", "scales 0.5, 0.71, 1, 1.41", scales=(*P3, SQRT2)),
    Variant("delf-s16-p3-realpca", "delf", "3 scales, PCA fitted on the other scenes' photos", scales=P3,
            pca="real"),
    Variant("delf-s16-p1", "delf", "one scale: 1", scales=(1.0,)),
    Variant("delf-s8-p3", "delf", "stride-8 map (dilated), scales 0.5, 0.71, 1", scales=P3, feature_stride=8),
    Variant("delf-s8-p1", "delf", "stride-8 map (dilated), one scale", feature_stride=8),
    Variant("delf-s8-p3-realpca", "delf", "stride 8, 3 scales, PCA fitted on the other scenes' photos",
            scales=P3, feature_stride=8, pca="real"),
    Variant("frozen-s8-p3-realpca", "delf", "frozen ImageNet descriptors + attention trained on synthetic, "
            "stride 8, 3 scales, real-photo PCA", model="frozen", scales=P3, feature_stride=8, pca="real"),
    Variant("frozen-s8-p3-realpcaw", "delf", "as above, PCA whitened", model="frozen", scales=P3,
            feature_stride=8, pca="real", whiten=True),
    Variant("frozen-s16-p3-realpca", "delf", "frozen ImageNet descriptors, stride 16, 3 scales, real PCA",
            model="frozen", scales=P3, pca="real"),
    Variant("frozen-s16-p4-realpca", "delf", "frozen ImageNet descriptors, stride 16, scales 0.5..1.41, real "
            "PCA", model="frozen", scales=(*P3, SQRT2), pca="real"),
    Variant("frozen-s16-p3-realpca-t20", "delf", "frozen-s16-p3-realpca with RANSAC threshold 20 px",
            model="frozen", scales=P3, pca="real", ransac_threshold=20.0),
    Variant("delf-s16-p3-t20", "delf", "RANSAC threshold 20 px (coarse cells: 16 px at scale 1, 32 at 0.5)",
            scales=P3, ransac_threshold=20.0),
    Variant("delf-s8-p3-t8", "delf", "RANSAC threshold 8 px (the stride-8 grid's cell)", scales=P3,
            feature_stride=8, ransac_threshold=8.0),
    Variant("delf-s8-p3-t20", "delf", "RANSAC threshold 20 px", scales=P3, feature_stride=8,
            ransac_threshold=20.0),
)}  # fmt: skip


@dataclass
class SceneData:
    """One scene's photos used here: evaluation and fit indices into ``scene.paths`` and the cameras."""

    scene: ImcScene
    eval_idx: np.ndarray
    fit_idx: np.ndarray
    cameras: dict[str, Any] = field(default_factory=dict)

    def key(self, k: int) -> str:
        return f"{self.scene.name}/{self.scene.image_ids[k]}"


def split_photos(n: int, eval_count: int, fit_count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint seeded evaluation and fit photo indices of a scene of ``n`` photos, each ascending.

    Raises:
        ValueError: more photos asked for than the scene has.
    """
    if eval_count + fit_count > n:
        raise ValueError(f"{eval_count} + {fit_count} photos asked for, the scene has {n}")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[:eval_count]), np.sort(order[eval_count : eval_count + fit_count])


def scene_pairs(
    codes: np.ndarray, indices: np.ndarray, positives: int, junk: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded same-scene pairs among ``indices``: covisible (easy/hard) positives and junk negatives.

    Args:
        codes: (n, n) pair codes of the scene (:func:`landmark.data.imc_protocol.scene_pair_classes`).
        indices: photos to pair.
        positives: at most this many easy-or-hard pairs.
        junk: at most this many junk pairs.
        seed: sampling seed.

    Returns:
        (K, 2) int64 photo index pairs (i < j) and (K,) bool labels (True = positive), positives first.
    """
    idx = np.asarray(indices)
    first, second = np.triu_indices(len(idx), 1)
    a, b = idx[first], idx[second]
    pair_codes = np.asarray(codes)[a, b]
    rng = np.random.default_rng(seed)
    chosen = []
    for wanted, count in (((EASY, HARD), positives), ((JUNK,), junk)):
        rows = np.flatnonzero(np.isin(pair_codes, wanted))
        chosen.append(np.sort(rng.choice(rows, size=min(count, len(rows)), replace=False)))
    pairs = np.stack([np.concatenate([a[c] for c in chosen]), np.concatenate([b[c] for c in chosen])], 1)
    labels = np.concatenate([np.ones(len(chosen[0]), bool), np.zeros(len(chosen[1]), bool)])
    return pairs.astype(np.int64), labels


def trained_delf(
    cfg: Config, work: Path, kind: str, given: Path | None = None
) -> tuple[Path, dict[str, Any]]:
    """The DELF model trained on the synthetic default (cached under ``work``), and its training metrics.

    ``kind`` ``synthetic``: params.yaml's delf section; ``frozen``: the same without the descriptor phase (its
    synthetic PCA, unused by the real-photo-PCA rows, is fitted on the 3-scale pyramid to save time).
    ``given``: a model directory trained elsewhere (e.g. on a GPU machine) used for ``synthetic`` instead.
    """
    from landmark.stages.train_delf import train_delf

    if given is not None and kind == "synthetic":
        return given, json.loads((given / "metrics.json").read_text())["train"]
    world, model = cached_world(cfg, work), work / ("model" if kind == "synthetic" else f"model-{kind}")
    if kind == "frozen":
        cfg = replace(cfg, delf=replace(cfg.delf, descriptor_epochs=0, scales=P3))
    if not (model / "metrics.json").exists():
        train_delf(cfg, world, model)
    metrics: dict[str, Any] = json.loads((model / "metrics.json").read_text())["train"]
    return model, metrics


def _save(path: Path, f: LocalFeatures, seconds: tuple[float, float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, locations=f.locations, scales=f.scales, scores=f.scores, descriptors=f.descriptors,
             seconds=np.array(seconds, np.float64))  # fmt: skip
    tmp.replace(path)


def _load(path: Path) -> tuple[LocalFeatures, tuple[float, float]]:
    with np.load(path) as d:
        wall, cpu = (float(x) for x in d["seconds"])
        return LocalFeatures(d["locations"], d["scales"], d["scores"], d["descriptors"]), (wall, cpu)


def extract_cached(
    variant: Variant, cfg: Config, work: Path, scenes: Sequence[SceneData], given: Path | None = None
) -> tuple[dict[str, LocalFeatures], dict[str, tuple[float, float]], DelfPca | None]:
    """Pre-PCA features (raw DELF descriptors) and extraction seconds of every photo used (fit photos only for
    a real-photo PCA), cached per image, and the model's PCA (None for SIFT)."""
    cache = (
        work / "features" / (variant.feature_key if given is None else f"{given.name}-{variant.feature_key}")
    )
    if variant.backend == "sift":
        extractor: Any = create_local_extractor("sift")
        pca = None
    else:
        model_dir, _ = trained_delf(cfg, work, variant.model, given)
        extractor = create_local_extractor(
            "delf", model_dir=model_dir, scales=variant.scales, feature_stride=variant.feature_stride,
            device=cfg.device,
        )  # fmt: skip
        assert isinstance(extractor, DelfExtractor)
        pca = extractor.pca
    features: dict[str, LocalFeatures] = {}
    seconds: dict[str, tuple[float, float]] = {}  # wall and process CPU seconds
    warmed = False
    for data in scenes:
        for k in np.concatenate([data.eval_idx, data.fit_idx if variant.pca == "real" else []]).astype(int):
            key = data.key(int(k))
            path = cache / f"{key}.npz"
            if path.exists():
                features[key], seconds[key] = _load(path)
                continue
            image = decode_image(data.scene.paths[int(k)])
            if not warmed:  # model load and first-call set-up are not per-image costs
                extractor(image)
                warmed = True
            start, start_cpu = time.perf_counter(), time.process_time()
            raw = extractor.raw(image) if pca is not None else extractor(image)
            seconds[key] = (time.perf_counter() - start, time.process_time() - start_cpu)
            features[key] = LocalFeatures(raw.locations, raw.scales, raw.scores, raw.descriptors)
            _save(path, features[key], seconds[key])
    return features, seconds, pca


def real_pca(
    raw: dict[str, LocalFeatures], scenes: Sequence[SceneData], held_out: str, dim: int, whiten: bool
) -> DelfPca:
    """PCA fitted on the raw descriptors of the fit photos of every scene but ``held_out``."""
    parts = [
        raw[d.key(int(k))].descriptors[:PCA_SAMPLES_PER_IMAGE]
        for d in scenes
        if d.scene.name != held_out
        for k in d.fit_idx
    ]
    return fit_pca(np.concatenate(parts), dim, whiten)


def reduced(f: LocalFeatures, pca: DelfPca | None) -> LocalFeatures:
    """``f`` with its descriptors through ``pca`` (unchanged when None)."""
    if pca is None:
        return f
    desc = pca.transform(f.descriptors) if len(f) else np.zeros((0, pca.dim), np.float32)
    return LocalFeatures(f.locations, f.scales, f.scores, desc)


def store_bytes(features: Sequence[LocalFeatures]) -> float:
    """Bytes per image when ``features`` are written to a local feature store."""
    with tempfile.TemporaryDirectory() as tmp:
        with LocalFeatureWriter(tmp, dim=features[0].dim) as writer:
            for k, f in enumerate(features):
                writer.add(f"img{k}", f)
        return local_bytes_per_image(tmp)


def evaluate_scene(
    data: SceneData,
    others: Sequence[SceneData],
    features: dict[str, LocalFeatures],
    seconds: dict[str, tuple[float, float]],
    verify: VerifyConfig,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """The metrics of one held-out scene (module docstring) from already reduced ``features``."""
    seed = args.seed + sum(map(ord, data.scene.name))
    pairs, labels = scene_pairs(data.scene.codes, data.eval_idx, args.positives, args.junk, seed)
    keys = [(data.key(int(i)), data.key(int(j))) for i, j in pairs]
    kinds = ["positive" if lab else "junk" for lab in labels]
    rng = np.random.default_rng([seed, 1])
    pool = [d.key(int(k)) for d in others for k in d.eval_idx]
    for _ in range(args.other):
        keys.append((data.key(int(rng.choice(data.eval_idx))), pool[int(rng.integers(len(pool)))]))
        kinds.append("other")
    kind = np.array(kinds)
    details = verify_pairs([(features[a], features[b]) for a, b in keys], verify)
    counts = np.array([d.num_inliers for d in details], np.float64)
    positive = kind == "positive"
    errors = []
    for (i, j), d in zip(pairs[labels], np.array(details, dtype=object)[positive], strict=True):
        if d.num_inliers:
            cam_i = data.cameras[data.scene.image_ids[int(i)]]
            cam_j = data.cameras[data.scene.image_ids[int(j)]]
            F = fundamental_from_cameras(cam_i, cam_j)
            m = d.matches[d.inliers]
            errors.append(
                sampson_error(
                    F,
                    features[data.key(int(i))].locations[m[:, 0]],
                    features[data.key(int(j))].locations[m[:, 1]],
                )
            )
    eval_keys = [data.key(int(k)) for k in data.eval_idx]
    both = lambda neg: roc_auc(counts[positive | neg], positive[positive | neg])  # noqa: E731
    return {
        "pairs": {"positive": int(positive.sum()), "junk": int((kind == "junk").sum()),
                  "other": int((kind == "other").sum())},
        "auc": round(both(~positive), 4),
        "auc_vs_junk": round(both(kind == "junk"), 4),
        "auc_vs_other": round(both(kind == "other"), 4),
        "median_sampson_px2": round(float(np.median(np.concatenate(errors))), 4) if errors else None,
        "median_inliers_pos": float(np.median(counts[positive])),
        "mean_inliers_pos": round(float(counts[positive].mean()), 2),
        "median_inliers_junk": float(np.median(counts[kind == "junk"])),
        "median_inliers_other": float(np.median(counts[kind == "other"])),
        "images_per_s": round(len(eval_keys) / sum(seconds[k][0] for k in eval_keys), 3),
        "cpu_s_per_image": round(float(np.mean([seconds[k][1] for k in eval_keys])), 4),
        "est_images_per_s_2_cores": round(2 / float(np.mean([seconds[k][1] for k in eval_keys])), 2),
        "mean_keypoints": round(float(np.mean([len(features[k]) for k in eval_keys])), 1),
        "store_bytes_per_image": round(store_bytes([features[k] for k in eval_keys])),
    }  # fmt: skip


def run_variant(
    variant: Variant, cfg: Config, scenes: Sequence[SceneData], args: argparse.Namespace
) -> dict[str, Any]:
    """Per-scene metrics of one variant, their mean over scenes, and the load around its extraction."""
    load_before = os.getloadavg()
    raw, seconds, model_pca = extract_cached(variant, cfg, args.work, scenes, args.delf_model)
    load_after = os.getloadavg()
    verify = cfg.verify if variant.ransac_threshold is None else replace(
        cfg.verify, ransac_threshold=variant.ransac_threshold)  # fmt: skip
    per_scene: dict[str, Any] = {}
    for data in scenes:
        pca = model_pca
        if variant.pca == "real":
            pca = real_pca(raw, scenes, data.scene.name, cfg.delf.pca_dim, variant.whiten)
        features = {key: reduced(f, pca) for key, f in raw.items()}
        others = [d for d in scenes if d is not data]
        per_scene[data.scene.name] = evaluate_scene(data, others, features, seconds, verify, args)
        print(variant.name, data.scene.name, json.dumps(per_scene[data.scene.name]))
    numeric = [k for k, v in next(iter(per_scene.values())).items() if isinstance(v, int | float)]
    mean = {
        k: round(float(np.mean([s[k] for s in per_scene.values() if s[k] is not None])), 4) for k in numeric
    }
    return {
        "note": variant.note,
        "settings": {"backend": variant.backend, "model": variant.model, "scales": list(variant.scales),
                     "feature_stride": variant.feature_stride, "pca": variant.pca, "whiten": variant.whiten,
                     "ransac_threshold": verify.ransac_threshold},
        "load_average_extraction": {"before": load_before, "after": load_after},
        "mean_over_scenes": mean,
        "scenes": per_scene,
    }  # fmt: skip


def load_scenes(root: Path, args: argparse.Namespace) -> list[SceneData]:
    """Every scene of ``root`` with its evaluation and fit photos."""
    scenes = []
    for position, scene_dir in enumerate(scene_dirs(root)):
        scene = read_imc_scene(scene_dir)
        cameras = read_imc_cameras(scene_dir)
        with_camera = np.array([i in cameras for i in scene.image_ids])
        if not with_camera.all():
            raise SystemExit(f"{scene_dir}: photos without cameras are not supported here")
        eval_idx, fit_idx = split_photos(
            len(scene.image_ids), args.images, args.fit_images, args.seed + position
        )
        scenes.append(SceneData(scene, eval_idx, fit_idx, cameras))
    return scenes


def main(argv: Sequence[str] | None = None) -> None:
    parser = config_parser(__doc__, REPO / "build" / "bench" / "delf")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="IMC 2022 landmarks folder")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {', '.join(VARIANTS)}")
    parser.add_argument("--images", type=int, default=40, help="evaluation photos per scene")
    parser.add_argument("--fit-images", type=int, default=16, help="photos per scene for real-photo PCAs")
    parser.add_argument("--positives", type=int, default=80, help="covisible pairs per scene")
    parser.add_argument("--junk", type=int, default=40, help="non-overlapping same-scene pairs per scene")
    parser.add_argument("--other", type=int, default=40, help="other-landmark pairs per scene")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--delf-model", type=Path, default=None,
        help="a DELF model directory trained elsewhere (benchmarks/train_delf_gpu.sh) for the delf-* rows",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if len(scene_dirs(args.root)) < 2:
        raise SystemExit(f"IMC scenes not found under {args.root}")
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    cfg = load_config(args.params, args.overrides)
    # One thread per extractor, as each of `landmark local`'s worker processes runs; on a shared machine a
    # multi-threaded process mostly measures its threads waiting for each other.
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    scenes = load_scenes(args.root, args)
    results = {}
    for name in args.variants.split(","):
        results[name] = run_variant(VARIANTS[name], cfg, scenes, args)
    training = {}
    for kind in sorted({VARIANTS[n].model for n in results if VARIANTS[n].backend == "delf"}):
        model_dir, metrics = trained_delf(cfg, args.work, kind, args.delf_model)
        training[kind] = {"model_dir": str(model_dir), **metrics}
    payload = {
        "protocol": {
            "scenes": [d.scene.name for d in scenes],
            "eval_images_per_scene": args.images,
            "fit_images_per_scene": args.fit_images,
            "pairs_per_scene": {"positive": args.positives, "junk": args.junk, "other": args.other},
            "positives": "easy or hard pose classes (imc_protocol defaults)",
            "sampson": "median over positive pairs' inliers, F from the two cameras",
            "images_per_s": "wall clock, one process with one torch/OpenCV thread, photos <= 640 px, on a "
            "machine shared with other users (see the load averages)",
            "cpu_s_per_image": "process CPU seconds per photo (one thread): less sensitive to other users",
            "est_images_per_s_2_cores": "2 / cpu_s_per_image: two worker processes (landmark local's "
            "default local.workers) on an idle 2-core machine",
            "seed": args.seed,
        },
        "delf_training": training,
        "delf_config": {k: getattr(cfg.delf, k) for k in cfg.delf.__dataclass_fields__},
        "verify_config": {k: getattr(cfg.verify, k) for k in cfg.verify.__dataclass_fields__},
        "variants": results,
    }
    write_result("local_features", payload, args.out)


if __name__ == "__main__":
    main()
