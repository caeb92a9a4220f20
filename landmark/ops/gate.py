"""The promotion gate: a pure decision over metrics, the data-quality verdict and the drift report.

A candidate model is promoted only when (1) its data passed the quality gate (unless ``require_quality`` is off),
(2) every configured metric beats the production model's by at least ``min_improvement`` points (no production
model yet: the first candidate needs no comparison), and (3) the drift share is within the bound (the configured
``max_drift_share``, else the bound and verdict stored in the drift report). Every check adds one readable
sentence with its numbers to the decision's reasons, whether it passed or not, so the recorded decision explains
itself.

Metrics are addressed by dotted paths into ``metrics.json`` (``revisitop.medium.mAP``, ``recognition.GAP``);
they are in percent, so margins are in points.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from landmark.config import PromoteConfig
from landmark.errors import InputError

_TOLERANCE = 1e-9  # deltas like 70.3 - 70.0 must meet a 0.3 margin despite binary floating point


@dataclass(frozen=True)
class Decision:
    """The gate's verdict.

    Attributes:
        promote: True when every check passed.
        reasons: one sentence per check, in order: quality, each metric, drift.
        deltas: candidate minus production per metric, points (empty for the first model).
        candidate: the candidate's value of each configured metric.
        production: production's values, or None when there is no production model.
        drift_share: the drift report's share of drifted features.
        drift_bound: the bound it was compared with.
        golden: set / protocol / production / candidate / delta rows of the golden real-photo sets.
    """

    promote: bool
    reasons: list[str]
    deltas: dict[str, float] = field(default_factory=dict)
    candidate: dict[str, float] = field(default_factory=dict)
    production: dict[str, float] | None = None
    drift_share: float | None = None
    drift_bound: float | None = None
    golden: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        """One line: the verdict and, when rejected, the sentences of the failed checks."""
        if self.promote:
            return "PROMOTE: " + "; ".join(self.reasons)
        return "REJECT: " + "; ".join(r for r in self.reasons if not r.endswith(": ok"))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored in the decision log and in decision.json)."""
        return {
            "promote": self.promote,
            "reasons": list(self.reasons),
            "deltas": dict(self.deltas),
            "candidate": dict(self.candidate),
            "production": None if self.production is None else dict(self.production),
            "drift_share": self.drift_share,
            "drift_bound": self.drift_bound,
            "golden": [dict(row) for row in self.golden],
        }


def metric_value(metrics: Mapping[str, Any], path: str, *, source: str = "metrics") -> float:
    """The number at dotted ``path`` in a nested metrics mapping.

    Raises:
        ValueError: a missing key (naming the path, the missing part and what is there instead) or a value that
            is not a finite number.
    """
    node: Any = metrics
    walked: list[str] = []
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            where = ".".join(walked) or "the top level"
            available = ", ".join(sorted(map(str, node))) if isinstance(node, Mapping) else "not a mapping"
            raise InputError(
                f"metric {path!r} not found in {source}: no key {part!r} at {where} (available: {available})"
            )
        node = node[part]
        walked.append(part)
    if isinstance(node, bool) or not isinstance(node, int | float) or not math.isfinite(node):
        raise InputError(f"metric {path!r} in {source} must be a finite number, got {node!r}")
    return float(node)


def drift_bound(drift: Mapping[str, Any], cfg: PromoteConfig) -> tuple[float, float, bool | None]:
    """(drift share, bound, the report's own verdict or None when the configured bound overrides it).

    Raises:
        ValueError: ``drift_share`` (or, without a configured bound, ``max_drift_share``/``passed``) missing or
            not valid.
    """
    share = _fraction(drift, "drift_share")
    if cfg.max_drift_share is not None:
        return share, cfg.max_drift_share, None
    bound = _fraction(drift, "max_drift_share")
    verdict = drift.get("passed")
    if not isinstance(verdict, bool):
        raise InputError(f"drift report: 'passed' must be true or false, got {verdict!r}")
    return share, bound, verdict


def _fraction(drift: Mapping[str, Any], key: str) -> float:
    value = drift.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise InputError(f"drift report: {key!r} must be a number in [0, 1], got {value!r}")
    return float(value)


def _quality_reason(quality_passed: bool, require_quality: bool) -> tuple[bool, str]:
    if quality_passed:
        return True, "data quality: passed: ok"
    if not require_quality:
        return True, "data quality: failed, ignored because promote.require_quality is false: ok"
    return False, "data quality: the candidate's data failed validation"


def _metric_reason(
    name: str, candidate: float, production: float, margin: float, reference: str = "production"
) -> tuple[bool, str]:
    delta = candidate - production
    ok = delta >= margin - _TOLERANCE
    sentence = (
        f"{name}: candidate {candidate:.3f} vs {reference} {production:.3f} "
        f"({delta:+.3f} points, needs >= {margin:+.3f})"
    )
    return ok, sentence + (": ok" if ok else ": not enough")


