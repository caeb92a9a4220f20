"""The promotion gate (landmark.ops.gate.decide): pure decisions with exact reasons."""

from __future__ import annotations

from typing import Any

import pytest

from landmark.config import PromoteConfig
from landmark.ops.gate import decide, metric_value

CFG = PromoteConfig(metrics=("revisitop.medium.mAP", "recognition.GAP"), min_improvement=0.5)
DRIFT_OK = {"drift_share": 0.1, "passed": True, "max_drift_share": 0.3}


def metrics(medium: float, gap: float) -> dict[str, Any]:
    return {
        "revisitop": {"easy": {"mAP": 90.0}, "medium": {"mAP": medium, "queries": 6}},
        "recognition": {"GAP": gap, "top1": 50.0},
    }


def test_better_candidate_is_promoted_with_every_reason() -> None:
    decision = decide(metrics(71.2, 60.5), metrics(70.0, 60.0), True, DRIFT_OK, CFG)
    assert decision.promote
    assert decision.reasons == [
        "data quality: passed: ok",
        "revisitop.medium.mAP: candidate 71.200 vs production 70.000 (+1.200 points, needs >= +0.500): ok",
        "recognition.GAP: candidate 60.500 vs production 60.000 (+0.500 points, needs >= +0.500): ok",
        "drift: share 0.100 <= bound 0.300: ok",
    ]
    assert decision.deltas == {"revisitop.medium.mAP": 1.2, "recognition.GAP": 0.5}
    assert decision.candidate == {"revisitop.medium.mAP": 71.2, "recognition.GAP": 60.5}
    assert decision.production == {"revisitop.medium.mAP": 70.0, "recognition.GAP": 60.0}
    assert (decision.drift_share, decision.drift_bound) == (0.1, 0.3)


def test_worse_candidate_is_rejected() -> None:
    decision = decide(metrics(69.0, 61.0), metrics(70.0, 60.0), True, DRIFT_OK, CFG)
    assert not decision.promote
    assert decision.reasons[1] == (
        "revisitop.medium.mAP: candidate 69.000 vs production 70.000 (-1.000 points, needs >= +0.500): not enough"
    )
    assert decision.reasons[2].endswith(": ok")  # GAP improved by 1.0 but every metric must improve
    assert decision.deltas == {"revisitop.medium.mAP": -1.0, "recognition.GAP": 1.0}
    assert decision.summary() == (
        "REJECT: revisitop.medium.mAP: candidate 69.000 vs production 70.000 (-1.000 points, needs >= +0.500): "
        "not enough"
    )


@pytest.mark.parametrize(
    ("candidate", "margin", "promote"),
    [
        (70.5, 0.5, True),  # exactly the margin
        (70.3, 0.3, True),  # 70.3 - 70.0 = 0.29999999999999716 in binary: still meets the margin
        (70.499, 0.5, False),  # just below
        (70.0, 0.0, True),  # margin 0: a tie is good enough
        (69.999, 0.0, False),
    ],
)
def test_margin_edges(candidate: float, margin: float, promote: bool) -> None:
    cfg = PromoteConfig(metrics=("revisitop.medium.mAP",), min_improvement=margin)
    decision = decide(metrics(candidate, 0.0), metrics(70.0, 0.0), True, DRIFT_OK, cfg)
    assert decision.promote is promote


def test_failed_quality_blocks_unless_not_required() -> None:
    better = (metrics(75.0, 65.0), metrics(70.0, 60.0))
    decision = decide(*better, False, DRIFT_OK, CFG)
    assert not decision.promote
    assert decision.reasons[0] == "data quality: the candidate's data failed validation"
    assert decision.summary() == "REJECT: data quality: the candidate's data failed validation"
    lenient = PromoteConfig(metrics=CFG.metrics, min_improvement=0.5, require_quality=False)
    allowed = decide(*better, False, DRIFT_OK, lenient)
    assert allowed.promote
    assert allowed.reasons[0] == "data quality: failed, ignored because promote.require_quality is false: ok"


def test_drift_over_the_report_bound_blocks() -> None:
    drift = {"drift_share": 0.45, "passed": False, "max_drift_share": 0.3}
    decision = decide(metrics(75.0, 65.0), metrics(70.0, 60.0), True, drift, CFG)
    assert not decision.promote
    assert decision.reasons[-1] == "drift: share 0.450 exceeds the bound 0.300"


def test_drift_report_verdict_counts_without_a_configured_bound() -> None:
    drift = {"drift_share": 0.2, "passed": False, "max_drift_share": 0.3}
    decision = decide(metrics(75.0, 65.0), None, True, drift, CFG)
    assert not decision.promote
    assert decision.reasons[-1] == "drift: share 0.200 <= bound 0.300 but the drift report failed"


def test_configured_bound_overrides_the_report() -> None:
    drift = {"drift_share": 0.45, "passed": False, "max_drift_share": 0.3}
    cfg = PromoteConfig(metrics=CFG.metrics, max_drift_share=0.5)
    decision = decide(metrics(75.0, 65.0), metrics(70.0, 60.0), True, drift, cfg)
    assert decision.promote and decision.reasons[-1] == "drift: share 0.450 <= bound 0.500: ok"
    strict = PromoteConfig(metrics=CFG.metrics, max_drift_share=0.1)
    # the configured bound needs only drift_share: max_drift_share and passed may be absent
    rejected = decide(metrics(75.0, 65.0), metrics(70.0, 60.0), True, {"drift_share": 0.2}, strict)
    assert not rejected.promote and rejected.reasons[-1] == "drift: share 0.200 exceeds the bound 0.100"


