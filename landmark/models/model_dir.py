"""The model directory: everything needed to use (or resume from) a trained global descriptor model.

Layout::

    MODEL_DIR/
      config.json    format version, the ModelConfig that built it, the TrainConfig, input normalisation
      weights.pt     GlobalDescriptor state dict (backbone + GeM + neck)
      head.pt        the margin head's class weights (optional; recognition by class similarity)
      labels.json    landmark id of each head class, in class order
      metrics.json   training (and later evaluation) metrics

A directory is written to a temporary sibling and renamed into place, so a crash never leaves a half-written
model where a complete one is expected.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from landmark.config import ConfigError, ModelConfig, config_to_dict, section_from_dict
from landmark.data.atomic import atomic_directory
from landmark.errors import LandmarkError
from landmark.models.global_model import GlobalDescriptor, create_global_model

FORMAT_VERSION = 1
_FILES = ("config.json", "weights.pt", "labels.json", "metrics.json")


class ModelDirError(LandmarkError, ValueError):
    """A model directory that is missing, incomplete or incompatible with this code."""


@dataclass(frozen=True)
class LoadedModel:
    """A model loaded from a model directory."""

    model: GlobalDescriptor
    config: ModelConfig
    labels: tuple[int, ...]
    metrics: dict[str, Any]
    path: Path
    fingerprint: str  # sha1 of weights.pt: identifies the exact weights (e.g. in feature-store metadata)


def save_model_dir(
    path: Path,
    model: GlobalDescriptor,
    model_cfg: ModelConfig,
    labels: Sequence[int],
    metrics: Mapping[str, Any],
    *,
    extra_config: Mapping[str, Any] | None = None,
    head: torch.nn.Module | None = None,
    extra_files: Sequence[Path] = (),
) -> Path:
    """Write a complete model directory at ``path`` atomically (replacing an existing one).

    ``extra_files`` (e.g. the training log) are copied in under their own names.
    """
    path = Path(path)
    with atomic_directory(path) as tmp:
        config = {
            "format_version": FORMAT_VERSION,
            "model": config_to_dict(model_cfg),
            "normalisation": {"mean": model.mean.flatten().tolist(), "std": model.std.flatten().tolist()},
            **dict(extra_config or {}),
        }
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp / "weights.pt")
        if head is not None:
            torch.save({k: v.detach().cpu() for k, v in head.state_dict().items()}, tmp / "head.pt")
        (tmp / "labels.json").write_text(json.dumps([int(x) for x in labels]))
        (tmp / "metrics.json").write_text(json.dumps(dict(metrics), indent=2, sort_keys=True))
        for extra in extra_files:
            shutil.copy2(extra, tmp / Path(extra).name)
    return path


def weights_fingerprint(path: Path) -> str:
    """sha1 of a model directory's weights file."""
    digest = hashlib.sha1()
    with open(Path(path) / "weights.pt", "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelDirError(f"cannot read {path}: {exc}") from exc


def load_model_dir(path: Path, device: str = "cpu") -> LoadedModel:
    """Load a model directory written by :func:`save_model_dir`.

    Raises:
        ModelDirError: when files are missing, the format version is unknown, the config does not fit this
            code, or the weights do not match the architecture the config describes.
    """
    path = Path(path)
    if not path.is_dir():
        raise ModelDirError(f"model directory not found: {path}")
    missing = [name for name in _FILES if not (path / name).is_file()]
    if missing:
        raise ModelDirError(f"{path} is not a complete model directory: missing {', '.join(missing)}")
    config = _read_json(path / "config.json")
    version = config.get("format_version") if isinstance(config, dict) else None
    if version != FORMAT_VERSION:
        raise ModelDirError(
            f"{path}: model format version {version!r} is not supported (this code reads version {FORMAT_VERSION})"
        )
    try:
        model_cfg = section_from_dict(
            ModelConfig, config.get("model", {}), str(path / "config.json"), "model."
        )
    except ConfigError as exc:
        raise ModelDirError(f"{path}: incompatible model config: {exc}") from exc
    # The weights come from weights.pt, so the backbone is built without loading any pretrained weights.
    model = create_global_model(dataclasses.replace(model_cfg, pretrained="none"))
    state = torch.load(path / "weights.pt", map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelDirError(
            f"{path}: weights do not fit the {model_cfg.backbone} architecture: {exc}"
        ) from exc
    norm = config.get("normalisation", {})
    if norm:
        model.mean.copy_(torch.tensor(norm["mean"]).view(1, 3, 1, 1))
        model.std.copy_(torch.tensor(norm["std"]).view(1, 3, 1, 1))
    labels = tuple(int(x) for x in _read_json(path / "labels.json"))
    return LoadedModel(
        model=model.to(device).eval(),
        config=model_cfg,
        labels=labels,
        metrics=_read_json(path / "metrics.json"),
        path=path,
        fingerprint=weights_fingerprint(path),
    )


PRETRAINED_FILE = "pretrained.json"


def write_pretrained_dir(model_cfg: ModelConfig, path: Path) -> Path:
    """The off-the-shelf backbone + GeM (no neck) as a complete model directory: version 0, what serves before
    the first promotion. Its weights are the backbone's ``model.pretrained`` weights (e.g. the installed
    package's); ``pretrained.json`` marks it."""
    cfg = dataclasses.replace(model_cfg, embedding_dim=0)
    with atomic_directory(path) as tmp:
        save_model_dir(tmp / "model", create_global_model(cfg), cfg, [], {"version": 0})
        for item in (tmp / "model").iterdir():
            item.rename(tmp / item.name)
        (tmp / "model").rmdir()
        (tmp / PRETRAINED_FILE).write_text(json.dumps(config_to_dict(cfg), indent=2, sort_keys=True) + "\n")
    return Path(path)


def descriptor_model(
    model_cfg: ModelConfig, model_dir: Path | None
) -> tuple[GlobalDescriptor, dict[str, Any]]:
    """The descriptor model to extract with, and metadata identifying it.

    With ``model_dir`` the model directory is loaded (a trained model, or version 0 written by
    :func:`write_pretrained_dir`); without it the off-the-shelf backbone with GeM pooling (no neck: a randomly
    initialised projection would only add noise) is used.
    """
    if model_dir is not None:
        loaded = load_model_dir(model_dir)
        return loaded.model, {"model_dir": str(model_dir), "weights_sha1": loaded.fingerprint}
    cfg = dataclasses.replace(model_cfg, embedding_dim=0)
    return create_global_model(cfg), {"model": config_to_dict(cfg)}
