"""Data drift between two image sets (Evidently), and the monitoring workspace that keeps the reports over time.

Each image becomes one row of numbers: its size (width, height, aspect, megapixels, file bytes), its look (mean
brightness, contrast = std of luma, HSV saturation) and whether it could be decoded at all (``decode_failed``;
quarantined manifest rows count as failures). With global descriptors, the row also carries their projection on
the first principal axes of the *reference* descriptors (``emb_pc01``...) and the distance left off those axes
(``emb_residual``), so a shift of the embedding distribution shows up as drifted columns without Evidently's
slower embedding-drift methods. Evidently's ``DataDriftPreset`` then tests every column of the current frame
against the reference frame; the share of drifted columns is what the promotion gate bounds.

The three uses (see ``landmark drift --help``): ``ingest`` compares a newly ingested batch (current) with the
training data (reference); ``retrain`` compares the evaluation (test) split (current) with the train split
(reference); ``serving`` compares the last window of served queries (the query log of ``landmark serve``) with the
train split. Snapshots are tagged with the use, and the dashboard gives each use its own panels.

The workspace helpers create the Evidently project and its dashboard panels on first use (idempotent, under a
file lock), add drift snapshots, and log evaluation metrics (mAP/GAP) as tiny one-row reports so the dashboard
also shows model quality over time. Evidently is imported inside the functions that need it (~5 s to import).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from landmark.config import DriftConfig, ParallelConfig
from landmark.data.atomic import atomic_path
from landmark.data.images import DEFAULT_MAX_PIXELS, ImageDecodeError, decode_image
from landmark.data.manifest import STATUS_OK, reason_code, resolve_uri
from landmark.errors import InputError
from landmark.platform.parallel import parallel_map

if TYPE_CHECKING:
    from evidently.core.report import Snapshot
    from evidently.sdk.models import DashboardModel, DashboardPanelPlot
    from evidently.ui.workspace import Project, Workspace

IMAGE_STAT_COLUMNS: tuple[str, ...] = (
    "width",
    "height",
    "aspect",
    "megapixels",
    "brightness",
    "contrast",
    "saturation",
    "file_bytes",
    "decode_failed",
)
DECODE_FAILED = "decode_failed"
FAILURE_COLUMN = "failure"  # why an image counts as failed ("" when decoded); not a drift column
EMBEDDING_PREFIX = "emb_pc"
EMBEDDING_RESIDUAL = "emb_residual"
# brightness/contrast/saturation are measured on a regular grid of at most this many (512^2) pixels
STATS_MAX_PIXELS = 262_144
DRIFT_JSON = "drift.json"
REPORT_HTML = "report.html"
EVIDENTLY_JSON = "evidently.json"

PURPOSES: tuple[str, ...] = ("ingest", "retrain", "serving")
PURPOSE_LABELS = {
    "ingest": "ingest: new batch vs train",
    "retrain": "retrain: test vs train",
    "serving": "serving: live queries vs train",
}
DRIFT_TAG = "drift"
EVALUATION_TAG = "evaluation"
DRIFT_TAB = "Drift"
EVALUATION_TAB = "Evaluation"
DEFAULT_EVAL_METRICS: tuple[str, ...] = ("revisitop.medium.mAP", "recognition.GAP")
PANEL_DRIFT_SHARE = "Share of drifted columns"
PANEL_DRIFTED_COUNT = "Number of drifted columns"
PANEL_DECODE_FAILURES = "Decode failure rate of the current images"
PANEL_EVALUATION = "Evaluation: mAP / GAP over time"
_LOCK_FILE = ".landmark-monitoring.lock"


# ---------------------------------------------------------------------------------------------------------------
# Image statistics


@dataclass(frozen=True)
class ImageRef:
    """One image to describe: a local file, or a known failure (``path`` None, ``failure`` says why)."""

    image_id: str
    path: str | None
    failure: str = ""


def pixel_stats(rgb: np.ndarray) -> dict[str, float]:
    """Brightness, contrast and saturation of an RGB image.

    Args:
        rgb: (H, W, 3) uint8.

    Returns:
        ``brightness``: mean luma (ITU-R BT.601: 0.299 R + 0.587 G + 0.114 B) in [0, 255];
        ``contrast``: standard deviation of that luma; ``saturation``: mean HSV saturation (max - min) / max in
        [0, 1] (0 for black pixels).

    Raises:
        ValueError: not a non-empty (H, W, 3) array.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f"expected a non-empty (H, W, 3) RGB array, got shape {rgb.shape}")
    red, green, blue = (rgb[..., i].astype(np.float32) for i in range(3))
    luma = 0.299 * red + 0.587 * green + 0.114 * blue
    high = np.maximum(np.maximum(red, green), blue)
    low = np.minimum(np.minimum(red, green), blue)
    # (high - low) is 0 wherever high is 0, so dividing by max(high, 1) gives 0 for black pixels
    saturation = (high - low) / np.maximum(high, 1.0)
    return {
        "brightness": float(luma.mean(dtype=np.float64)),
        "contrast": float(luma.std(dtype=np.float64)),
        "saturation": float(saturation.mean(dtype=np.float64)),
    }