def test_first_model_needs_only_quality_and_drift() -> None:
    decision = decide(metrics(40.0, 30.0), None, True, DRIFT_OK, CFG)
    assert decision.promote
    assert decision.reasons == [
        "data quality: passed: ok",
        "metrics: no production model yet, first candidate has revisitop.medium.mAP = 40.000, "
        "recognition.GAP = 30.000: ok",
        "drift: share 0.100 <= bound 0.300: ok",
    ]
    assert decision.deltas == {} and decision.production is None
    assert not decide(metrics(40.0, 30.0), None, False, DRIFT_OK, CFG).promote
    too_much = {"drift_share": 0.9, "passed": False, "max_drift_share": 0.3}
    assert not decide(metrics(40.0, 30.0), None, True, too_much, CFG).promote


def test_several_failures_are_all_reported() -> None:
    drift = {"drift_share": 0.5, "passed": False, "max_drift_share": 0.3}
    decision = decide(metrics(60.0, 50.0), metrics(70.0, 60.0), False, drift, CFG)
    assert not decision.promote
    assert [r.endswith(": ok") for r in decision.reasons] == [False, False, False, False]
    record = decision.to_dict()
    assert record["promote"] is False and len(record["reasons"]) == 4 and record["drift_bound"] == 0.3


def test_missing_metric_is_a_clear_error() -> None:
    skipped = {"revisitop": {"medium": {"mAP": 70.0}}, "recognition": {"skipped": "no train features"}}
    with pytest.raises(
        ValueError,
        match=r"metric 'recognition.GAP' not found in candidate metrics: no key 'GAP' "
        r"at recognition \(available: skipped\)",
    ):
        decide(skipped, None, True, DRIFT_OK, CFG)
    with pytest.raises(
        ValueError, match="not found in production metrics: no key 'revisitop' at the top level"
    ):
        decide(metrics(70.0, 60.0), {"recognition": {"GAP": 1.0}}, True, DRIFT_OK, CFG)
    with pytest.raises(ValueError, match="must be a finite number, got 'high'"):
        metric_value({"a": {"b": "high"}}, "a.b")


@pytest.mark.parametrize(
    ("drift", "message"),
    [
        ({"passed": True, "max_drift_share": 0.3}, "'drift_share' must be a number in \\[0, 1\\], got None"),
        ({"drift_share": 1.5, "passed": True, "max_drift_share": 0.3}, "got 1.5"),
        ({"drift_share": 0.1, "max_drift_share": 0.3}, "'passed' must be true or false, got None"),
        ({"drift_share": 0.1, "passed": True}, "'max_drift_share' must be a number"),
    ],
)
def test_bad_drift_report_is_a_clear_error(drift: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decide(metrics(75.0, 65.0), None, True, drift, CFG)


def test_promote_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match=r"min_improvement must be in \[-100, 100\]"):
        PromoteConfig(min_improvement=-101.0)
    with pytest.raises(ValueError, match="max_drift_share must be null or in"):
        PromoteConfig(max_drift_share=1.5)
    with pytest.raises(ValueError, match="dotted paths"):
        PromoteConfig(metrics=("revisitop..mAP",))
    with pytest.raises(ValueError, match="prefix must be a relative key prefix"):
        PromoteConfig(prefix="../registry")


def test_negative_margin_tolerates_a_bounded_regression() -> None:
    tolerant = PromoteConfig(metrics=("revisitop.medium.mAP",), min_improvement=-2.0)
    assert decide(metrics(69.0, 60.0), metrics(70.5, 60.0), True, DRIFT_OK, tolerant).promote  # -1.5 >= -2
    assert not decide(metrics(68.0, 60.0), metrics(70.5, 60.0), True, DRIFT_OK, tolerant).promote  # -2.5 < -2


def test_reasons_name_what_the_candidate_is_compared_with() -> None:
    decision = decide(metrics(71.2, 60.5), metrics(70.0, 60.0), True, DRIFT_OK, CFG, reference="baseline")
    assert decision.reasons[1].startswith("revisitop.medium.mAP: candidate 71.200 vs baseline 70.000 (+1.200")


def test_golden_checks_by_hand() -> None:
    from landmark.ops.gate import golden_checks, golden_summary

    production = {"sets": {"a": {"medium": 80.0, "hard": 60.0}, "b": {"medium": 90.0, "hard": 70.0}}}
    candidate = {"sets": {"a": {"medium": 79.5, "hard": 61.0}, "b": {"medium": 90.0, "hard": 68.0}}}
    checks = golden_checks(candidate, production, tolerance=1.0)
    assert [ok for ok, _ in checks] == [True, False]
    assert checks[0][1] == "golden a: medium 79.5 vs 80.0 (-0.5), hard 61.0 vs 60.0 (+1.0): ok"
    assert checks[1][1].endswith("hard 68.0 vs 70.0 (-2.0): loses more than 1 points on real photos")
    rows = golden_summary(candidate, production)
    assert [(r["set"], r["protocol"], r["delta"]) for r in rows] == [
        ("a", "medium", -0.5),
        ("a", "hard", 1.0),
        ("b", "medium", 0.0),
        ("b", "hard", -2.0),
    ]
    missing = golden_checks({"sets": {}}, production, tolerance=1.0)
    assert missing[0] == (False, "golden a: the candidate was not scored on it")
