"""A registry version (or a model and index on disk) loaded for answering queries.

:func:`load_served_model` turns a version directory (``model/``, ``index/``, ``metrics.json``, ``MANIFEST.json``,
as :meth:`landmark.ops.registry.Registry.download` writes it) into a :class:`ServedModel`: the descriptor model, the
index with its vectors, ids and labels, the labelled train set, the "no landmark" threshold from the version's
evaluation metrics, and the retrieval / recognition config ``evaluate`` would run with that data. Steps whose
data the version lacks are switched off with a note, exactly as ``evaluate`` skips them.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch

from landmark.cleaning.verify import StoreVerifier
from landmark.config import (
    Config,
    ConfigError,
    ExtractConfig,
    IndexConfig,
    LocalConfig,
    RecognizeConfig,
    RerankConfig,
    section_from_dict,
)
from landmark.errors import LandmarkError
from landmark.models.model_dir import load_model_dir
from landmark.ops.registry import INDEX_PART, METRICS, MODEL_PART
from landmark.retrieval.index import ShardedIndex, load_index
from landmark.retrieval.index_labels import read_index_labels, read_labelled_set
from landmark.retrieval.recognize import LabelledSet
from landmark.retrieval.rerank import (
    SearchDatabase,
    applied_steps,
    label_steps_enabled,
    prepare_database,
    without_label_steps,
)

logger = logging.getLogger(__name__)

SKIPPED_SPATIAL = "spatial verification skipped"  # evaluate's note when it ran without local features


class ServingLoadError(LandmarkError, ValueError):
    """A version that cannot be served: missing parts, a model and index that do not belong together."""


@dataclass(frozen=True)
class ServedModel:
    """Everything one version needs to answer search and recognize requests (read-only once built).

    Attributes:
        version: the registry version id, or ``local:<dir>`` for a model and index on disk.
        model: the descriptor model, in eval mode on ``device``.
        model_id: the first 12 hex digits of the weights' sha1.
        backbone: the model's backbone name.
        device: where the model runs.
        extract: the extraction settings the index descriptors were made with (queries use the same).
        index: the saved index (first-stage search).
        db: (n, dim) float32 index descriptors, in index position order.
        labels: (n,) manifest landmark ids of the indexed images (-1 unknown), or None when not stored.
        train: the labelled train descriptors ``evaluate`` votes over, or None when not stored.
        rerank: the re-ranking config in effect (``evaluate``'s, minus steps this version has no data for).
        recognize: the recognition config in effect (same rule).
        index_cfg: the ``index`` config (kind of in-memory indexes built while re-ranking).
        topk: the list length re-ranking works on (``evaluate.topk``); answers are cut from it.
        seed: the config seed (DQE negatives, IVF-PQ training).
        threshold: the calibrated "no landmark" threshold from the version's metrics, or None.
        verifier: spatial verification against the stored local features of the index (and train) images, or
            None when ``rerank.spatial`` / ``recognize.inliers`` are off or the local features are missing.
        local: how query local features are extracted (the ``local`` section the stores were written with).
        metrics: the version's evaluation metrics.
        notes: what is switched off and why, and other caveats.
        loaded_at: UTC time of loading (ISO 8601).
    """

    version: str
    model: torch.nn.Module
    model_id: str
    backbone: str
    device: str
    extract: ExtractConfig
    index: ShardedIndex
    db: np.ndarray
    labels: np.ndarray | None
    train: LabelledSet | None
    rerank: RerankConfig
    recognize: RecognizeConfig
    index_cfg: IndexConfig
    topk: int
    seed: int
    threshold: float | None
    verifier: StoreVerifier | None = None
    # the query-independent part of every search (DBA, the database's label votes), prepared at load
    database: SearchDatabase | None = None
    local: LocalConfig = field(default_factory=LocalConfig)
    metrics: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    loaded_at: str = ""

    @property
    def ids(self) -> list[str]:
        """Image id of each index position."""
        return self.index.ids

    @functools.cached_property
    def id_set(self) -> frozenset[str]:
        """The indexed image ids, for membership checks."""
        return frozenset(self.index.ids)

    def summary(self) -> dict[str, Any]:
        """A JSON-ready description (``/healthz``, ``--json`` output)."""
        return {
            "version": self.version,
            "model": {"id": self.model_id, "backbone": self.backbone, "dim": int(self.db.shape[1])},
            "index": {
                "size": int(self.db.shape[0]),
                "kind": self.index.meta.get("kind"),
                "labelled": None if self.labels is None else int(np.sum(self.labels >= 0)),
            },
            "train_set": None if self.train is None else int(np.size(self.train.labels)),
            "threshold": self.threshold,
            "rerank_steps": applied_steps(self.rerank),
            "recognition_inliers": self.recognize.inliers,
            "notes": list(self.notes),
            "loaded_at": self.loaded_at,
        }


def index_vectors(index: ShardedIndex) -> np.ndarray:
    """(ntotal, dim) float32 vectors of a CPU index, shard by shard (exact for flat, decoded for IVF-PQ)."""
    parts = []
    for shard in index.shards:
        if faiss.try_extract_index_ivf(shard) is not None:
            faiss.extract_index_ivf(shard).make_direct_map()
        parts.append(shard.reconstruct_n(0, shard.ntotal))
    return np.ascontiguousarray(np.vstack(parts), dtype=np.float32)


def extract_settings(index: ShardedIndex, fallback: ExtractConfig) -> tuple[ExtractConfig, str]:
    """The extraction settings recorded with the index's descriptors (queries must be described alike), or
    ``fallback`` with a note when the index does not record usable ones."""
    raw = index.meta.get("features", {}).get("extract")
    if not isinstance(raw, dict):
        return (
            fallback,
            "the index records no extraction settings: queries use the configured extract section",
        )
    try:
        return section_from_dict(ExtractConfig, raw, "index meta.json", "extract."), ""
    except ConfigError as exc:
        return fallback, f"unusable extraction settings in the index ({exc}): queries use the configured ones"


def check_model_matches_index(index: ShardedIndex, weights_sha1: str) -> None:
    """Raise :class:`ServingLoadError` when the index records descriptors of other weights than the model's."""
    recorded = index.meta.get("features", {}).get("weights_sha1")
    if recorded is not None and recorded != weights_sha1:
        raise ServingLoadError(
            f"the index was built from descriptors of weights {str(recorded)[:12]} but the model's weights are "
            f"{weights_sha1[:12]}: model and index do not belong together"
        )


def calibrated_threshold(metrics: dict[str, Any]) -> float | None:
    """The "no landmark" threshold ``evaluate`` chose (``recognition.threshold``), or None when absent."""
    value = metrics.get("recognition", {}).get("threshold")
    return float(value) if isinstance(value, int | float) and np.isfinite(value) else None


def effective_config(
    cfg: Config, train: LabelledSet | None, verifier_note: str
) -> tuple[RerankConfig, RecognizeConfig, list[str]]:
    """``evaluate``'s rerank / recognize config minus what this version cannot run, with the reasons (the
    same rules as ``evaluate``: no local features -> no spatial step and no inlier term; no train set -> no
    sort/insert steps)."""
    rerank, recognize, notes = cfg.rerank, cfg.recognize, []
    if verifier_note:
        rerank, recognize = replace(rerank, spatial=False), replace(recognize, inliers=False)
        notes.append(f"{SKIPPED_SPATIAL}: {verifier_note}")
    if train is None and label_steps_enabled(rerank):
        rerank = without_label_steps(rerank)
        notes.append("sort/insert steps skipped: the version stores no labelled train set")
    if train is None:
        notes.append("recognition unavailable: the version stores no labelled train set")
    return rerank, recognize, notes


def open_local_verifier(
    cfg: Config, local_dir: Path | None, index_ids: list[str], train: LabelledSet | None
) -> tuple[StoreVerifier | None, str]:
    """The spatial verifier ``rerank.spatial`` / ``recognize.inliers`` ask for, over the local feature stores
    ``local_dir/index`` and ``local_dir/train`` (``landmark local``), and why there is none: neither is switched
    on, a store is missing, was written with other ``local`` settings, or lacks images of this version."""
    from landmark.features.local_extract import store_meta
    from landmark.features.local_store import LocalFeatureReader, read_local_meta

    needed = {"index": index_ids} if cfg.rerank.spatial else {}
    if cfg.recognize.inliers:
        needed["train"] = list(train.ids) if train is not None else []
    if not needed:
        return None, ""
    if local_dir is None:
        return None, "no local feature stores given (landmark serve --local-features DIR)"
    readers = []
    for split, ids in needed.items():
        root = Path(local_dir) / split
        if not root.is_dir():
            return None, f"no local features of {split} in {local_dir} (run `landmark local --split {split}`)"
        meta, wanted = read_local_meta(root), store_meta(cfg.local)
        if any(meta.get(k) != v for k, v in wanted.items()):
            return None, f"{root} was written with other local settings than the config's local section"
        reader = LocalFeatureReader(root)
        missing = sum(1 for i in ids if i not in reader)
        if missing:
            return None, f"{root} lacks local features of {missing} of the version's {split} images"
        readers.append(reader)
    return StoreVerifier(readers, cfg.verify), ""


def threshold_note(metrics: dict[str, Any], recognize: RecognizeConfig) -> str:
    """A caveat when evaluation calibrated the threshold without the inlier term (it noted that it skipped
    spatial verification) but serving adds it: the confidences are then on a higher scale than calibrated."""
    notes = metrics.get("rerank", {}).get("notes", []) if "recognition" in metrics else []
    calibrated_without = any(SKIPPED_SPATIAL in str(n) for n in notes)
    if calibrated_without and recognize.inliers:
        return (
            "the threshold was calibrated without the recognition inlier term (evaluation had no local "
            "features) and serving adds it: more images pass it than the target false-positive rate allows"
        )
    return ""


def _read_metrics(root: Path) -> dict[str, Any]:
    path = root / METRICS
    return _read_json_object(path) if path.is_file() else {}


def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ServingLoadError(f"{path} is not valid JSON: {exc}") from exc
    return data if isinstance(data, dict) else {}


def read_index_labelling(
    index_dir: Path, ntotal: int, dim: int
) -> tuple[np.ndarray | None, LabelledSet | None]:
    """The (ntotal,) landmark ids of an index of ``ntotal`` ``dim``-d vectors (``labels.json``) and its labelled
    train set; None for either that the index does not store.

    Raises:
        ServingLoadError: malformed files, or a train set of another dimension.
    """
    try:
        labels = read_index_labels(index_dir, ntotal)
        train = read_labelled_set(index_dir)
    except ValueError as exc:
        raise ServingLoadError(str(exc)) from exc
    if train is not None and train.vectors.shape[1] != dim:
        raise ServingLoadError(f"the train set holds {train.vectors.shape[1]}-d vectors, the index {dim}-d")
    return labels, train


def served_threshold(
    metrics: dict[str, Any], train: LabelledSet | None, recognize: RecognizeConfig
) -> tuple[float | None, list[str]]:
    """The calibrated "no landmark" threshold of a version's metrics (None: none) and the notes about it."""
    threshold = calibrated_threshold(metrics)
    notes = []
    if train is not None and threshold is None:
        notes.append("no calibrated threshold in the version's metrics: every recognition is accepted")
    caveat = threshold_note(metrics, recognize)
    return threshold, notes + ([caveat] if caveat else [])


def load_served_model(
    cfg: Config,
    model_dir: Path,
    index_dir: Path,
    *,
    version: str,
    metrics: dict[str, Any] | None = None,
    local_dir: Path | None = None,
    device: str = "cpu",
) -> ServedModel:
    """Load a model directory and its saved index for serving.

    Args:
        cfg: the config (``rerank``, ``recognize``, ``index``, ``evaluate.topk``, ``seed``, ``extract`` as a
            fallback).
        model_dir: the model directory (``landmark train``, or a version's ``model/``).
        index_dir: the index directory (``landmark index``, or a version's ``index/``).
        version: the name answers carry (a registry version id, or ``local:<dir>``).
        metrics: the evaluation metrics (the "no landmark" threshold); None = none known.
        local_dir: local feature stores (``index/``, ``train/``) for spatial verification and the inlier term.
        device: where the model runs ("cpu" for serving).

    Raises:
        ServingLoadError: model and index do not belong together, or files are malformed.
        ModelDirError, FileNotFoundError, ValueError: a missing or broken model or index directory.
    """
    loaded = load_model_dir(Path(model_dir), device=device)
    index = load_index(Path(index_dir), gpu="off")
    check_model_matches_index(index, loaded.fingerprint)
    extract, extract_note = extract_settings(index, cfg.extract)
    db = index_vectors(index)
    if db.shape[1] != loaded.model.dim:
        raise ServingLoadError(
            f"the index holds {db.shape[1]}-d vectors, the model makes {loaded.model.dim}-d ones"
        )
    labels, train = read_index_labelling(Path(index_dir), index.ntotal, db.shape[1])
    verifier, verifier_note = open_local_verifier(cfg, local_dir, index.ids, train)
    rerank, recognize, notes = effective_config(cfg, train, verifier_note)
    notes = ([extract_note] if extract_note else []) + notes
    if labels is None:
        notes.append("the index stores no labels (labels.json): results show predicted landmarks only")
    metrics = dict(metrics or {})
    threshold, threshold_notes = served_threshold(metrics, train, recognize)
    notes += threshold_notes
    loaded.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return ServedModel(
        version=version,
        model=loaded.model,
        model_id=loaded.fingerprint[:12],
        backbone=loaded.config.backbone,
        device=device,
        extract=extract,
        index=index,
        db=db,
        labels=labels,
        train=train,
        rerank=rerank,
        recognize=recognize,
        index_cfg=cfg.index,
        topk=cfg.evaluate.topk,
        seed=cfg.seed,
        threshold=threshold,
        verifier=verifier if (rerank.spatial or recognize.inliers) else None,
        database=prepare_database(
            db, rerank, index_cfg=cfg.index, seed=cfg.seed, train=train, first_stage=index
        ),
        local=cfg.local,
        metrics=metrics,
        notes=tuple(notes),
        loaded_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def _require_version_dir(root: Path) -> None:
    for part in (MODEL_PART, INDEX_PART):
        if not (root / part).is_dir():
            raise ServingLoadError(
                f"{root} is not a version directory (no {part}/ in it); give a model directory with --index"
            )


def load_version_dir(
    cfg: Config, root: Path, *, version: str, local_dir: Path | None = None, device: str = "cpu"
) -> ServedModel:
    """Load a version directory (``model/``, ``index/``, ``metrics.json``) for serving."""
    root = Path(root)
    _require_version_dir(root)
    return load_served_model(
        cfg,
        root / MODEL_PART,
        root / INDEX_PART,
        version=version,
        metrics=_read_metrics(root),
        local_dir=local_dir,
        device=device,
    )


def load_local(
    cfg: Config,
    local: Path,
    index_dir: Path | None = None,
    *,
    metrics_path: Path | None = None,
    local_dir: Path | None = None,
    device: str = "cpu",
) -> ServedModel:
    """A model and index on disk, without a store.

    Args:
        cfg: the config.
        local: a version-like directory (``model/`` + ``index/``, optional ``metrics.json``), or a model
            directory when ``index_dir`` is given.
        index_dir: the index directory to serve with the model directory ``local``.
        metrics_path: evaluation metrics (the "no landmark" threshold); default: the version-like directory's
            ``metrics.json``, none for a model directory.
        local_dir: local feature stores for spatial verification (see :func:`load_served_model`).
        device: where the model runs.
    """
    local = Path(local)
    if metrics_path is not None and not Path(metrics_path).is_file():
        raise FileNotFoundError(f"metrics file not found: {metrics_path}")
    if index_dir is None:
        _require_version_dir(local)
        model_dir, index_dir, metrics = local / MODEL_PART, local / INDEX_PART, _read_metrics(local)
    else:
        model_dir, metrics = local, {}
    if metrics_path is not None:
        metrics = _read_json_object(Path(metrics_path))
    return load_served_model(
        cfg,
        model_dir,
        Path(index_dir),
        version=f"local:{local}",
        metrics=metrics,
        local_dir=local_dir,
        device=device,
    )