def _grid(rgb: np.ndarray, max_pixels: int) -> np.ndarray:
    """Every k-th pixel in both directions so that at most ``max_pixels`` remain (k = 1 for small images)."""
    step = max(1, math.ceil(math.sqrt(rgb.shape[0] * rgb.shape[1] / max_pixels)))
    return rgb[::step, ::step]


def failed_row(image_id: str, failure: str, file_bytes: float = math.nan) -> dict[str, Any]:
    """The statistics row of an image that could not be decoded: ``decode_failed`` 1, the reason code in
    ``failure``, NaN pixel statistics (``file_bytes`` kept when known)."""
    row: dict[str, Any] = dict.fromkeys(IMAGE_STAT_COLUMNS, math.nan)
    row.update(image_id=image_id, file_bytes=file_bytes, decode_failed=1.0, failure=failure)
    return row


def decoded_row(image_id: str, rgb: np.ndarray, file_bytes: float) -> dict[str, Any]:
    """The statistics row (:data:`IMAGE_STAT_COLUMNS` plus ``image_id`` and ``failure``) of a decoded image.

    Args:
        image_id: the row's id.
        rgb: (H, W, 3) uint8, as :func:`landmark.data.images.decode_image` returns it.
        file_bytes: size of the encoded file.
    """
    height, width = rgb.shape[:2]
    return {
        "image_id": image_id,
        "width": float(width),
        "height": float(height),
        "aspect": width / height,
        "megapixels": width * height / 1e6,
        **pixel_stats(_grid(rgb, STATS_MAX_PIXELS)),
        "file_bytes": float(file_bytes),
        "decode_failed": 0.0,
        "failure": "",
    }


def describe_image(ref: ImageRef, max_pixels: int = DEFAULT_MAX_PIXELS) -> dict[str, Any]:
    """One row of :data:`IMAGE_STAT_COLUMNS` (plus ``image_id`` and ``failure``) for one image.

    A file that cannot be decoded safely gives ``decode_failed`` 1, its reason code in ``failure`` and NaN for
    the pixel statistics (its byte size is kept when the file exists).
    """
    if ref.path is None:
        return failed_row(ref.image_id, ref.failure or "unavailable")
    path = Path(ref.path)
    try:
        file_bytes = float(path.stat().st_size)
    except OSError:
        return failed_row(ref.image_id, "unreadable")
    try:
        rgb = decode_image(path, max_pixels=max_pixels, name=ref.image_id)
    except ImageDecodeError as exc:
        return failed_row(ref.image_id, exc.reason, file_bytes)
    return decoded_row(ref.image_id, rgb, file_bytes)


@dataclass(frozen=True)
class _Describe:
    """Picklable ``describe_image`` with a fixed pixel limit (for the process pool)."""

    max_pixels: int

    def __call__(self, ref: ImageRef) -> dict[str, Any]:
        return describe_image(ref, self.max_pixels)


def image_stats(
    images: Sequence[ImageRef] | Mapping[str, str | Path],
    *,
    workers: int = 0,
    parallel: ParallelConfig | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = False,
) -> pd.DataFrame:
    """Per-image statistics, decoding the images (in ``workers`` processes, or on the ``parallel`` backend).

    Args:
        images: :class:`ImageRef` items (e.g. from :func:`manifest_images`) or a mapping image_id -> path.
        workers: local processes; 0 decodes in this process.
        parallel: where the decoding runs (a Dask cluster: chunks of ``chunk_images`` images per task).
        max_pixels: larger images count as failures ("too_large"), as at ingestion.

    Returns:
        DataFrame indexed by ``image_id`` (input order) with :data:`IMAGE_STAT_COLUMNS` (float64) and
        ``failure`` (the decode-failure reason code, "" when decoded).
    """
    refs = (
        [ImageRef(str(i), str(p)) for i, p in images.items()] if isinstance(images, Mapping) else list(images)
    )
    rows = list(
        parallel_map(
            _Describe(max_pixels),
            refs,
            config=parallel,
            workers=workers,
            desc="image statistics",
            progress=progress,
        )
    )
    frame = pd.DataFrame(rows, columns=["image_id", *IMAGE_STAT_COLUMNS, FAILURE_COLUMN])
    frame[list(IMAGE_STAT_COLUMNS)] = frame[list(IMAGE_STAT_COLUMNS)].astype("float64")
    return frame.set_index("image_id")


