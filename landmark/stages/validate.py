"""Stage ``validate``: the Great Expectations data-quality gate over the manifests (or the cleaning output)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from landmark.config import Config
from landmark.data.catalog import publish_view
from landmark.errors import InputError
from landmark.ops.quality import (
    QualityReport,
    cleaning_tables,
    manifest_tables,
    require_passed,
    run_gate,
    write_report,
)

MANIFEST_REPORT = "validate.json"
CLEANING_REPORT = "validate_clean.json"


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


def read_table(path: Path) -> pd.DataFrame:
    """A parquet or CSV table.

    Raises:
        FileNotFoundError: no such file.
        ValueError: another extension.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"table {path} not found")
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path)
    raise InputError(f"table {path} must be .parquet or .csv")


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


def describe_files(manifest: pd.DataFrame, root: Path) -> pd.DataFrame:
    """Fill in what ingestion records but a dataset read from disk may lack (sha1, width, height) for ok rows,
    from the files themselves (header only, no pixel decode); a file that is missing or whose header cannot be
    read is quarantined with the reason, so the gate judges the data as it really is."""
    from landmark.data.images import ImageDecodeError, file_sha1, read_image_size
    from landmark.data.manifest import format_reason, resolve_uri

    frame = manifest.copy()
    todo = (frame["status"] == "ok") & (
        (frame["sha1"] == "") | (frame["width"] <= 0) | (frame["height"] <= 0)
    )
    for row in frame.index[todo]:
        try:
            path = resolve_uri(root, str(frame.at[row, "uri"]))
            width, height = read_image_size(path, name=str(frame.at[row, "image_id"]))
            frame.at[row, "sha1"] = file_sha1(path)
            frame.at[row, "width"], frame.at[row, "height"] = width, height
        except ImageDecodeError as exc:
            frame.at[row, "status"], frame.at[row, "reason"] = (
                "quarantined",
                format_reason(exc.reason, exc.detail),
            )
        except (OSError, ValueError) as exc:
            frame.at[row, "status"], frame.at[row, "reason"] = (
                "quarantined",
                format_reason("unreadable", str(exc)),
            )
    return frame


def validate_dataset(cfg: Config, data_dir: Path, reports_dir: Path, *, fmt: str = "auto") -> QualityReport:
    """Run the manifest gate on every split of a dataset directory (any supported format); writes ``validate.json``.

    The retraining flow checks the data it trains on this way (``validate`` checks the ingestion manifests).

    Raises:
        QualityGateError: a critical expectation failed.
    """
    from landmark.data.datasets import open_dataset

    dataset = open_dataset(cfg, Path(data_dir), fmt)
    manifests = {split: describe_files(dataset.manifest(split), dataset.root) for split in dataset.splits}
    report = run_gate("manifest", manifest_tables(manifests, cfg.validate), reports_dir)
    write_report(report, Path(reports_dir) / MANIFEST_REPORT)
    return require_passed(report)


def validate_cleaning(
    cfg: Config, cleaned_manifest: Path, class_report: Path, reports_dir: Path
) -> QualityReport:
    """Run the cleaning gate on the cleaned manifest and the per-class report; writes ``validate_clean.json``.

    Raises:
        QualityGateError: a critical expectation failed.
    """
    tables = cleaning_tables(read_table(cleaned_manifest), read_table(class_report), cfg.validate)
    report = run_gate("cleaning", tables, reports_dir)
    write_report(report, Path(reports_dir) / CLEANING_REPORT)
    return require_passed(report)
