"""Stages ``promote`` and ``rollback``: the promotion gate over the registry in the object store.

``promote`` reads the candidate's evaluation metrics, the data-quality report (``passed``) and the drift report
(``drift_share``, ``max_drift_share``, ``passed``), compares the candidate with production (the metrics stored
with the production version, or a re-evaluation of production on the same evaluation set passed explicitly),
and, when the gate passes, publishes the model and index directories as a registry version and switches the
``production`` pointer to it. Every decision, promoted or not, is recorded in the registry's decision log and
written locally as ``decision.json``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from landmark.config import Config, config_to_dict
from landmark.errors import InputError
from landmark.ops.gate import Decision, decide

if TYPE_CHECKING:
    from datetime import datetime

    from landmark.ops.registry import FileEntry, PreparedVersion, Registry, UploadHook
    from landmark.platform.storage import ObjectStore, StorageError

DECISION_FILE = "decision.json"


@dataclass(frozen=True)
class PromoteSummary:
    """What ``promote`` did.

    Attributes:
        decision: the gate's verdict and reasons.
        outcome: ``promoted``, ``rejected`` or ``unchanged`` (promoted, but that version already served).
        candidate_version: the registry id of the candidate (uploaded only when promoted).
        decision_id: the id of the record in the registry's decision log.
        production: the production version after the stage (None: still nothing in production).
        previous: the production version before the stage.
        decision_path: the local decision.json.
        pruned: versions deleted by retention (``promote.keep_versions``).
    """

    decision: Decision
    outcome: str
    candidate_version: str
    decision_id: str
    production: str | None
    previous: str | None
    decision_path: Path
    pruned: list[str] = field(default_factory=list)

    @property
    def promoted(self) -> bool:
        return self.outcome in ("promoted", "unchanged")

    def record(self) -> dict[str, Any]:
        """The JSON-ready decision record (decision log and decision.json)."""
        return {
            "id": self.decision_id,
            "outcome": self.outcome,
            "candidate_version": self.candidate_version,
            "production_before": self.previous,
            "production_after": self.production,
            **self.decision.to_dict(),
        }


@dataclass(frozen=True)
class RollbackSummary:
    """What ``rollback`` did: the version that served before and the one that serves now."""

    previous: str
    production: str
    decision_id: str
    history: tuple[str, ...]


def read_json_file(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from ``path``.

    Raises:
        FileNotFoundError: no such file (naming ``what`` it should be).
        ValueError: not JSON, or not an object.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{what} {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InputError(f"{what} {path} must hold a JSON object, got {type(data).__name__}")
    return data


def quality_verdict(report: Mapping[str, Any], source: str) -> bool:
    """The ``passed`` flag of a data-quality report (landmark.ops.quality.QualityReport JSON)."""
    passed = report.get("passed")
    if not isinstance(passed, bool):
        raise InputError(f"quality report {source}: 'passed' must be true or false, got {passed!r}")
    return passed


def open_registry(cfg: Config, store: ObjectStore | None = None) -> Registry:
    """The registry under ``promote.prefix`` of the configured store (or of ``store``)."""
    from landmark.ops.registry import Registry
    from landmark.platform.storage import open_store

    return Registry(store if store is not None else open_store(cfg.storage), cfg.promote.prefix)


WEIGHTS_FILE = "model/weights.pt"


def same_weights(candidate: Iterable[FileEntry], production: Iterable[FileEntry]) -> bool:
    """True when both versions hold a ``model/weights.pt`` with the same sha256 (the same model, whatever its
    index or metrics say)."""
    ours = {e.path: e.sha256 for e in candidate}.get(WEIGHTS_FILE)
    theirs = {e.path: e.sha256 for e in production}.get(WEIGHTS_FILE)
    return ours is not None and ours == theirs


def _write_decision(path: Path, record: Mapping[str, Any]) -> None:
    from landmark.data.atomic import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def _production_side(
    registry: Registry, production_metrics_path: Path | None
) -> tuple[str | None, dict[str, Any] | None, str]:
    """Production's version (None: nothing in production), the metrics to compare with and what they are.

    The metrics come from ``production_metrics_path`` when given, else from the production version in the
    registry; given metrics with nothing in production yet are a ``baseline`` (e.g. the pretrained model), not
    ``production``.
    """
    pointer = registry.production()
    previous = None if pointer is None else pointer.version
    production_metrics: dict[str, Any] | None
    if production_metrics_path is not None:
        production_metrics = read_json_file(production_metrics_path, "production metrics")
    elif previous is not None:
        production_metrics = registry.metrics(previous)
    else:
        production_metrics = None
    reference = "baseline" if previous is None and production_metrics_path is not None else "production"
    return previous, production_metrics, reference


def read_golden_pair(
    golden_path: Path | None, production_golden_path: Path | None
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The candidate's and production's golden results, or None when neither is given.

    Raises:
        InputError: only one of the two is given.
    """
    if (golden_path is None) != (production_golden_path is None):
        raise InputError("pass the golden results of both the candidate and production, or neither")
    if golden_path is None or production_golden_path is None:
        return None
    return (
        read_json_file(golden_path, "candidate golden results"),
        read_json_file(production_golden_path, "production golden results"),
    )