def manifest_images(manifest: pd.DataFrame, root: str | Path) -> list[ImageRef]:
    """One :class:`ImageRef` per manifest row: ok rows point at their file (uri resolved against ``root``),
    quarantined rows are failures named after their reason code (e.g. ``"quarantined: truncated"``).

    Raises:
        ValueError: an ok row stored only in object storage (``s3://``): drift reads local files.
    """
    refs: list[ImageRef] = []
    for image_id, uri, status, reason in manifest[["image_id", "uri", "status", "reason"]].itertuples(
        index=False
    ):
        if status != STATUS_OK:
            refs.append(ImageRef(str(image_id), None, f"quarantined: {reason_code(str(reason))}"))
            continue
        if str(uri).startswith("s3://"):
            raise InputError(
                f"image {image_id!r} is only in object storage ({uri}); drift statistics read local files "
                "(ingest with ingest.store local or both)"
            )
        refs.append(ImageRef(str(image_id), str(resolve_uri(root, str(uri)))))
    return refs


def sample_rows(frame: pd.DataFrame, size: int, seed: int) -> pd.DataFrame:
    """At most ``size`` rows drawn without replacement with ``seed``, kept in their original order."""
    if size < 1:
        raise ValueError(f"sample size must be >= 1, got {size}")
    if len(frame) <= size:
        return frame.reset_index(drop=True)
    chosen = np.sort(np.random.default_rng(seed).choice(len(frame), size=size, replace=False))
    return frame.iloc[chosen].reset_index(drop=True)


def failure_rate(stats: pd.DataFrame) -> float:
    """Share of rows with ``decode_failed`` 1 (0.0 for an empty frame)."""
    return float(stats[DECODE_FAILED].mean()) if len(stats) else 0.0


# ---------------------------------------------------------------------------------------------------------------
# Embeddings


@dataclass(frozen=True)
class EmbeddingPCA:
    """Principal axes of reference descriptors.

    Attributes:
        mean: (D,) mean of the reference descriptors.
        components: (k, D) orthonormal axes, largest variance first; each axis' largest-magnitude entry is
            positive, so a refit on the same data gives the same signs.
        explained_variance_ratio: (k,) share of the reference variance along each axis.
    """

    mean: np.ndarray
    components: np.ndarray
    explained_variance_ratio: np.ndarray

    def project(self, features: np.ndarray) -> np.ndarray:
        """(n, D) descriptors -> (n, k) coordinates along the axes."""
        return (np.asarray(features, dtype=np.float64) - self.mean) @ self.components.T

    def residual(self, features: np.ndarray) -> np.ndarray:
        """(n,) Euclidean distance of each centred descriptor from the span of the axes."""
        centred = np.asarray(features, dtype=np.float64) - self.mean
        off_axes = centred - (centred @ self.components.T) @ self.components
        return np.asarray(np.linalg.norm(off_axes, axis=1))


