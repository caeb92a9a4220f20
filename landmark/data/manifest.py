"""The manifest: one table per split listing every image, its label, where it lives and whether it is usable.

A manifest is a :class:`pandas.DataFrame` with exactly the columns of :data:`MANIFEST_DTYPES`, in that order,
stored as one parquet file per split. Rows are never silently dropped: a row that cannot be used is kept with
``status == "quarantined"`` and a ``reason`` such as ``"unsafe_id: 'a/../b'"``.

Ingestion bookkeeping: ``attempts`` counts the ingest runs that fetched the item (1 for rows written before the
column existed), ``ingested_at`` is the time of the last of them, and ``retryable`` marks quarantined rows whose
reason is transient (a timeout, a cut connection, a 5xx): the next ingest run of the same source fetches them
again, until ``ingest.max_attempts``. Missing columns of older manifests read as their defaults.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from landmark.data.atomic import atomic_path
from landmark.data.ids import is_safe_image_id, validate_image_id
from landmark.errors import InputError, LandmarkError

STATUS_OK = "ok"
STATUS_QUARANTINED = "quarantined"
STATUSES = (STATUS_OK, STATUS_QUARANTINED)
NO_LANDMARK = -1
UNKNOWN_SIZE = -1

MANIFEST_DTYPES: dict[str, str] = {
    "image_id": "object",
    "landmark_id": "int64",
    "uri": "object",
    "url": "object",
    "width": "int32",
    "height": "int32",
    "sha1": "object",
    "batch_id": "object",
    "ingested_at": "datetime64[ns, UTC]",
    "status": "object",
    "reason": "object",
    "bbox_x0": "float64",
    "bbox_y0": "float64",
    "bbox_x1": "float64",
    "bbox_y1": "float64",
    "attempts": "int32",
    "retryable": "bool",
}
MANIFEST_COLUMNS: tuple[str, ...] = tuple(MANIFEST_DTYPES)
BBOX_COLUMNS = ("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1")

_STR_DEFAULTS = {
    "image_id": "",
    "uri": "",
    "url": "",
    "sha1": "",
    "batch_id": "",
    "status": STATUS_OK,
    "reason": "",
}
_INT_DEFAULTS = {"landmark_id": NO_LANDMARK, "width": UNKNOWN_SIZE, "height": UNKNOWN_SIZE, "attempts": 1}
_BOOL_DEFAULTS = {"retryable": False}
_REASON_CODE = re.compile(r"^[a-z][a-z0-9_]*$")
_MAX_EXAMPLES = 5


class ManifestError(LandmarkError, ValueError):
    """A manifest that does not follow the schema or its rules (the message names the rows)."""


def _examples(frame: pd.DataFrame, mask: pd.Series, what: str) -> str:
    """'what' followed by up to five offending rows as 'row N (image_id 'x'): value'."""
    bad = frame.index[mask.to_numpy()]
    shown = ", ".join(f"row {i} (image_id {frame.at[i, 'image_id']!r})" for i in bad[:_MAX_EXAMPLES])
    more = f" and {len(bad) - _MAX_EXAMPLES} more" if len(bad) > _MAX_EXAMPLES else ""
    return f"{what}: {shown}{more}"


def _coerce_str(values: pd.Series, column: str) -> pd.Series:
    default = _STR_DEFAULTS[column]
    series = values.astype(object)
    series = series.where(~series.isna(), default)
    if pd.api.types.infer_dtype(series, skipna=False) in ("string", "empty"):
        return series  # fast path: a C-level scan found only str
    not_str = ~series.map(lambda v: isinstance(v, str)).astype(bool)
    if not_str.any():
        first = series[not_str].iloc[0]
        raise ManifestError(
            f"column {column!r} must hold strings; {int(not_str.sum())} rows do not, e.g. "
            f"row {series.index[not_str][0]}: {first!r} ({type(first).__name__})"
        )
    return series


def _coerce_int(values: pd.Series, column: str) -> pd.Series:
    default = _INT_DEFAULTS[column]
    missing = values.isna()
    numbers = pd.to_numeric(values.where(~missing, default), errors="coerce")
    as_float = numbers.astype("float64")
    bad = as_float.isna() | (np.floor(as_float) != as_float)
    if bad.any():
        row = values.index[bad][0]
        raise ManifestError(f"column {column!r} must hold integers; row {row} has {values[row]!r}")
    if (as_float < -1).any():
        row = values.index[as_float < -1][0]
        raise ManifestError(f"column {column!r} must be >= -1 (-1 = unknown); row {row} has {values[row]!r}")
    dtype = MANIFEST_DTYPES[column]
    if dtype == "int32" and (as_float > np.iinfo(np.int32).max).any():
        row = values.index[as_float > np.iinfo(np.int32).max][0]
        raise ManifestError(f"column {column!r} does not fit int32; row {row} has {values[row]!r}")
    return numbers.astype(np.dtype(dtype))


def _coerce_float(values: pd.Series, column: str) -> pd.Series:
    numbers = pd.to_numeric(values, errors="coerce").astype("float64")
    bad = numbers.isna() & ~values.isna()
    if bad.any():
        row = values.index[bad][0]
        raise ManifestError(
            f"column {column!r} must hold numbers (NaN = none); row {row} has {values[row]!r}"
        )
    return numbers


def _coerce_datetime(values: pd.Series, column: str) -> pd.Series:
    stamps = pd.to_datetime(values, utc=True, errors="coerce")
    bad = stamps.isna() & ~values.isna()
    if bad.any():
        row = values.index[bad][0]
        raise ManifestError(f"column {column!r} must hold timestamps; row {row} has {values[row]!r}")
    return stamps.astype(pd.DatetimeTZDtype(unit="ns", tz="UTC"))


def _coerce_bool(values: pd.Series, column: str) -> pd.Series:
    if pd.api.types.is_bool_dtype(values.dtype) and not values.isna().any():
        return values.astype(bool)  # fast path: parquet and our own frames
    filled = values.astype(object).where(~values.isna(), _BOOL_DEFAULTS[column])
    bad = ~filled.map(lambda v: isinstance(v, bool | np.bool_) or (type(v) is int and v in (0, 1))).astype(
        bool
    )
    if bad.any():
        row = values.index[bad][0]
        raise ManifestError(f"column {column!r} must hold booleans; row {row} has {values[row]!r}")
    return filled.astype(bool)


def _coerce_column(values: pd.Series, column: str) -> pd.Series:
    if column in _STR_DEFAULTS:
        return _coerce_str(values, column)
    if column in _INT_DEFAULTS:
        return _coerce_int(values, column)
    if column in _BOOL_DEFAULTS:
        return _coerce_bool(values, column)
    if column == "ingested_at":
        return _coerce_datetime(values, column)
    return _coerce_float(values, column)


def _default_column(column: str, n_rows: int) -> pd.Series:
    dtype = MANIFEST_DTYPES[column]
    if column in _STR_DEFAULTS:
        return pd.Series([_STR_DEFAULTS[column]] * n_rows, dtype=object)
    if column in _INT_DEFAULTS:
        return pd.Series(np.full(n_rows, _INT_DEFAULTS[column]), dtype=dtype)
    if column in _BOOL_DEFAULTS:
        return pd.Series(np.full(n_rows, _BOOL_DEFAULTS[column]), dtype=dtype)
    if column == "ingested_at":
        return pd.Series(pd.NaT, index=range(n_rows), dtype=dtype)
    return pd.Series(np.full(n_rows, np.nan), dtype=dtype)


def is_safe_uri(uri: str) -> bool:
    """True for ``s3://`` URIs, absolute paths, and relative POSIX paths without ``..`` or backslashes."""
    if not uri or "\x00" in uri:
        return False
    if uri.startswith("s3://") or uri.startswith("/"):
        return True
    return "\\" not in uri and ".." not in uri.split("/")


