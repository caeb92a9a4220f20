"""Great Expectations gates: a bad manifest fails with a readable summary, a good one passes; cleaning output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from landmark.cli import app
from landmark.config import Config, ValidateConfig
from landmark.data.manifest import make_manifest, quarantined_row
from landmark.ops.quality import (
    CLASS_REPORT_COLUMNS,
    QualityGateError,
    QualityReport,
    cleaning_tables,
    manifest_tables,
    require_passed,
    run_gate,
)
from landmark.stages.validate import validate

SHA = "0123456789abcdef0123456789abcdef01234567"


def good_manifest(n: int = 12) -> pd.DataFrame:
    rows = [
        {
            "image_id": f"img{k:03d}",
            "landmark_id": k % 3,
            "uri": f"images/{k:02d}/x{k}.jpg",
            "url": f"http://127.0.0.1/{k}.jpg",
            "sha1": SHA[:-3] + f"{k:03d}",
            "width": 320,
            "height": 240,
            "batch_id": "b1",
            "ingested_at": "2025-01-01T00:00:00+00:00",
        }
        for k in range(n)
    ]
    rows.append(quarantined_row("broken", "truncated", "cut after 100 bytes", url="http://127.0.0.1/b.jpg"))
    return make_manifest(rows)


def bad_manifest() -> pd.DataFrame:
    """Breaks one rule per row (written as raw parquet: the schema model would refuse it)."""
    frame = good_manifest(6).copy()
    frame.loc[1, "image_id"] = frame.loc[0, "image_id"]  # duplicate ok id
    frame.loc[2, "image_id"] = "../../etc/passwd"  # unsafe id
    frame.loc[3, "width"] = 4  # too small
    frame.loc[4, "landmark_id"] = -1  # unlabelled train image
    frame.loc[5, "sha1"] = ""  # never hashed
    extra = pd.DataFrame([{**frame.iloc[6].to_dict(), "image_id": f"q{k}", "reason": ""} for k in range(3)])
    return pd.concat([frame, extra], ignore_index=True)  # 4 of 10 quarantined, 3 without reason


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, QualityReport]:
    """Each gate run once (GX is slow to start): good and bad manifests, good and bad cleaning output."""
    root = tmp_path_factory.mktemp("gx")
    cfg = ValidateConfig()
    cleaned = good_manifest()
    report = pd.DataFrame(
        {"landmark_id": [0, 1, 2, 3], "images_before": [5, 5, 5, 1], "images_kept": [4, 4, 4, 0]}
    )
    broken = pd.DataFrame({"landmark_id": [0, 0, 2], "images_before": [5, 5, 3], "images_kept": [6, 4, 1]})
    return {
        "good": run_gate("manifest", manifest_tables({"train": good_manifest()}, cfg), root / "good"),
        "bad": run_gate(
            "manifest",
            manifest_tables({"train": bad_manifest(), "index": good_manifest()}, cfg),
            root / "bad",
        ),
        "clean_good": run_gate("cleaning", cleaning_tables(cleaned, report, cfg), root / "clean_good"),
        "clean_bad": run_gate("cleaning", cleaning_tables(cleaned, broken, cfg), root / "clean_bad"),
    }


def test_good_manifest_passes_and_builds_data_docs(reports: dict[str, QualityReport]) -> None:
    report = reports["good"]
    assert report.passed and not report.failed_critical
    assert (
        report.docs_path is not None and report.docs_path.name == "index.html" and report.docs_path.is_file()
    )
    assert report.summary().startswith("data quality gate 'manifest' passed")
    assert require_passed(report) is report
    assert set(report.tables) == {"manifest_train", "class_counts_train"}


def test_bad_manifest_fails_with_a_readable_summary(reports: dict[str, QualityReport]) -> None:
    report = reports["bad"]
    assert not report.passed
    failed = {(r.table, r.description) for r in report.failed_critical}
    assert failed == {
        ("manifest_train", "image ids are unique among ok rows"),
        ("manifest_train", "ok image ids are safe file names ([A-Za-z0-9_.-], no path separators)"),
        ("manifest_train", "ok image ids contain no '..'"),
        ("manifest_train", "ok images decoded with width in [32, 8192]"),
        ("manifest_train", "ok rows of a labelled split have a landmark (>= 0)"),
        ("manifest_train", "ok images were fetched and hashed (40-hex sha1)"),
        ("manifest_train", "quarantined rows carry a reason"),
        ("manifest_train", "at most 20% of rows are quarantined"),
    }
    summary = report.summary()
    assert summary.splitlines()[0] == (
        "data quality gate 'manifest' FAILED: 8 critical expectation(s) failed "
        "(28 expectations on 3 tables, 1 warning(s))"
    )
    assert "e.g. ['../../etc/passwd']" in summary and "e.g. [4]" in summary
    assert "40.0%" in summary  # the quarantined share that was found
    assert summary.splitlines()[-1] == f"  report: {report.docs_path}"
    with pytest.raises(QualityGateError) as info:
        require_passed(report)
    assert str(info.value) == summary and info.value.report is report


def test_class_counts_are_a_warning_only(tmp_path: Path) -> None:
    frame = good_manifest(7)  # landmark 0 gets 3 images, 1 and 2 get 2
    report = run_gate(
        "manifest", manifest_tables({"train": frame}, ValidateConfig(min_images_per_class=3)), tmp_path
    )
    assert report.passed and len(report.warnings) == 1
    assert "WARN [class_counts_train]" in report.summary() and "e.g. [2, 2]" in report.summary()


def test_cleaning_gate(reports: dict[str, QualityReport]) -> None:
    assert reports["clean_good"].passed, reports["clean_good"].summary()
    bad = reports["clean_bad"]
    failed = {(r.table, r.description) for r in bad.failed_critical}
    assert failed == {
        ("class_report", "one row per landmark"),
        ("class_report", "cleaning never adds images (images_kept <= images_before)"),
        ("class_report", "kept classes have >= 2 images (smaller classes are dropped)"),
        ("class_report_consistency", "the class report's images_kept matches the cleaned manifest"),
    }
    assert list(CLASS_REPORT_COLUMNS) == ["landmark_id", "images_before", "images_kept"]


def test_validate_stage_and_cli_stop_on_a_bad_manifest(tmp_path: Path) -> None:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    bad_manifest().to_parquet(manifests / "train.parquet")
    with pytest.raises(QualityGateError, match="FAILED: 8 critical"):
        validate(Config(), manifests, tmp_path / "reports")
    written = json.loads((tmp_path / "reports" / "validate.json").read_text())
    assert written["passed"] is False and written["failed_critical"] == 8
    assert Path(written["docs"]).is_file()

    result = CliRunner().invoke(
        app,
        ["validate", "--manifests", str(manifests), "--reports", str(tmp_path / "cli")],
        terminal_width=200,
    )
    assert result.exit_code == 1
    assert "FAILED: 8 critical" in result.output and "index.html" in result.output
    assert "FAIL [manifest_train] image ids are unique among ok rows" in result.output  # not eaten as markup
    assert "Traceback" not in result.output

    good_manifest().to_parquet(manifests / "train.parquet")
    ok = CliRunner().invoke(
        app, ["validate", "--manifests", str(manifests), "--reports", str(tmp_path / "cli")]
    )
    assert ok.exit_code == 0 and "passed" in ok.output
    assert np.isfinite(json.loads((tmp_path / "cli" / "validate.json").read_text())["expectations"])