def unless_identical(decision: Decision, identical: bool, previous: str | None) -> Decision:
    """The gate's decision, turned into "not promoted" when the candidate's weights are production's."""
    if not identical:
        return decision
    return dataclasses.replace(
        decision,
        promote=False,
        reasons=[f"candidate weights are identical to production {previous}: not registered again"],
    )


def promote_inputs(
    model_dir: Path,
    index_dir: Path,
    metrics_path: Path,
    quality_path: Path,
    drift_path: Path,
    production_metrics_path: Path | None,
    golden_path: Path | None,
    production_golden_path: Path | None,
) -> dict[str, Any]:
    """The ``inputs`` of a decision record: where each input of :func:`promote` came from."""
    return {
        "model": str(model_dir),
        "index": str(index_dir),
        "metrics": str(metrics_path),
        "quality": str(quality_path),
        "drift": str(drift_path),
        "production_metrics": str(production_metrics_path) if production_metrics_path else "registry",
        "golden": str(golden_path) if golden_path else None,
        "production_golden": str(production_golden_path) if production_golden_path else None,
    }


def _promotion_failed(
    exc: Exception,
    decision: Decision,
    base_record: Mapping[str, Any],
    candidate: str,
    previous: str | None,
    serving: str | None,
    decision_path: Path,
) -> StorageError:
    """Write the ``failed`` decision.json of a publication that hit ``exc``; returns the error to raise."""
    from landmark.platform.storage import StorageError

    failed = {
        **decision.to_dict(),
        **base_record,
        "outcome": "failed",
        "candidate_version": candidate,
        "production_before": previous,
        "production_after": serving,
        "error": str(exc),
    }
    _write_decision(decision_path, failed)
    state = (
        f"production still {previous or 'empty'} (an incomplete upload is ignored and redone by the next run)"
        if serving == previous
        else f"production switched to {serving}, but recording the decision or pruning failed"
    )
    return StorageError(f"promotion of {candidate} failed, {state}: {exc}")


def _publish_candidate(
    cfg: Config,
    registry: Registry,
    prepared: PreparedVersion,
    decision: Decision,
    previous: str | None,
    decision_path: Path,
    base_record: Mapping[str, Any],
    now: datetime,
    on_uploaded: UploadHook | None,
) -> PromoteSummary:
    """Upload a promoted candidate, switch production to it, log the decision and prune old versions.

    Raises:
        StorageError: the store failed (decision.json says ``failed``).
    """
    from landmark.ops.registry import decision_id, version_id
    from landmark.platform.storage import StorageError

    candidate = version_id(prepared.entries, now)
    serving = previous  # what production names, as far as this run knows
    try:
        candidate = registry.version_for(prepared)
        registry.publish_prepared(prepared, version=candidate, on_uploaded=on_uploaded)
        ident = decision_id(candidate, now)
        outcome = "unchanged" if candidate == previous else "promoted"
        serving = registry.switch(candidate, decision=ident, keep_history=cfg.promote.keep_versions).version
        summary = PromoteSummary(decision, outcome, candidate, ident, serving, previous, decision_path)
        registry.record_decision({**summary.record(), **base_record}, candidate, when=now)
        pruned = registry.prune(cfg.promote.keep_versions)
    except StorageError as exc:
        raise _promotion_failed(
            exc, decision, base_record, candidate, previous, serving, decision_path
        ) from exc
    summary = dataclasses.replace(summary, pruned=pruned)
    _write_decision(decision_path, {**summary.record(), **base_record, "pruned": pruned})
    return summary


