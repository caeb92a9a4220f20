"""The DELF model directory: the conventions of :mod:`landmark.models.model_dir` for the local-feature model.

Layout::

    MODEL_DIR/
      config.json    format version, ``kind: "delf"``, the DelfConfig that built it, classes, channels,
                     input normalisation, seed and data
      weights.pt     DelfModel state dict (truncated backbone, attention, both classifiers)
      pca.npz        mean (C,), components (D, C), variances (D,), whiten: the descriptor PCA
      labels.json    landmark id of each classifier class, in class order
      metrics.json   training metrics
      (train_log.csv and other extra files)

Written to a temporary sibling and renamed into place, so a crash never leaves a half-written model.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from landmark.config import ConfigError, DelfConfig, config_to_dict, section_from_dict
from landmark.data.atomic import atomic_directory
from landmark.models.delf import DelfModel, DelfPca, create_delf_model
from landmark.models.model_dir import ModelDirError, weights_fingerprint

FORMAT_VERSION = 1
KIND = "delf"
_FILES = ("config.json", "weights.pt", "pca.npz", "labels.json", "metrics.json")


@dataclass(frozen=True)
class LoadedDelf:
    """A DELF model loaded from its directory (model in eval mode on the requested device)."""

    model: DelfModel
    pca: DelfPca
    config: DelfConfig
    labels: tuple[int, ...]
    metrics: dict[str, Any]
    path: Path
    fingerprint: str  # sha1 of weights.pt


def save_delf_dir(
    path: Path,
    model: DelfModel,
    pca: DelfPca,
    cfg: DelfConfig,
    labels: Sequence[int],
    metrics: Mapping[str, Any],
    *,
    extra_config: Mapping[str, Any] | None = None,
    extra_files: Sequence[Path] = (),
) -> Path:
    """Write a complete DELF model directory at ``path`` atomically (replacing an existing one).

    Raises:
        ValueError: labels or PCA that do not fit the model.
    """
    if len(labels) != model.num_classes:
        raise ValueError(f"{len(labels)} labels for a model with {model.num_classes} classes")
    if pca.input_dim != model.channels:
        raise ValueError(f"PCA expects {pca.input_dim}-d descriptors, the model gives {model.channels}-d")
    path = Path(path)
    with atomic_directory(path) as tmp:
        config = {
            "format_version": FORMAT_VERSION,
            "kind": KIND,
            "delf": config_to_dict(cfg),
            "num_classes": model.num_classes,
            "channels": model.channels,
            "normalisation": {"mean": model.mean.flatten().tolist(), "std": model.std.flatten().tolist()},
            **dict(extra_config or {}),
        }
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp / "weights.pt")
        np.savez(
            tmp / "pca.npz",
            mean=pca.mean,
            components=pca.components,
            variances=pca.variances,
            whiten=np.array(pca.whiten),
        )
        (tmp / "labels.json").write_text(json.dumps([int(x) for x in labels]))
        (tmp / "metrics.json").write_text(json.dumps(dict(metrics), indent=2, sort_keys=True))
        for extra in extra_files:
            shutil.copy2(extra, tmp / Path(extra).name)
    return path


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelDirError(f"cannot read {path}: {exc}") from exc


def _load_pca(path: Path, channels: int, dim: int) -> DelfPca:
    try:
        with np.load(path / "pca.npz") as data:
            pca = DelfPca(data["mean"], data["components"], data["variances"], bool(data["whiten"]))
    except (OSError, KeyError, ValueError) as exc:
        raise ModelDirError(f"{path}: cannot read the descriptor PCA from pca.npz: {exc}") from exc
    if pca.input_dim != channels or pca.dim != dim:
        raise ModelDirError(
            f"{path}: pca.npz maps {pca.input_dim} -> {pca.dim} dimensions, the model needs {channels} -> {dim}"
        )
    return pca


def load_delf_dir(path: Path, device: str = "cpu", feature_stride: int | None = None) -> LoadedDelf:
    """Load a DELF model directory written by :func:`save_delf_dir`.

    ``feature_stride`` (8 or 16) overrides the stride the model was trained with: the weights are the same for
    both (:func:`landmark.models.delf.create_delf_model`); the returned config records the stride used.

    Raises:
        ModelDirError: a missing or incomplete directory, another kind of model (e.g. a global descriptor
            model), an unknown format version, or a config, weights, PCA or labels that do not fit together.
        ConfigError: a ``feature_stride`` other than 8 or 16.
    """
    path = Path(path)
    if not path.is_dir():
        raise ModelDirError(f"DELF model directory not found: {path}")
    missing = [name for name in _FILES if not (path / name).is_file()]
    if missing:
        raise ModelDirError(f"{path} is not a complete DELF model directory: missing {', '.join(missing)}")
    config = _read_json(path / "config.json")
    if not isinstance(config, dict) or config.get("kind") != KIND:
        kind = config.get("kind") if isinstance(config, dict) else None
        raise ModelDirError(
            f"{path} is not a DELF model directory (config.json kind is {kind!r}, expected 'delf')"
        )
    if config.get("format_version") != FORMAT_VERSION:
        raise ModelDirError(
            f"{path}: DELF model format version {config.get('format_version')!r} is not supported "
            f"(this code reads version {FORMAT_VERSION})"
        )
    try:
        cfg = section_from_dict(DelfConfig, config.get("delf", {}), str(path / "config.json"), "delf.")
    except ConfigError as exc:
        raise ModelDirError(f"{path}: incompatible DELF config: {exc}") from exc
    num_classes, channels = int(config.get("num_classes", 0)), int(config.get("channels", 0))
    labels = tuple(int(x) for x in _read_json(path / "labels.json"))
    if len(labels) != num_classes:
        raise ModelDirError(
            f"{path}: labels.json has {len(labels)} labels, config.json says {num_classes} classes"
        )
    if feature_stride is not None:  # a bad value raises ConfigError (a ValueError) naming the key
        cfg = replace(cfg, feature_stride=int(feature_stride))
    # The weights come from weights.pt, so the backbone is built without loading any pretrained weights.
    model = create_delf_model(cfg.backbone, "none", num_classes, cfg.attention_hidden, cfg.feature_stride)
    if model.channels != channels:
        raise ModelDirError(
            f"{path}: {cfg.backbone} gives {model.channels} channels, config.json says {channels}"
        )
    state = torch.load(path / "weights.pt", map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelDirError(f"{path}: weights do not fit the DELF model on {cfg.backbone}: {exc}") from exc
    norm = config.get("normalisation", {})
    if norm:
        model.mean.copy_(torch.tensor(norm["mean"]).view(1, 3, 1, 1))
        model.std.copy_(torch.tensor(norm["std"]).view(1, 3, 1, 1))
    return LoadedDelf(
        model=model.to(device).eval(),
        pca=_load_pca(path, channels, cfg.pca_dim),
        config=cfg,
        labels=labels,
        metrics=_read_json(path / "metrics.json"),
        path=path,
        fingerprint=weights_fingerprint(path),
    )