def fit_embedding_pca(features: np.ndarray, n_components: int) -> EmbeddingPCA:
    """PCA of (n, D) reference descriptors keeping ``min(n_components, n - 1, D)`` axes (exact SVD).

    Raises:
        ValueError: fewer than 2 descriptors, non-finite values, or ``n_components`` < 1.
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need (n >= 2, D) reference descriptors to fit the PCA, got shape {x.shape}")
    if n_components < 1:
        raise ValueError(f"n_components must be >= 1, got {n_components}")
    if not np.isfinite(x).all():
        raise ValueError("reference descriptors contain NaN or infinite values")
    mean = x.mean(axis=0)
    _, singular, vt = np.linalg.svd(x - mean, full_matrices=False)
    k = min(n_components, x.shape[0] - 1, x.shape[1])
    components = vt[:k]
    signs = np.sign(components[np.arange(k), np.abs(components).argmax(axis=1)])
    components = components * np.where(signs == 0, 1.0, signs)[:, None]
    variance = singular**2
    total = float(variance.sum())
    ratio = variance[:k] / total if total > 0 else np.zeros(k)
    return EmbeddingPCA(mean, components, ratio)


def embedding_columns(k: int) -> list[str]:
    """Column names of a k-axis projection plus the residual: ``emb_pc01``, ..., ``emb_residual``."""
    return [f"{EMBEDDING_PREFIX}{i + 1:02d}" for i in range(k)] + [EMBEDDING_RESIDUAL]


def embedding_frame(ids: Sequence[str], features: np.ndarray, pca: EmbeddingPCA) -> pd.DataFrame:
    """Descriptors as drift columns: their coordinates on the reference axes and the residual off them.

    Args:
        ids: image ids, one per row of ``features``.
        features: (n, D) descriptors.
        pca: fitted on the *reference* descriptors (both sides use the same axes).

    Returns:
        DataFrame indexed by ``image_id`` with :func:`embedding_columns` (float64).
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != len(ids) or x.shape[1] != pca.mean.shape[0]:
        raise ValueError(
            f"features must be ({len(ids)}, {pca.mean.shape[0]}) to match the ids and the PCA, got {x.shape}"
        )
    values = np.column_stack([pca.project(x), pca.residual(x)])
    index = pd.Index([str(i) for i in ids], name="image_id")
    return pd.DataFrame(values, index=index, columns=embedding_columns(pca.components.shape[0]))


def drift_frame(stats: pd.DataFrame, embeddings: pd.DataFrame | None = None) -> pd.DataFrame:
    """The rows compared by :func:`drift_report`: image statistics joined with embedding columns by image id
    (NaN embeddings for images without descriptors, e.g. decode failures)."""
    if embeddings is None:
        return stats
    return stats.join(embeddings, how="left")


# ---------------------------------------------------------------------------------------------------------------
# The drift report


@dataclass(frozen=True)
class ColumnDrift:
    """Evidently's verdict on one column: ``score`` is a p-value (drift when below ``threshold``) for tests such
    as K-S or Z, a distance (drift when at or above ``threshold``) for Wasserstein, PSI, Jensen-Shannon..."""

    column: str
    method: str
    score: float
    threshold: float
    drifted: bool