def promote(
    cfg: Config,
    model_dir: Path,
    index_dir: Path,
    metrics_path: Path,
    quality_path: Path,
    drift_path: Path,
    *,
    production_metrics_path: Path | None = None,
    golden_path: Path | None = None,
    production_golden_path: Path | None = None,
    out: Path | None = None,
    store: ObjectStore | None = None,
    on_uploaded: UploadHook | None = None,
) -> PromoteSummary:
    """Gate a candidate and, when it passes, publish it and switch production to it.

    Args:
        cfg: the config (``promote`` for the gate and registry prefix, ``storage`` for the store).
        model_dir: the candidate model directory.
        index_dir: the candidate's saved index directory.
        metrics_path: the candidate's evaluation metrics.json.
        quality_path: the data-quality report JSON (needs ``passed``).
        drift_path: the drift report JSON (``drift_share``; ``max_drift_share`` and ``passed``).
        production_metrics_path: production re-evaluated on the same evaluation set; default: the metrics
            stored with the production version in the registry.
        golden_path, production_golden_path: the candidate's and production's ``golden.json``
            (``landmark golden``); given together, the gate rejects a candidate that loses more than
            ``promote.golden_tolerance`` points of medium or hard mAP on any golden real-photo set.
        out: the local decision file (default: ``decision.json`` next to ``metrics_path``).
        store: the object store (default: from ``cfg.storage`` and the environment).
        on_uploaded: called after each uploaded key (progress; tests use it to stop the store mid-upload).

    Returns:
        The summary; a rejection is a normal result, not an error.

    Raises:
        FileNotFoundError, ValueError: missing or malformed inputs, or a configured metric that is missing.
        StorageError: the store failed; the production pointer still names the previous (complete) version, and
            ``decision.json`` says ``failed`` with the error.
    """
    from landmark.ops.registry import prepare_version

    decision_path = Path(out) if out is not None else Path(metrics_path).parent / DECISION_FILE
    decision_path.unlink(missing_ok=True)  # never leave an earlier run's verdict next to new metrics
    candidate_metrics = read_json_file(metrics_path, "candidate metrics")
    quality_passed = quality_verdict(read_json_file(quality_path, "quality report"), str(quality_path))
    drift = read_json_file(drift_path, "drift report")
    prepared = prepare_version(model_dir, index_dir, candidate_metrics)

    registry = open_registry(cfg, store)
    previous, production_metrics, reference = _production_side(registry, production_metrics_path)
    golden = read_golden_pair(golden_path, production_golden_path)
    decision = decide(
        candidate_metrics, production_metrics, quality_passed, drift, cfg.promote, reference, golden
    )
    identical = previous is not None and same_weights(prepared.entries, registry.manifest(previous))
    decision = unless_identical(decision, identical, previous)

    now = registry.now()
    inputs = promote_inputs(
        model_dir,
        index_dir,
        metrics_path,
        quality_path,
        drift_path,
        production_metrics_path,
        golden_path,
        production_golden_path,
    )
    base_record = {"decided_at": now.isoformat(), "inputs": inputs, "config": config_to_dict(cfg.promote)}
    if decision.promote:
        return _publish_candidate(
            cfg, registry, prepared, decision, previous, decision_path, base_record, now, on_uploaded
        )
    outcome = "unchanged" if identical else "rejected"
    return _record_rejection(registry, prepared, decision, outcome, previous, decision_path, base_record, now)


def _record_rejection(
    registry: Registry,
    prepared: PreparedVersion,
    decision: Decision,
    outcome: str,
    previous: str | None,
    decision_path: Path,
    base_record: Mapping[str, Any],
    now: datetime,
) -> PromoteSummary:
    """Log a candidate that is not published (``outcome``: ``rejected`` or ``unchanged``); production stays."""
    from landmark.ops.registry import decision_id, version_id

    candidate = version_id(prepared.entries, now)
    summary = PromoteSummary(
        decision, outcome, candidate, decision_id(candidate, now), previous, previous, decision_path
    )
    registry.record_decision({**summary.record(), **base_record}, candidate, when=now)
    _write_decision(decision_path, {**summary.record(), **base_record})
    return summary


def _publish_and_switch(
    cfg: Config, registry: Registry, prepared: PreparedVersion, record: dict[str, Any]
) -> dict[str, Any]:
    """Upload a prepared version, point production at it and log ``record`` as the decision; returns
    ``record`` with ``production_after``."""
    from landmark.ops.registry import decision_id

    now = registry.now()
    version = registry.version_for(prepared)
    registry.publish_prepared(prepared, version=version)
    registry.switch(version, decision=decision_id(version, now), keep_history=cfg.promote.keep_versions)
    done = {**record, "production_after": version}
    registry.record_decision({**done, "decided_at": now.isoformat()}, version, when=now)
    return done


def same_index(candidate: Iterable[FileEntry], production: Iterable[FileEntry]) -> bool:
    """True when every index file of ``candidate`` is in ``production`` with the same sha256."""
    served = {e.path: e.sha256 for e in production}
    return all(served.get(e.path) == e.sha256 for e in candidate if e.path.startswith("index/"))


