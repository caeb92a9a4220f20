"""Stage ``validate``: the Great Expectations data-quality gate over the manifests (or the cleaning output)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from landmark.config import Config
from landmark.data.catalog import publish_view
from landmark.data.datasets import open_dataset
from landmark.ops.quality import QualityReport, manifest_tables, require_passed, run_gate, write_report
from landmark.stages.common import describe_files

MANIFEST_REPORT = "validate.json"


def read_raw_tables(directory: Path) -> dict[str, pd.DataFrame]:
    """Every ``<split>.parquet`` in ``directory`` as it is on disk (no schema coercion: the gate judges it).

    Raises:
        FileNotFoundError: no directory, or no parquet files in it.
    """
    directory = Path(directory)
    files = sorted(directory.glob("*.parquet")) if directory.is_dir() else []
    if not files:
        raise FileNotFoundError(f"no manifests (*.parquet) in {directory}: run `landmark ingest` first")
    return {path.stem: pd.read_parquet(path) for path in files}


def validate(
    cfg: Config, manifests_dir: Path, reports_dir: Path, *, publish: Path | None = None
) -> QualityReport:
    """Run the manifest gate on every split manifest; writes ``reports_dir/validate.json`` and Data Docs.

    With ``publish``, a passing gate also writes the validated view of the catalog there (its ok rows and
    ground truth, see :func:`landmark.data.catalog.publish_view`); a failing gate leaves the last view alone.

    Returns:
        The passing report.

    Raises:
        QualityGateError: a critical expectation failed (the JSON report and Data Docs are written first).
        FileNotFoundError: no manifests.
    """
    manifests = read_raw_tables(manifests_dir)
    report = run_gate("manifest", manifest_tables(manifests, cfg.validate), reports_dir)
    write_report(report, Path(reports_dir) / MANIFEST_REPORT)
    passed = require_passed(report)
    if publish is not None:
        publish_view(Path(manifests_dir).parent, publish)
    return passed


def validate_dataset(cfg: Config, data_dir: Path, reports_dir: Path, *, fmt: str = "auto") -> QualityReport:
    """Run the manifest gate on every split of a dataset directory (any supported format); writes ``validate.json``.

    The retraining flow checks the data it trains on this way (``validate`` checks the ingestion manifests).

    Raises:
        QualityGateError: a critical expectation failed.
    """
    dataset = open_dataset(cfg, Path(data_dir), fmt)
    manifests = {split: describe_files(dataset.manifest(split), dataset.root) for split in dataset.splits}
    report = run_gate("manifest", manifest_tables(manifests, cfg.validate), reports_dir)
    write_report(report, Path(reports_dir) / MANIFEST_REPORT)
    return require_passed(report)
