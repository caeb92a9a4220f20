"""A tiny servable world for the serving tests: a synthetic world without label noise, the packaged pretrained
backbone as a model directory, its descriptors, the index (with labels and the train set) and evaluate's metrics
(the calibrated "no landmark" threshold), laid out like a registry version."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from landmark.config import Config, load_config
from landmark.data.synthetic import generate_world
from landmark.models.global_model import create_global_model
from landmark.models.model_dir import save_model_dir
from landmark.stages.evaluate import evaluate
from landmark.stages.extract import extract
from landmark.stages.index import build_index

SERVE_OVERRIDES = [
    "synth.num_landmarks=4",
    "synth.facets_min=1",
    "synth.facets_max=1",
    "synth.train_per_landmark=6",
    "synth.index_per_landmark=3",
    "synth.queries=8",
    "synth.index_distractors=3",
    "synth.test_distractors=4",
    "synth.label_noise=0.0",
    "synth.junk_noise=0.0",
    "synth.image_size=128",
    "synth.facet_size=192",
    "synth.workers=0",
    "model.embedding_dim=0",
    "extract.image_size=128",
    "extract.scales=[1.0]",
    "extract.workers=0",
    "rerank.spatial=false",
    "recognize.inliers=false",
    "recognize.target_fpr=0.0",
    "index.gpu='off'",
    "evaluate.topk=20",
    "evaluate.grid_queries=0",
    "serve.top=5",
    "local.image_size=128",
    "local.max_features=300",
    "local.workers=0",
]


@dataclass(frozen=True)
class ServingWorld:
    """Paths of the tiny servable world.

    Attributes:
        cfg: the config every stage ran with.
        data: the synthetic dataset root.
        version: a version-like directory (model/, index/, metrics.json).
        features: the feature stores the stages made (``<split>/``).
        truth: synth_meta.parquet (image_id -> landmark_id ground truth of every photo).
    """

    cfg: Config
    data: Path
    version: Path
    features: Path
    truth: pd.DataFrame

    def image(self, split: str, image_id: str) -> Path:
        from landmark.data.formats import read_dataset

        return read_dataset(self.data, "auto").image_path(split, image_id)


def build_serving_world(root: Path, overrides: list[str] | None = None) -> ServingWorld:
    """Render, describe, index and evaluate the tiny world under ``root`` (about 10 s on 2 cores)."""
    cfg = load_config(None, SERVE_OVERRIDES + list(overrides or []))
    data = root / "synth"
    generate_world(cfg.synth, data, seed=cfg.seed, progress=False)
    version = root / "version"
    model_dir = version / "model"
    save_model_dir(model_dir, create_global_model(cfg.model), cfg.model, [], {})
    extract(cfg, data, root / "features", model_dir=model_dir, progress=False)
    build_index(cfg, data, root / "features", version / "index")
    metrics = evaluate(cfg, data, root / "features", root / "eval", index_dir=version / "index", plots=False)
    (version / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    return ServingWorld(cfg, data, version, root / "features", pd.read_parquet(data / "synth_meta.parquet"))


def copy_version(world: ServingWorld, dest: Path, *, tweak: str) -> Path:
    """A copy of the world's version directory with other metrics bytes (so another registry version)."""
    shutil.copytree(world.version, dest)
    metrics = json.loads((dest / "metrics.json").read_text())
    metrics["tweak"] = tweak
    (dest / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    return dest


def add_local_features(world: ServingWorld, out: Path) -> Path:
    """SIFT local features of the index and train images (``landmark local``) under ``out``."""
    from landmark.stages.local import local

    for split in ("index", "train"):
        local(world.cfg, world.data, out, split=split, progress=False)
    return out