def refresh_index(
    cfg: Config, model_dir: Path, index_dir: Path, *, out: Path, store: ObjectStore | None = None
) -> dict[str, Any]:
    """Serve new index images without retraining: publish production's own model with ``index_dir`` (built
    from its descriptors of the grown catalog) as a new registry version and switch production to it.

    Before any version exists, ``model_dir`` (the pretrained backbone the ``production`` stage wrote) is
    registered as version 0 with the index, so that production always names a registered, servable model.
    Nothing happens (and ``out`` says why) when the index holds no new image, or when ``model_dir`` is not
    production's model (the index would not match the weights that serve it).

    Returns:
        The record written to ``out``: ``outcome`` (``version 0``, ``refreshed`` or ``skipped``), reasons,
        versions.

    Raises:
        StorageError: the store failed (production still names the previous complete version).
    """
    from landmark.ops.registry import prepare_version
    from landmark.retrieval.index import read_index_meta

    registry = open_registry(cfg, store)
    pointer = registry.production()
    before = None if pointer is None else pointer.version
    size = int(read_index_meta(index_dir)["ntotal"])
    record: dict[str, Any] = {"outcome": "skipped", "production_before": before, "production_after": before}
    if pointer is None:
        prepared = prepare_version(Path(model_dir), Path(index_dir), {"version": 0, "index_size": size})
        reason = f"version 0: the model in production before any promotion, with {size} index images"
        record = _publish_and_switch(
            cfg,
            registry,
            prepared,
            {**record, "outcome": "version 0", "index_size": size, "reasons": [reason]},
        )
    else:
        served = registry.manifest(pointer.version)
        prepared = prepare_version(Path(model_dir), Path(index_dir), registry.metrics(pointer.version))
        if not same_weights(prepared.entries, served):
            record["reasons"] = [f"{model_dir} is not the model of production {before}: not refreshed"]
        elif same_index(prepared.entries, served):
            record["reasons"] = [f"production {before} already serves this index ({size} images)"]
        else:
            reason = f"index refresh: production's model with {size} index images, no retraining"
            record = _publish_and_switch(
                cfg,
                registry,
                prepared,
                {**record, "outcome": "refreshed", "index_size": size, "reasons": [reason]},
            )
    _write_decision(Path(out), record)
    return record


PRODUCTION_FILE = "production.json"
PRETRAINED_VERSION = "pretrained"


def fetch_production(cfg: Config, out_dir: Path, *, store: ObjectStore | None = None) -> dict[str, Any]:
    """Put the production model at ``out_dir/model`` (``out_dir/production.json`` names its version): the
    registry's production version, downloaded and verified, or before the first promotion the pretrained
    backbone (version ``pretrained``). Nothing is rewritten when ``out_dir`` already holds that version, so a
    DVC stage on it changes only when production does.

    Returns:
        ``{"version": ..., "model_dir": ...}``.

    Raises:
        StorageError: the store is unreachable.
        RegistryError: the production version is incomplete or corrupt.
    """
    from landmark.data.atomic import atomic_directory
    from landmark.models.model_dir import write_pretrained_dir

    out_dir = Path(out_dir)
    pointer = open_registry(cfg, store).production()
    version = PRETRAINED_VERSION if pointer is None else pointer.version
    result = {"version": version, "model_dir": str(out_dir / "model")}
    current = out_dir / PRODUCTION_FILE
    if current.is_file() and json.loads(current.read_text()).get("version") == version:
        return result
    registry = open_registry(cfg, store)
    with atomic_directory(out_dir) as tmp:
        if pointer is None:
            write_pretrained_dir(cfg.model, tmp / "model")
        else:
            registry.download(pointer.version, tmp / "version")
            (tmp / "version" / "model").rename(tmp / "model")
            shutil.rmtree(tmp / "version")
        (tmp / PRODUCTION_FILE).write_text(json.dumps({"version": version}, indent=2) + "\n")
    return result


def rollback(cfg: Config, *, store: ObjectStore | None = None) -> RollbackSummary:
    """Switch production back to the previous version of its history and record the decision.

    Raises:
        RegistryError: nothing in production, no previous version, or the previous version is incomplete.
        StorageError: the store failed.
    """
    from landmark.ops.registry import RegistryError, decision_id

    registry = open_registry(cfg, store)
    current = registry.production()
    if current is None:
        raise RegistryError(
            f"nothing to roll back: no production model in {registry.store.uri(cfg.promote.prefix)}/"
        )
    if not current.history:
        raise RegistryError(
            f"cannot roll back: production version {current.version} has no previous version in its history"
        )
    now = registry.now()
    target = current.history[0]
    ident = decision_id(target, now)
    pointer = registry.rollback(decision=ident)
    record = {
        "outcome": "rollback",
        "decided_at": now.isoformat(),
        "production_before": current.version,
        "production_after": pointer.version,
        "reasons": [f"rollback: production switched back from {current.version} to {pointer.version}"],
    }
    registry.record_decision(record, pointer.version, when=now)
    return RollbackSummary(current.version, pointer.version, ident, pointer.history)
