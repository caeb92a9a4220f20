"""Data-quality gates with Great Expectations 1.x: suites for manifests and cleaning output, Data Docs.

A *gate* validates a few tables, each against its own expectation suite, through one GX checkpoint per
table whose action rebuilds the Data Docs site. Every expectation is either ``critical`` (a failure stops the
pipeline: :func:`require_passed` raises :class:`QualityGateError` whose message is a readable summary with
the report path) or ``warning`` (reported, not blocking).

Suites:

- **manifest** (per split): the schema's columns in order; at least one row; status in {ok, quarantined};
  image ids unique and safe among ok rows; labels >= -1 (>= 0 for ok rows of labelled splits); ok images
  fetched (sha1), stored (uri) and within the size range; quarantined rows carry a reason; the quarantined
  share at most ``max_quarantined_share``.
- **class counts** (per labelled split, warning): every class has at least ``min_images_per_class`` ok images.
- **cleaning output**: the cleaned manifest (the manifest suite, with ``clean_max_dropped_share`` as the
  quarantine limit) and a per-class report whose required schema is :data:`CLASS_REPORT_COLUMNS` (more columns
  may follow): ids unique, 0 <= images_kept <= images_before, kept classes have at least
  ``min_images_per_class`` images, and images_kept agrees with the cleaned manifest.

The GX project (suites, checkpoints, validation results, Data Docs) lives in ``<project_dir>/gx``; the Data
Docs index is ``<project_dir>/gx/uncommitted/data_docs/local_site/index.html``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import pandas as pd

from landmark.data.manifest import MANIFEST_COLUMNS, STATUS_OK, STATUS_QUARANTINED, STATUSES
from landmark.errors import LandmarkError

if TYPE_CHECKING:
    from landmark.config import ValidateConfig

CRITICAL = "critical"
WARNING = "warning"
SEVERITIES = (CRITICAL, WARNING)

# The per-class report that the cleaning stage writes: these columns are required, extra ones are allowed.
CLASS_REPORT_COLUMNS: dict[str, str] = {
    "landmark_id": "int64",
    "images_before": "int64",
    "images_kept": "int64",
}

SAFE_ID_REGEX = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}$"  # landmark.data.ids: ids are never trusted as paths
SHA1_REGEX = r"^[0-9a-f]{40}$"
_OK_ROWS = f'status=="{STATUS_OK}"'
_QUARANTINED_ROWS = f'status=="{STATUS_QUARANTINED}"'
_EXAMPLES = 5


class QualityGateError(LandmarkError, ValueError):
    """A gate with at least one failed critical expectation; ``report`` holds the details."""

    def __init__(self, report: QualityReport) -> None:
        self.report = report
        super().__init__(report.summary())


@dataclass(frozen=True)
class Check:
    """One expectation to run: the GX expectation class name, its arguments, a sentence, a severity."""

    expectation: str
    kwargs: dict[str, Any]
    description: str
    severity: str = CRITICAL

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")


@dataclass(frozen=True)
class TableChecks:
    """A table and the checks it must pass; ``name`` names its GX asset, suite and checkpoint."""

    name: str
    frame: pd.DataFrame
    checks: tuple[Check, ...]


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check on one table; ``observed`` says what was found, in words."""

    table: str
    description: str
    severity: str
    success: bool
    observed: str