@dataclass(frozen=True)
class DriftResult:
    """The outcome of one drift report (``drift.json``; the promotion gate reads ``drift_share``,
    ``max_drift_share`` and ``passed``).

    Attributes:
        drift_share: drifted columns / compared columns.
        max_drift_share: the bound; ``passed`` = ``drift_share <= max_drift_share``.
        drifted_columns: names of the drifted columns, in column order.
        columns: every compared column's test, score and verdict.
        skipped_columns: columns not compared (fewer than 2 values on a side, e.g. all images failed).
        reference_rows, current_rows: images compared on each side.
        reference_decode_failure_rate, current_decode_failure_rate: share of images that could not be decoded
            (quarantined rows included).
        timestamp: when the report ran (ISO 8601, UTC).
        summary: the verdict in words.
        metadata: what was compared (e.g. purpose, reference, current), as stored with the snapshot.
    """

    drift_share: float
    max_drift_share: float
    passed: bool
    drifted_columns: tuple[str, ...]
    columns: tuple[ColumnDrift, ...]
    skipped_columns: tuple[str, ...]
    reference_rows: int
    current_rows: int
    reference_decode_failure_rate: float
    current_decode_failure_rate: float
    timestamp: str
    summary: str = ""
    metadata: dict[str, str] = field(default_factory=dict)

    def column(self, name: str) -> ColumnDrift:
        """The verdict on one column.

        Raises:
            KeyError: the column was not compared.
        """
        for item in self.columns:
            if item.column == name:
                return item
        raise KeyError(f"column {name!r} was not compared; compared: {[c.column for c in self.columns]}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (tuples become lists)."""
        data = asdict(self)
        data["drifted_columns"] = list(self.drifted_columns)
        data["skipped_columns"] = list(self.skipped_columns)
        data["columns"] = [asdict(c) for c in self.columns]
        data["metadata"] = dict(self.metadata)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DriftResult:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: a missing or unexpected key.
        """
        try:
            columns = tuple(ColumnDrift(**c) for c in data["columns"])
            values = {**data, "columns": columns}
            values["drifted_columns"] = tuple(data["drifted_columns"])
            values["skipped_columns"] = tuple(data["skipped_columns"])
            values["metadata"] = dict(data.get("metadata", {}))
            return cls(**values)
        except (KeyError, TypeError) as exc:
            raise InputError(f"not a drift result: {exc}") from exc


def _describe_column(c: ColumnDrift) -> str:
    return f"{c.column} ({c.method} {c.score:.3g} vs {c.threshold:g})"


def summarize(result: DriftResult) -> str:
    """The verdict in two or three lines: share vs bound, drifted columns with their scores, failure rates."""
    verdict = "PASSED" if result.passed else "FAILED"
    relation = "<=" if result.passed else ">"
    lines = [
        f"drift {verdict}: {len(result.drifted_columns)} of {len(result.columns)} columns drifted, share "
        f"{result.drift_share:.3f} {relation} bound {result.max_drift_share:.3f} "
        f"({result.reference_rows} reference vs {result.current_rows} current images)"
    ]
    drifted = [c for c in result.columns if c.drifted]
    lines.append("drifted: " + ("; ".join(_describe_column(c) for c in drifted) if drifted else "none"))
    lines.append(
        f"decode failures: reference {100 * result.reference_decode_failure_rate:.1f}%, "
        f"current {100 * result.current_decode_failure_rate:.1f}%"
    )
    if result.skipped_columns:
        lines.append(f"not compared (too few values): {', '.join(result.skipped_columns)}")
    return "\n".join(lines)


def _compared_columns(reference: pd.DataFrame, current: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(columns to test, columns skipped): numeric reference columns with >= 2 values on both sides."""
    numeric = [
        c for c in reference.columns if c != FAILURE_COLUMN and pd.api.types.is_numeric_dtype(reference[c])
    ]
    if not numeric:
        raise ValueError(f"the reference frame has no numeric columns to compare: {list(reference.columns)}")
    missing = [c for c in numeric if c not in current.columns]
    if missing:
        raise ValueError(f"the current frame lacks reference columns {missing}")
    compared = [c for c in numeric if reference[c].count() >= 2 and current[c].count() >= 2]
    skipped = [c for c in numeric if c not in compared]
    if not compared:
        raise InputError(f"no column has at least 2 values on both sides (skipped: {skipped})")
    return compared, skipped


def _status_name(status: Any) -> str:
    return str(getattr(status, "value", status))


def _column_verdicts(report: Mapping[str, Any]) -> list[ColumnDrift]:
    """One :class:`ColumnDrift` per ValueDrift metric of an Evidently snapshot dict (verdict = its test)."""
    status = {t["metric_config"]["metric_id"]: _status_name(t["status"]) for t in report.get("tests", [])}
    verdicts = []
    for metric in report["metrics"]:
        config = metric["config"]
        if not str(config.get("type", "")).endswith(":ValueDrift"):
            continue
        if metric["id"] not in status:
            raise ValueError(f"Evidently gave no test verdict for the drift of column {config['column']!r}")
        verdicts.append(
            ColumnDrift(
                column=str(config["column"]),
                method=str(config["method"]),
                score=float(metric["value"]),
                threshold=float(config["threshold"]),
                drifted=status[metric["id"]] == "FAIL",
            )
        )
    return verdicts


def _drift_preset(columns: list[str], cfg: DriftConfig) -> Any:
    from evidently.presets import DataDriftPreset

    # no columns= here: the dataset holds exactly the compared columns, and the dashboard keys each series by the
    # metric's parameters, so a column list in them would split the drift-share line whenever the set changes
    return DataDriftPreset(
        drift_share=cfg.max_drift_share,
        num_method=None if cfg.stattest == "auto" else cfg.stattest,
        # decode_failed is a rate: always the two-proportion Z-test (p-value), whatever the other columns use
        per_column_method={DECODE_FAILED: "z"} if DECODE_FAILED in columns else None,
        threshold=cfg.column_drift_threshold,
    )


def drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    cfg: DriftConfig,
    *,
    out_dir: Path | None = None,
    timestamp: datetime | None = None,
    tags: Sequence[str] = (),
    metadata: Mapping[str, str] | None = None,
) -> tuple[DriftResult, Snapshot]:
    """Test every numeric column of ``current`` against ``reference`` with Evidently's ``DataDriftPreset``.

    Args:
        reference, current: frames from :func:`drift_frame` (or any numeric columns, same names on both sides).
        cfg: the ``drift`` config (bound, per-column test and threshold).
        out_dir: when given, writes ``drift.json`` (the :class:`DriftResult`), ``report.html`` (Evidently's
            interactive report) and ``evidently.json`` (Evidently's metrics and tests).
        timestamp: the snapshot's time on the dashboard (default: now).
        tags, metadata: stored with the snapshot (the dashboard filters drift panels by tag).

    Returns:
        (result, the Evidently snapshot to add to a workspace).

    Raises:
        ValueError: no comparable numeric column, or frames with fewer than 2 rows.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import MeanValue

    if len(reference) < 2 or len(current) < 2:
        raise InputError(
            f"need at least 2 rows per side, got {len(reference)} reference, {len(current)} current"
        )
    compared, skipped = _compared_columns(reference, current)
    # decode_failed is a 0/1 rate: categorical for Evidently, tested with the two-proportion Z-test
    definition = DataDefinition(
        numerical_columns=[c for c in compared if c != DECODE_FAILED],
        categorical_columns=[DECODE_FAILED] if DECODE_FAILED in compared else [],
    )
    metrics: list[Any] = [_drift_preset(compared, cfg)]
    if DECODE_FAILED in compared:  # the current failure rate, for the dashboard's decode-failure panel
        metrics.append(MeanValue(column=DECODE_FAILED, tests=[]))
    when = timestamp or datetime.now(UTC)
    with warnings.catch_warnings():
        # constant columns make Evidently's correlation widgets divide by zero; the tests are unaffected
        warnings.simplefilter("ignore", RuntimeWarning)
        snapshot = Report(metrics, include_tests=True).run(
            current_data=Dataset.from_pandas(
                current[compared].reset_index(drop=True), data_definition=definition
            ),
            reference_data=Dataset.from_pandas(
                reference[compared].reset_index(drop=True), data_definition=definition
            ),
            timestamp=when,
            tags=[DRIFT_TAG, *tags],
            metadata={str(k): str(v) for k, v in (metadata or {}).items()},
        )
    verdicts = _column_verdicts(snapshot.dict())
    drifted = tuple(v.column for v in verdicts if v.drifted)
    share = len(drifted) / len(verdicts)
    result = DriftResult(
        drift_share=share,
        max_drift_share=cfg.max_drift_share,
        passed=share <= cfg.max_drift_share,
        drifted_columns=drifted,
        columns=tuple(verdicts),
        skipped_columns=tuple(skipped),
        reference_rows=len(reference),
        current_rows=len(current),
        reference_decode_failure_rate=failure_rate(reference) if DECODE_FAILED in reference else 0.0,
        current_decode_failure_rate=failure_rate(current) if DECODE_FAILED in current else 0.0,
        timestamp=when.astimezone(UTC).isoformat(),
        metadata={str(k): str(v) for k, v in (metadata or {}).items()},
    )
    result = dataclasses.replace(result, summary=summarize(result))
    if out_dir is not None:
        save_report(result, snapshot, Path(out_dir))
    return result, snapshot


def save_report(result: DriftResult, snapshot: Snapshot, out_dir: Path) -> dict[str, Path]:
    """Write ``drift.json``, ``report.html`` and ``evidently.json`` atomically into ``out_dir``.

    Returns:
        name -> path written.
    """
    paths = {name: Path(out_dir) / name for name in (DRIFT_JSON, REPORT_HTML, EVIDENTLY_JSON)}
    with atomic_path(paths[REPORT_HTML]) as tmp:
        snapshot.save_html(str(tmp))
    with atomic_path(paths[EVIDENTLY_JSON]) as tmp:
        snapshot.save_json(str(tmp))
    write_result(result, paths[DRIFT_JSON])
    return paths


def write_result(result: DriftResult, path: Path) -> Path:
    """Write a :class:`DriftResult` as JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    return Path(path)