def safe_uri_mask(uris: pd.Series) -> pd.Series:
    """Vectorised :func:`is_safe_uri` (Arrow string kernels; ~50x faster than a Python loop over 4M rows)."""
    if uris.empty:
        return pd.Series(np.zeros(0, dtype=bool), index=uris.index)
    text = pa.array(uris.to_numpy(dtype=object), type=pa.string())
    rooted = pc.or_(pc.starts_with(text, "s3://"), pc.starts_with(text, "/"))
    relative_ok = pc.and_not(
        pc.invert(pc.match_substring(text, "\\")), pc.match_substring_regex(text, r"(^|/)\.\.(/|$)")
    )
    safe = pc.and_(
        pc.and_(pc.greater(pc.utf8_length(text), 0), pc.invert(pc.match_substring(text, "\x00"))),
        pc.or_(rooted, relative_ok),
    )
    return pd.Series(np.asarray(safe.to_numpy(zero_copy_only=False), dtype=bool), index=uris.index)


def _validate(frame: pd.DataFrame) -> None:
    status = frame["status"]
    bad_status = ~status.isin(STATUSES)
    if bad_status.any():
        row = frame.index[bad_status][0]
        raise ManifestError(f"status must be one of {STATUSES}; row {row} has {status[row]!r}")
    ok = status == STATUS_OK
    quarantined = ~ok
    if (quarantined & (frame["reason"] == "")).any():
        raise ManifestError(
            _examples(frame, quarantined & (frame["reason"] == ""), "quarantined rows need a reason")
        )
    if (ok & (frame["reason"] != "")).any():
        raise ManifestError(
            _examples(frame, ok & (frame["reason"] != ""), "ok rows must have an empty reason")
        )
    if (ok & frame["retryable"]).any():
        raise ManifestError(_examples(frame, ok & frame["retryable"], "ok rows cannot be retryable"))
    if (frame["attempts"] < 1).any():
        raise ManifestError(_examples(frame, frame["attempts"] < 1, "attempts must be >= 1"))
    unsafe = ok & ~frame["image_id"].map(is_safe_image_id).astype(bool)
    if unsafe.any():
        raise ManifestError(
            _examples(frame, unsafe, "ok rows with unsafe image ids (quarantine them instead)")
        )
    duplicated = ok & frame["image_id"].where(ok).duplicated(keep=False) & frame["image_id"].notna()
    if duplicated.any():
        raise ManifestError(_examples(frame, duplicated, "duplicate image ids among ok rows"))
    bad_uri = ok & ~safe_uri_mask(frame["uri"])
    if bad_uri.any():
        raise ManifestError(
            _examples(
                frame, bad_uri, "ok rows need a non-empty uri without '..' (relative, absolute or s3://)"
            )
        )
    boxes = frame[list(BBOX_COLUMNS)].to_numpy()
    some_nan = np.isnan(boxes).any(axis=1)
    all_nan = np.isnan(boxes).all(axis=1)
    partial = pd.Series(some_nan & ~all_nan, index=frame.index)
    if (ok & partial).any():
        raise ManifestError(_examples(frame, ok & partial, "bbox columns must be all NaN or all set"))
    with np.errstate(invalid="ignore"):
        inverted = ~some_nan & ((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1]))
    if (ok & pd.Series(inverted, index=frame.index)).any():
        raise ManifestError(
            _examples(frame, ok & pd.Series(inverted, index=frame.index), "bbox needs x1 > x0 and y1 > y0")
        )