@dataclass(frozen=True)
class QualityReport:
    """All results of one gate run, and where its Data Docs are."""

    gate: str
    results: tuple[CheckResult, ...]
    docs_path: Path | None = None
    tables: dict[str, int] = field(default_factory=dict)

    @property
    def failed_critical(self) -> tuple[CheckResult, ...]:
        """Failed critical checks (any one fails the gate)."""
        return tuple(r for r in self.results if not r.success and r.severity == CRITICAL)

    @property
    def warnings(self) -> tuple[CheckResult, ...]:
        """Failed warning-level checks."""
        return tuple(r for r in self.results if not r.success and r.severity == WARNING)

    @property
    def passed(self) -> bool:
        """True when no critical check failed."""
        return not self.failed_critical

    def summary(self) -> str:
        """A readable, multi-line summary: verdict, each failed check with what was found, the report path."""
        counts = f"{len(self.results)} expectations on {len(self.tables)} tables"
        if self.passed:
            head = f"data quality gate '{self.gate}' passed ({counts}, {len(self.warnings)} warning(s))"
        else:
            head = (
                f"data quality gate '{self.gate}' FAILED: {len(self.failed_critical)} critical "
                f"expectation(s) failed ({counts}, {len(self.warnings)} warning(s))"
            )
        lines = [head]
        for result in (*self.failed_critical, *self.warnings):
            mark = "FAIL" if result.severity == CRITICAL else "WARN"
            lines.append(f"  {mark} [{result.table}] {result.description}: {result.observed}")
        lines.append(f"  report: {self.docs_path}" if self.docs_path else "  report: (no Data Docs built)")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (a DVC metrics file)."""
        return {
            "gate": self.gate,
            "passed": self.passed,
            "failed_critical": len(self.failed_critical),
            "warnings": len(self.warnings),
            "expectations": len(self.results),
            "tables": dict(sorted(self.tables.items())),
            "docs": str(self.docs_path) if self.docs_path else None,
            "results": [
                {
                    "table": r.table,
                    "description": r.description,
                    "severity": r.severity,
                    "success": r.success,
                    "observed": r.observed,
                }
                for r in self.results
            ],
        }


# ---------------------------------------------------------------------------------------------------------------
# Suites (pure: lists of checks)


def manifest_checks(
    *, labelled: bool, max_quarantined_share: float, min_side: int, max_side: int
) -> tuple[Check, ...]:
    """Checks of one manifest table (see the module docstring)."""
    ok = {"row_condition": _OK_ROWS, "condition_parser": "pandas"}
    checks = [
        Check(
            "ExpectTableColumnsToMatchOrderedList",
            {"column_list": list(MANIFEST_COLUMNS)},
            "columns are the manifest schema, in order",
        ),
        Check("ExpectTableRowCountToBeBetween", {"min_value": 1}, "the manifest has rows"),
        Check(
            "ExpectColumnValuesToBeInSet",
            {"column": "status", "value_set": list(STATUSES)},
            "status is ok or quarantined",
        ),
        Check(
            "ExpectColumnValuesToBeUnique", {"column": "image_id", **ok}, "image ids are unique among ok rows"
        ),
        Check(
            "ExpectColumnValuesToMatchRegex",
            {"column": "image_id", "regex": SAFE_ID_REGEX, **ok},
            "ok image ids are safe file names ([A-Za-z0-9_.-], no path separators)",
        ),
        Check(
            "ExpectColumnValuesToNotMatchRegex",
            {"column": "image_id", "regex": r"\.\.", **ok},
            "ok image ids contain no '..'",
        ),
        Check(
            "ExpectColumnValuesToBeBetween",
            {"column": "landmark_id", "min_value": -1},
            "labels are >= -1 (-1 = none)",
        ),
        Check(
            "ExpectColumnValuesToMatchRegex",
            {"column": "sha1", "regex": SHA1_REGEX, **ok},
            "ok images were fetched and hashed (40-hex sha1)",
        ),
        Check(
            "ExpectColumnValueLengthsToBeBetween",
            {"column": "uri", "min_value": 1, **ok},
            "ok images have a storage uri",
        ),
        Check(
            "ExpectColumnValuesToBeBetween",
            {"column": "width", "min_value": min_side, "max_value": max_side, **ok},
            f"ok images decoded with width in [{min_side}, {max_side}]",
        ),
        Check(
            "ExpectColumnValuesToBeBetween",
            {"column": "height", "min_value": min_side, "max_value": max_side, **ok},
            f"ok images decoded with height in [{min_side}, {max_side}]",
        ),
        Check(
            "ExpectColumnValueLengthsToBeBetween",
            {
                "column": "reason",
                "min_value": 1,
                "row_condition": _QUARANTINED_ROWS,
                "condition_parser": "pandas",
            },
            "quarantined rows carry a reason",
        ),
        Check(
            "ExpectColumnValuesToBeInSet",
            {"column": "status", "value_set": [STATUS_OK], "mostly": round(1.0 - max_quarantined_share, 6)},
            f"at most {max_quarantined_share:.0%} of rows are quarantined",
        ),
    ]
    if labelled:
        checks.append(
            Check(
                "ExpectColumnValuesToBeBetween",
                {"column": "landmark_id", "min_value": 0, **ok},
                "ok rows of a labelled split have a landmark (>= 0)",
            )
        )
    return tuple(checks)


def class_counts(manifest: pd.DataFrame) -> pd.DataFrame:
    """Ok images per labelled class: columns ``landmark_id``, ``images`` (sorted by landmark_id)."""
    ok = manifest[(manifest["status"] == STATUS_OK) & (manifest["landmark_id"] >= 0)]
    counts = ok.groupby("landmark_id").size()
    return pd.DataFrame(
        {"landmark_id": counts.index.astype("int64"), "images": counts.to_numpy(dtype="int64")}
    )


def class_count_checks(min_images_per_class: int) -> tuple[Check, ...]:
    """Warning-level: every class has enough ok images to train on."""
    return (
        Check(
            "ExpectColumnValuesToBeBetween",
            {"column": "images", "min_value": min_images_per_class},
            f"every labelled class has >= {min_images_per_class} ok images (shown: landmark image counts)",
            severity=WARNING,
        ),
    )


def class_report_checks(min_images_per_class: int) -> tuple[Check, ...]:
    """Checks of the cleaning stage's per-class report (required schema: :data:`CLASS_REPORT_COLUMNS`)."""
    kept = {"row_condition": "images_kept > 0", "condition_parser": "pandas"}
    return (
        Check(
            "ExpectTableColumnsToMatchSet",
            {"column_set": list(CLASS_REPORT_COLUMNS), "exact_match": False},
            f"the report has the columns {list(CLASS_REPORT_COLUMNS)}",
        ),
        Check("ExpectColumnValuesToBeUnique", {"column": "landmark_id"}, "one row per landmark"),
        Check(
            "ExpectColumnValuesToBeBetween",
            {"column": "landmark_id", "min_value": 0},
            "landmark ids are >= 0",
        ),
        Check(
            "ExpectColumnValuesToBeBetween", {"column": "images_before", "min_value": 1}, "images_before >= 1"
        ),
        Check("ExpectColumnValuesToBeBetween", {"column": "images_kept", "min_value": 0}, "images_kept >= 0"),
        Check(
            "ExpectColumnPairValuesAToBeGreaterThanB",
            {"column_A": "images_before", "column_B": "images_kept", "or_equal": True},
            "cleaning never adds images (images_kept <= images_before)",
        ),
        Check(
            "ExpectColumnValuesToBeBetween",
            {"column": "images_kept", "min_value": min_images_per_class, **kept},
            f"kept classes have >= {min_images_per_class} images (smaller classes are dropped)",
        ),
    )