def read_result(path: Path) -> DriftResult:
    """Read ``drift.json``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a drift result.
    """
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not JSON: {exc}") from exc
    return DriftResult.from_dict(data)


# ---------------------------------------------------------------------------------------------------------------
# The monitoring workspace


@contextlib.contextmanager
def _locked(workspace: Path) -> Iterator[None]:
    """Serialise project/dashboard changes between processes sharing one workspace directory."""
    workspace.mkdir(parents=True, exist_ok=True)
    with open(workspace / _LOCK_FILE, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass(frozen=True)
class DriftPanel:
    """One drift quantity that the dashboard plots once per use (see :func:`drift_panel_title`).

    Attributes:
        title: the quantity, e.g. :data:`PANEL_DRIFT_SHARE`.
        metric: the Evidently metric the drift snapshot stores it in (``DriftedColumnsCount``, ``MeanValue``).
        labels: the parameters that pick the value out of that metric (e.g. ``{"value_type": "share"}``).
        description: the panel's subtitle.
    """

    title: str
    metric: str
    labels: Mapping[str, str]
    description: str


DRIFT_PANELS: tuple[DriftPanel, ...] = (
    DriftPanel(
        PANEL_DRIFT_SHARE,
        "DriftedColumnsCount",
        {"value_type": "share"},
        "drifted columns / compared columns (the promotion gate bounds it: drift.max_drift_share)",
    ),
    DriftPanel(
        PANEL_DRIFTED_COUNT,
        "DriftedColumnsCount",
        {"value_type": "count"},
        "image statistics and embedding PCA columns that drifted",
    ),
    DriftPanel(
        PANEL_DECODE_FAILURES,
        "MeanValue",
        {"column": DECODE_FAILED},
        "share of current images that could not be decoded (quarantined included)",
    ),
)
# Panels of earlier versions, removed from existing dashboards: one panel held both uses, and drew no point (see
# _drift_panel).
_RETIRED_PANELS = frozenset(p.title for p in DRIFT_PANELS)


def drift_panel_title(quantity: str, purpose: str) -> str:
    """The title of the panel that plots ``quantity`` (e.g. :data:`PANEL_DRIFT_SHARE`) for one use, e.g.
    ``"Share of drifted columns (retrain: test vs train)"``."""
    return f"{quantity} ({PURPOSE_LABELS[purpose]})"


def _drift_panel(spec: DriftPanel, purpose: str) -> DashboardPanelPlot:
    """The panel of one drift quantity for one use: a single series, the snapshots tagged ``drift`` + ``purpose``.

    One series per panel, because Evidently 0.7's series query (``get_data_series``, behind the UI's
    ``data_series_batch``) matches each stored value to the *first* series of the panel whose metric and labels
    fit, and only then checks that series' tags; it also keys a line by metric and parameters, never by tags. A
    panel with one series per use, differing only by tags, therefore dropped every value of the second use (and
    would have merged the two uses into one line if it had not). Lines, also for counts: a zero is a visible point
    on a line, and an invisible bar.
    """
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import line_plot_panel

    series = [
        PanelMetric(
            metric=spec.metric,
            metric_labels=dict(spec.labels),
            tags=[DRIFT_TAG, purpose],
            legend=PURPOSE_LABELS[purpose],
        )
    ]
    return line_plot_panel(
        drift_panel_title(spec.title, purpose), series, description=spec.description, size="half"
    )


def _panels(eval_metrics: Sequence[str]) -> list[tuple[str, DashboardPanelPlot]]:
    """(tab, panel) for every panel of the dashboard: each drift quantity once per use (ingest, retrain, serving
    in a row), then the evaluation panel."""
    from evidently.sdk.panels import line_plot_panel

    drift = [(DRIFT_TAB, _drift_panel(spec, purpose)) for spec in DRIFT_PANELS for purpose in PURPOSES]
    return [*drift, (EVALUATION_TAB, line_plot_panel(PANEL_EVALUATION, _eval_series(eval_metrics)))]


def _eval_series(names: Sequence[str]) -> list[Any]:
    from evidently.sdk.models import PanelMetric

    return [
        PanelMetric(metric="MeanValue", metric_labels={"column": n}, tags=[EVALUATION_TAG], legend=n)
        for n in names
    ]


def _open_project(workspace: Path, project: str) -> tuple[Workspace, Project]:
    """The workspace and its project named ``project``, created when missing (call under :func:`_locked`)."""
    from evidently.ui.workspace import Workspace

    ws = Workspace(str(workspace))
    found = sorted(ws.search_project(project), key=lambda p: str(p.id))
    if found:
        return ws, found[0]
    created = ws.create_project(project, description="Landmark retrieval: data drift and offline evaluation")
    return ws, created


def _retire_panels(model: DashboardModel) -> bool:
    """Remove the panels of earlier versions that could not show their data (:data:`_RETIRED_PANELS`) from the
    dashboard and its tabs; True when one was there."""
    retired = {p.id for p in model.panels if p.title in _RETIRED_PANELS}
    if not retired:
        return False
    model.panels = [p for p in model.panels if p.id not in retired]
    for tab in model.tabs:
        tab.panels = [i for i in tab.panels if i not in retired]
    return True


def _ensure_dashboard(ws: Workspace, proj: Project, eval_metrics: Sequence[str]) -> None:
    """Remove retired panels, add the panels that are missing (by title) to their tabs, and the evaluation series
    that are missing (by metric name) to the evaluation panel; saves the dashboard only when something changed."""
    from evidently.sdk.models import DashboardTabModel

    model = ws.get_dashboard(proj.id)
    changed = _retire_panels(model)
    titles = {p.title for p in model.panels}
    for tab_title, panel in _panels(eval_metrics):
        if panel.title in titles:
            continue
        tab = next((t for t in model.tabs if t.title == tab_title), None)
        if tab is None:
            tab = DashboardTabModel(title=tab_title, panels=[])
            model.tabs.append(tab)
        model.panels.append(panel)
        tab.panels.append(panel.id)
        changed = True
    for panel in model.panels:
        if panel.title == PANEL_EVALUATION:
            shown = {v.metric_labels.get("column") for v in panel.values}
            missing = [n for n in eval_metrics if n not in shown]
            if missing:
                panel.values.extend(_eval_series(missing))
                changed = True
    if changed:
        ws.save_dashboard(proj.id, model)


def setup_monitoring(
    workspace: str | Path, project: str, eval_metrics: Sequence[str] = DEFAULT_EVAL_METRICS
) -> str:
    """Create the project and its dashboard (drift share, drifted columns, decode failures, mAP/GAP) unless they
    exist; safe to call any number of times, also from concurrent processes.

    Returns:
        The project id.
    """
    path = Path(workspace)
    with _locked(path):
        ws, proj = _open_project(path, project)
        _ensure_dashboard(ws, proj, eval_metrics)
        return str(proj.id)


def add_to_workspace(
    snapshots: Snapshot | Sequence[Snapshot], workspace: str | Path, project: str
) -> list[str]:
    """Store snapshots in the project (set up on first use); ``evidently ui`` then shows them over time.

    Returns:
        The stored snapshot ids, in order.
    """
    from evidently.core.report import Snapshot

    items = [snapshots] if isinstance(snapshots, Snapshot) else list(snapshots)
    path = Path(workspace)
    with _locked(path):
        ws, proj = _open_project(path, project)
        _ensure_dashboard(ws, proj, DEFAULT_EVAL_METRICS)
        return [str(ws.add_run(proj.id, snapshot).id) for snapshot in items]


def log_metrics(
    metrics: Mapping[str, float],
    workspace: str | Path,
    project: str,
    timestamp: datetime | None = None,
    tags: Sequence[str] = (),
) -> str:
    """Log evaluation metrics (e.g. ``{"revisitop.medium.mAP": 61.2, "recognition.GAP": 48.0}``) as a tiny
    report on a one-row frame, so the dashboard's evaluation panel plots them over time; a metric name not yet
    on the panel is added to it.

    Returns:
        The stored snapshot id.

    Raises:
        ValueError: no metrics, or a value that is not a finite number.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import MeanValue

    if not metrics:
        raise ValueError("no metrics to log")
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"metric {name!r} must be a finite number, got {value!r}")
    names = [str(n) for n in metrics]
    row = pd.DataFrame([{str(k): float(v) for k, v in metrics.items()}])
    snapshot = Report([MeanValue(column=n, tests=[]) for n in names]).run(
        current_data=Dataset.from_pandas(row, data_definition=DataDefinition(numerical_columns=names)),
        timestamp=timestamp or datetime.now(UTC),
        tags=[EVALUATION_TAG, *tags],
    )
    path = Path(workspace)
    with _locked(path):
        ws, proj = _open_project(path, project)
        _ensure_dashboard(
            ws, proj, [*DEFAULT_EVAL_METRICS, *(n for n in names if n not in DEFAULT_EVAL_METRICS)]
        )
        return str(ws.add_run(proj.id, snapshot).id)


def workspace_runs(workspace: str | Path, project: str) -> list[str]:
    """Ids of the snapshots stored in the project (empty when the workspace or project does not exist)."""
    path = Path(workspace)
    if not path.is_dir():
        return []
    from evidently.ui.workspace import Workspace

    ws = Workspace(str(path))
    return [str(run) for proj in ws.search_project(project) for run in ws.list_runs(proj.id)]