def make_manifest(rows: Iterable[Mapping[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """Build a validated manifest with the fixed schema from rows or a frame.

    Missing optional columns get their defaults (landmark_id -1, width/height -1, strings "", status "ok",
    ingested_at NaT, bbox NaN, attempts 1, retryable False); values are coerced to the schema's dtypes.

    Args:
        rows: mappings (one per image) or a DataFrame; ``image_id`` is required, other columns optional.

    Returns:
        (N, 17) DataFrame with columns :data:`MANIFEST_COLUMNS` and a fresh RangeIndex, rows in input order.

    Raises:
        ManifestError: unknown columns, values of the wrong type, a status outside {ok, quarantined}, a
            quarantined row without reason, or an ok row with an unsafe/duplicate id or an empty/unsafe uri.
    """
    frame = (
        rows.reset_index(drop=True)
        if isinstance(rows, pd.DataFrame)
        else pd.DataFrame.from_records(list(rows))
    )
    unknown = [c for c in frame.columns if c not in MANIFEST_DTYPES]
    if unknown:
        raise ManifestError(f"unknown manifest columns {unknown}; the schema is {list(MANIFEST_COLUMNS)}")
    n_rows = len(frame)
    if n_rows and "image_id" not in frame.columns:
        raise ManifestError("manifest rows need an 'image_id'")
    columns = {
        col: _coerce_column(frame[col], col) if col in frame.columns else _default_column(col, n_rows)
        for col in MANIFEST_COLUMNS
    }
    out = pd.DataFrame({col: series.reset_index(drop=True) for col, series in columns.items()})
    out = out.astype(MANIFEST_DTYPES)
    _validate(out)
    return out


def empty_manifest() -> pd.DataFrame:
    """A manifest with no rows and the schema's columns and dtypes."""
    return make_manifest([])


def format_reason(code: str, detail: str = "") -> str:
    """A quarantine reason: ``"code: detail"`` (or just ``"code"``); codes are lower_snake_case."""
    if not _REASON_CODE.match(code):
        raise ValueError(f"reason code must be lower_snake_case, got {code!r}")
    return f"{code}: {detail}" if detail else code


def reason_code(reason: str) -> str:
    """The code part of a quarantine reason, e.g. ``"unsafe_id"`` for ``"unsafe_id: 'a/b'"``."""
    return reason.split(":", 1)[0].strip()


def quarantined_row(image_id: str, code: str, detail: str = "", **fields: Any) -> dict[str, Any]:
    """A manifest row (as a dict) for an image that cannot be used; ``uri`` defaults to ""."""
    row: dict[str, Any] = {"uri": "", **fields}
    row.update(image_id=image_id, status=STATUS_QUARANTINED, reason=format_reason(code, detail))
    return row


def ok_rows(manifest: pd.DataFrame) -> pd.DataFrame:
    """The usable rows (status "ok"), with a fresh RangeIndex."""
    return manifest[manifest["status"] == STATUS_OK].reset_index(drop=True)


def quarantined_rows(manifest: pd.DataFrame) -> pd.DataFrame:
    """The quarantined rows, with a fresh RangeIndex."""
    return manifest[manifest["status"] == STATUS_QUARANTINED].reset_index(drop=True)


def quarantine(
    manifest: pd.DataFrame, where: pd.Series | Sequence[str], code: str, detail: str = ""
) -> pd.DataFrame:
    """Return a copy of ``manifest`` with some ok rows quarantined.

    Args:
        manifest: a manifest.
        where: boolean mask aligned with the manifest's rows, or image ids of ok rows.
        code: reason code, e.g. "corrupt"; ``detail`` is appended after a colon.

    Raises:
        ManifestError: ids that are not ok rows of the manifest, or a mask of the wrong length.
    """
    frame = manifest.reset_index(drop=True).copy()
    if isinstance(where, pd.Series) and where.dtype == bool:
        if len(where) != len(frame):
            raise ManifestError(f"mask has {len(where)} entries for a manifest of {len(frame)} rows")
        mask = where.reset_index(drop=True)
    else:
        wanted = set(where)
        ok = frame["status"] == STATUS_OK
        mask = ok & frame["image_id"].isin(wanted)
        missing = wanted - set(frame.loc[mask, "image_id"])
        if missing:
            raise ManifestError(
                f"cannot quarantine ids that are not ok rows: {sorted(missing)[:_MAX_EXAMPLES]}"
            )
    frame.loc[mask, "status"] = STATUS_QUARANTINED
    frame.loc[mask, "reason"] = format_reason(code, detail)
    return make_manifest(frame)


def resolve_uri(root: str | Path, uri: str) -> Path:
    """Local path of a manifest uri: relative uris are resolved against ``root``.

    Raises:
        ValueError: an empty or unsafe uri (``..``), or an ``s3://`` uri (fetch it through storage first).
    """
    if uri.startswith("s3://"):
        raise InputError(f"uri {uri!r} is in object storage, not on the local file system")
    if not is_safe_uri(uri):
        raise InputError(f"unsafe or empty uri {uri!r}")
    path = Path(uri)
    return path if path.is_absolute() else Path(root) / path


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read and validate one manifest parquet file.

    Raises:
        FileNotFoundError: no such file.
        ManifestError: not a parquet file, or rows that break the schema.
    """
    try:
        frame = pd.read_parquet(path)
    except (pa.ArrowException, ValueError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ManifestError(f"{path} is not a readable parquet manifest: {exc}") from exc
    try:
        return make_manifest(frame)
    except ManifestError as exc:
        raise ManifestError(f"{path}: {exc}") from exc


def write_manifest(manifest: pd.DataFrame, path: str | Path) -> Path:
    """Validate ``manifest`` and write it atomically as parquet (temp file in the same folder, then rename).

    Returns:
        The path written.
    """
    validated = make_manifest(manifest)
    path = Path(path)
    with atomic_path(path) as tmp:
        validated.to_parquet(tmp, index=False)
    return path


def manifest_path(directory: str | Path, split: str) -> Path:
    """``<directory>/<split>.parquet``; the split name must be a safe file name."""
    validate_image_id(split)
    return Path(directory) / f"{split}.parquet"


def write_manifests(manifests: Mapping[str, pd.DataFrame], directory: str | Path) -> dict[str, Path]:
    """Write one parquet manifest per split into ``directory``; returns split -> path."""
    return {
        split: write_manifest(frame, manifest_path(directory, split)) for split, frame in manifests.items()
    }


def read_manifests(directory: str | Path) -> dict[str, pd.DataFrame]:
    """Read every ``<split>.parquet`` in ``directory`` (sorted by split name)."""
    return {path.stem: read_manifest(path) for path in sorted(Path(directory).glob("*.parquet"))}


def has_bbox(manifest: pd.DataFrame) -> pd.Series:
    """Boolean mask of rows whose bbox columns are set."""
    return manifest[list(BBOX_COLUMNS)].notna().all(axis=1)


def row_bbox(row: Mapping[str, Any]) -> tuple[float, float, float, float] | None:
    """A row's (x0, y0, x1, y1) box in pixels, or None for the whole image."""
    values = tuple(float(row[c]) for c in BBOX_COLUMNS)
    if any(math.isnan(v) for v in values):
        return None
    return values[0], values[1], values[2], values[3]