def class_report_consistency(report: pd.DataFrame, cleaned: pd.DataFrame) -> pd.DataFrame:
    """Per landmark: images_kept from the report next to the ok images of the cleaned manifest."""
    counts = class_counts(cleaned).rename(columns={"images": "images_in_manifest"})
    if not {"landmark_id", "images_kept"} <= set(report.columns):
        return pd.DataFrame({"landmark_id": [], "images_kept": [], "images_in_manifest": []})
    merged = report[["landmark_id", "images_kept"]].merge(counts, on="landmark_id", how="outer")
    return merged.fillna(0).astype("int64")


def consistency_checks() -> tuple[Check, ...]:
    """images_kept of the report equals the ok images of the cleaned manifest, per landmark."""
    return (
        Check(
            "ExpectColumnPairValuesToBeEqual",
            {"column_A": "images_kept", "column_B": "images_in_manifest"},
            "the class report's images_kept matches the cleaned manifest",
        ),
    )


def manifest_tables(manifests: Mapping[str, pd.DataFrame], cfg: ValidateConfig) -> list[TableChecks]:
    """The tables and checks of the manifest gate: one manifest table per split, class counts per labelled one."""
    tables: list[TableChecks] = []
    for split, frame in sorted(manifests.items()):
        labelled = split in cfg.labelled_splits
        checks = manifest_checks(
            labelled=labelled,
            max_quarantined_share=cfg.max_quarantined_share,
            min_side=cfg.min_side,
            max_side=cfg.max_side,
        )
        tables.append(TableChecks(f"manifest_{split}", frame, checks))
        if labelled and {"status", "landmark_id"} <= set(frame.columns):
            tables.append(
                TableChecks(
                    f"class_counts_{split}", class_counts(frame), class_count_checks(cfg.min_images_per_class)
                )
            )
    return tables


def cleaning_tables(cleaned: pd.DataFrame, report: pd.DataFrame, cfg: ValidateConfig) -> list[TableChecks]:
    """The tables and checks of the cleaning gate (cleaned manifest, class report, their consistency)."""
    manifest = manifest_checks(
        labelled=True,
        max_quarantined_share=cfg.clean_max_dropped_share,
        min_side=cfg.min_side,
        max_side=cfg.max_side,
    )
    return [
        TableChecks("cleaned_manifest", cleaned, manifest),
        TableChecks("class_report", report, class_report_checks(cfg.min_images_per_class)),
        TableChecks(
            "class_report_consistency", class_report_consistency(report, cleaned), consistency_checks()
        ),
    ]