def _drift_reason(share: float, bound: float, verdict: bool | None) -> tuple[bool, str]:
    within = share <= bound + _TOLERANCE
    if not within:
        return False, f"drift: share {share:.3f} exceeds the bound {bound:.3f}"
    if verdict is False:
        return False, f"drift: share {share:.3f} <= bound {bound:.3f} but the drift report failed"
    return True, f"drift: share {share:.3f} <= bound {bound:.3f}: ok"


def golden_checks(
    candidate: Mapping[str, Any], production: Mapping[str, Any], tolerance: float
) -> list[tuple[bool, str]]:
    """One gate check per golden set production was scored on: the candidate may lose at most ``tolerance``
    points of medium and of hard mAP (pure; the reasons name the set, both values and the loss)."""
    checks: list[tuple[bool, str]] = []
    for name, theirs in sorted(production.get("sets", {}).items()):
        ours = candidate.get("sets", {}).get(name)
        if ours is None:
            checks.append((False, f"golden {name}: the candidate was not scored on it"))
            continue
        losses = {p: round(float(ours[p]) - float(theirs[p]), 3) for p in ("medium", "hard")}
        ok = all(delta >= -tolerance - 1e-9 for delta in losses.values())
        values = ", ".join(
            f"{p} {float(ours[p]):.1f} vs {float(theirs[p]):.1f} ({losses[p]:+.1f})"
            for p in ("medium", "hard")
        )
        verdict = "ok" if ok else f"loses more than {tolerance:g} points on real photos"
        checks.append((ok, f"golden {name}: {values}: {verdict}"))
    if not checks:
        notes = "; ".join([*production.get("notes", []), *candidate.get("notes", [])]) or "none configured"
        checks.append((True, f"golden: no golden set ({notes}): ok"))
    return checks


def golden_summary(candidate: Mapping[str, Any], production: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows set / protocol / production / candidate / delta, for tables and dashboards."""
    rows = []
    for name, theirs in sorted(production.get("sets", {}).items()):
        ours = candidate.get("sets", {}).get(name, {})
        for protocol in ("medium", "hard"):
            if protocol in ours:
                rows.append(
                    {
                        "set": name,
                        "protocol": protocol,
                        "production": theirs[protocol],
                        "candidate": ours[protocol],
                        "delta": round(float(ours[protocol]) - float(theirs[protocol]), 3),
                    }
                )
    return rows


def decide(
    candidate_metrics: Mapping[str, Any],
    production_metrics: Mapping[str, Any] | None,
    quality_passed: bool,
    drift: Mapping[str, Any],
    cfg: PromoteConfig,
    reference: str = "production",
    golden: tuple[Mapping[str, Any], Mapping[str, Any]] | None = None,
) -> Decision:
    """Decide whether the candidate replaces production (pure: no I/O).

    Args:
        candidate_metrics: the candidate's metrics.json content.
        production_metrics: production's metrics on the same evaluation set, or None when there is no
            production model yet (then only quality and drift decide).
        quality_passed: the data-quality report's verdict.
        drift: the drift report (``drift_share``; ``max_drift_share`` and ``passed`` when the config sets no
            bound).
        cfg: the ``promote`` config (metrics, margin, quality requirement, drift bound).
        reference: what ``production_metrics`` are, in the reasons (e.g. "baseline" for the pretrained model
            evaluated before the first promotion).
        golden: (candidate, production) ``golden.json`` contents (:mod:`landmark.stages.golden`): the candidate
            may lose at most ``cfg.golden_tolerance`` points of medium or hard mAP on each golden set.

    Returns:
        The decision, with one reason per check (quality, each metric, drift).

    Raises:
        ValueError: a configured metric missing from either metrics mapping, or an invalid drift report.
    """
    checks: list[tuple[bool, str]] = [_quality_reason(quality_passed, cfg.require_quality)]
    candidate = {m: metric_value(candidate_metrics, m, source="candidate metrics") for m in cfg.metrics}
    production: dict[str, float] | None = None
    deltas: dict[str, float] = {}
    if production_metrics is None:
        values = ", ".join(f"{m} = {v:.3f}" for m, v in candidate.items())
        checks.append((True, f"metrics: no production model yet, first candidate has {values}: ok"))
    else:
        production = {
            m: metric_value(production_metrics, m, source="production metrics") for m in cfg.metrics
        }
        for m in cfg.metrics:
            deltas[m] = round(candidate[m] - production[m], 6)
            checks.append(_metric_reason(m, candidate[m], production[m], cfg.min_improvement, reference))
    share, bound, verdict = drift_bound(drift, cfg)
    checks.append(_drift_reason(share, bound, verdict))
    if golden is not None:
        checks += golden_checks(golden[0], golden[1], cfg.golden_tolerance)
    return Decision(
        promote=all(ok for ok, _ in checks),
        reasons=[sentence for _, sentence in checks],
        deltas=deltas,
        candidate=candidate,
        production=production,
        drift_share=share,
        drift_bound=bound,
        golden=golden_summary(golden[0], golden[1]) if golden is not None else [],
    )