# ---------------------------------------------------------------------------------------------------------------
# Running a gate through Great Expectations


def _describe(result: dict[str, Any], exception: dict[str, Any] | None) -> str:
    """What an expectation found, in words, from GX's result dict."""
    if exception and exception.get("raised_exception"):
        return f"could not be evaluated: {exception.get('exception_message')}"
    if result.get("unexpected_count") is not None:
        count = int(result["unexpected_count"])
        total = result.get("element_count")
        share = result.get("unexpected_percent")
        examples = list(result.get("partial_unexpected_list") or [])[:_EXAMPLES]
        text = f"{count} unexpected"
        if total is not None:
            text += f" of {total} rows"
        if share is not None:
            text += f" ({float(share):.1f}%)"
        if examples:
            text += f", e.g. {examples}"
        return text
    if "observed_value" in result:
        observed = result["observed_value"]
        if isinstance(observed, list) and len(observed) > 20:
            observed = [*observed[:20], "..."]
        return f"observed {observed!r}"
    return "no details"


def _file_url_to_path(url: str | None) -> Path | None:
    if not url:
        return None
    parts = urlsplit(url)
    return Path(unquote(parts.path)) if parts.scheme == "file" else None


def _context(project_dir: Path) -> Any:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # never phone home from a pipeline run
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    project_dir.mkdir(parents=True, exist_ok=True)
    context = gx.get_context(mode="file", project_root_dir=str(project_dir))
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    context.variables.save()
    return context


def _expectation(check: Check) -> Any:
    import great_expectations.expectations as gxe
    from great_expectations.expectations.metadata_types import FailureSeverity

    cls = getattr(gxe, check.expectation, None)
    if cls is None:
        raise ValueError(f"unknown Great Expectations expectation {check.expectation!r}")
    return cls(**check.kwargs, description=check.description, severity=FailureSeverity(check.severity))


def _run_table(context: Any, gate: str, table: TableChecks) -> list[CheckResult]:
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction

    source = context.data_sources.add_or_update_pandas(name=gate)
    asset = source.add_dataframe_asset(name=table.name)
    batch = asset.add_batch_definition_whole_dataframe(name="whole")
    suite = gx.ExpectationSuite(name=f"{gate}.{table.name}")
    for check in table.checks:
        suite.add_expectation(_expectation(check))
    suite = context.suites.add_or_update(suite)
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=f"{gate}.{table.name}", data=batch, suite=suite)
    )
    checkpoint = context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=f"{gate}.{table.name}",
            validation_definitions=[definition],
            actions=[UpdateDataDocsAction(name="data_docs")],
            result_format={"result_format": "SUMMARY"},
        )
    )
    run = checkpoint.run(batch_parameters={"dataframe": table.frame})
    results: list[CheckResult] = []
    for validation in run.run_results.values():
        for item in validation.results:
            config = item.expectation_config
            results.append(
                CheckResult(
                    table=table.name,
                    description=config.description or config.type,
                    severity=str(getattr(config.severity, "value", config.severity)),
                    success=bool(item.success),
                    observed=_describe(dict(item.result or {}), dict(item.exception_info or {})),
                )
            )
    return results


def run_gate(gate: str, tables: Sequence[TableChecks], project_dir: str | Path) -> QualityReport:
    """Validate every table with its suite through a GX checkpoint that rebuilds the Data Docs.

    Args:
        gate: the gate's name (also the GX datasource name), e.g. "manifest" or "cleaning".
        tables: the tables and their checks.
        project_dir: where the GX project lives (``<project_dir>/gx``).

    Returns:
        The report (never raises for failed expectations; see :func:`require_passed`).
    """
    context = _context(Path(project_dir))
    results: list[CheckResult] = []
    for table in tables:
        results.extend(_run_table(context, gate, table))
    sites = context.get_docs_sites_urls()
    docs = _file_url_to_path(sites[0]["site_url"]) if sites else None
    return QualityReport(
        gate=gate, results=tuple(results), docs_path=docs, tables={t.name: len(t.frame) for t in tables}
    )


def require_passed(report: QualityReport) -> QualityReport:
    """Return ``report`` when it passed, else raise :class:`QualityGateError` (message = its summary)."""
    if not report.passed:
        raise QualityGateError(report)
    return report


def write_report(report: QualityReport, path: str | Path) -> Path:
    """Write the report as JSON (atomically)."""
    from landmark.data.atomic import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(report.to_dict(), indent=2, sort_keys=True, default=str) + "\n")
    return path
