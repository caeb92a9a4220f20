"""The query log of ``landmark serve``: what live traffic looks like, for the serving drift report.

Each query answered (or refused by the image decoder) becomes one row: a random query id, when, the endpoint,
the version and model that answered, the per-image statistics the drift report computes for the training data
(:func:`landmark.ops.drift.decoded_row` / :func:`~landmark.ops.drift.failed_row`: size, aspect, brightness, contrast,
saturation, file bytes, decode failure) and the query's global descriptor. No image bytes are kept unless
``serve.log_images`` asks for them.

On disk, under ``serve.log_dir``, numbered files of at most ``serve.log_rotate_rows`` rows:
``queries-000001.parquet`` (the statistics) with ``queries-000001.npy`` ((rows, dim) float32 descriptors, a NaN
row for a query without one) and, with images kept, ``queries-000001.images/<query id>.bin``. The open file is
rewritten atomically every ``serve.log_flush_s`` seconds (descriptors first, statistics last; rows are only
ever appended, so a reader takes the rows both hold); a full file is closed and the next number started, also when
a new model's descriptors have another dimension. Only the last ``serve.log_keep_files`` files are kept. A
restarted server starts a new number: files of an earlier process are never rewritten.

:func:`read_window` reads the last N rows back (``landmark drift --purpose serving``).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from landmark.config import ServeConfig
from landmark.ops.drift import FAILURE_COLUMN, IMAGE_STAT_COLUMNS

logger = logging.getLogger(__name__)

FILE_PREFIX = "queries-"
STATS_SUFFIX = ".parquet"
VECTORS_SUFFIX = ".npy"
IMAGES_SUFFIX = ".images"
_NUMBERED = re.compile(rf"^{FILE_PREFIX}(\d+){re.escape(STATS_SUFFIX)}$")
META_COLUMNS: tuple[str, ...] = ("query_id", "logged_at", "endpoint", "version", "model_id")
LOG_COLUMNS: tuple[str, ...] = (*META_COLUMNS, *IMAGE_STAT_COLUMNS, FAILURE_COLUMN)


def new_query_id() -> str:
    """A random id for a logged query (nothing derived from the image)."""
    return uuid.uuid4().hex


@dataclass(frozen=True)
class LoggedQuery:
    """One row of the log.

    Attributes:
        query_id: from :func:`new_query_id`.
        endpoint: "search" or "recognize".
        version: the version that answered (or refused) it.
        model_id: that version's model id (its descriptors are comparable only with that model's).
        stats: the image statistics row (:data:`landmark.ops.drift.IMAGE_STAT_COLUMNS` and ``failure``).
        descriptor: (dim,) float32 global descriptor, None when the image was not described.
        image: the query's bytes, kept only with ``serve.log_images``.
        logged_at: UTC time, ISO 8601.
    """

    query_id: str
    endpoint: str
    version: str
    model_id: str
    stats: Mapping[str, Any]
    descriptor: np.ndarray | None = None
    image: bytes | None = None
    logged_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds"))

    def row(self) -> dict[str, Any]:
        """The statistics table's row."""
        meta = {
            "query_id": self.query_id,
            "logged_at": self.logged_at,
            "endpoint": self.endpoint,
            "version": self.version,
            "model_id": self.model_id,
        }
        stats = {c: float(self.stats[c]) for c in IMAGE_STAT_COLUMNS}
        return {**meta, **stats, FAILURE_COLUMN: str(self.stats.get(FAILURE_COLUMN, ""))}


def numbered_files(root: Path) -> list[tuple[int, Path]]:
    """(number, statistics file) of the log's numbered files, oldest first."""
    if not Path(root).is_dir():
        return []
    found = [(int(m.group(1)), p) for p in Path(root).iterdir() if (m := _NUMBERED.match(p.name))]
    return sorted(found)


def file_stem(root: Path, number: int) -> Path:
    """``root/queries-<number>`` (add a suffix for each part)."""
    return Path(root) / f"{FILE_PREFIX}{number:06d}"


def _replace_atomically(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


@dataclass
class _Segment:
    """The rows of one numbered file held in memory while it is open."""

    number: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    vectors: list[np.ndarray | None] = field(default_factory=list)
    images: list[tuple[str, bytes]] = field(default_factory=list)
    dim: int | None = None
    written_rows: int = 0

    def matrix(self) -> np.ndarray:
        """(rows, dim) float32 descriptors, NaN rows for queries without one."""
        dim = self.dim or 0
        out = np.full((len(self.rows), dim), np.nan, dtype=np.float32)
        for i, vector in enumerate(self.vectors):
            if vector is not None:
                out[i] = vector
        return out


class QueryLog:
    """Appends logged queries and writes them as bounded, rotated numbered files (thread-safe).

    Args:
        root: the log directory (``serve.log_dir``).
        rotate_rows: rows per numbered file.
        keep_files: numbered files kept; older ones are deleted.
        flush_s: seconds between writes of the open file (by :meth:`start`'s thread).
        keep_images: also write the query images' bytes.
    """

    def __init__(
        self, root: Path, *, rotate_rows: int, keep_files: int, flush_s: float, keep_images: bool = False
    ) -> None:
        if rotate_rows < 1 or keep_files < 1 or flush_s <= 0:
            raise ValueError(
                f"need rotate_rows >= 1, keep_files >= 1 and flush_s > 0, got {rotate_rows}, {keep_files}, "
                f"{flush_s}"
            )
        self.root = Path(root)
        self.rotate_rows, self.keep_files, self.flush_s = rotate_rows, keep_files, flush_s
        self.keep_images = keep_images
        self.root.mkdir(parents=True, exist_ok=True)
        existing = numbered_files(self.root)
        self._open = _Segment(existing[-1][0] + 1 if existing else 1)
        self._closed: list[_Segment] = []
        self._lock = threading.Lock()  # guards _open / _closed
        self._write_lock = threading.Lock()  # one writer at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.appended = 0

    @classmethod
    def from_config(cls, cfg: ServeConfig, root: Path | None = None) -> QueryLog:
        """The log ``serve`` configures (``root`` overrides ``serve.log_dir``)."""
        return cls(
            Path(root or cfg.log_dir),
            rotate_rows=cfg.log_rotate_rows,
            keep_files=cfg.log_keep_files,
            flush_s=cfg.log_flush_s,
            keep_images=cfg.log_images,
        )

    def append(self, query: LoggedQuery) -> None:
        """Add one query (in memory; written by the next :meth:`flush`)."""
        row = query.row()
        vector = None if query.descriptor is None else np.asarray(query.descriptor, np.float32).reshape(-1)
        with self._lock:
            if vector is not None and self._open.dim not in (None, vector.size):
                self._rotate()  # another model's descriptors: a file holds one dimension
            segment = self._open
            if vector is not None:
                segment.dim = vector.size
            segment.rows.append(row)
            segment.vectors.append(vector)
            if self.keep_images and query.image is not None:
                segment.images.append((query.query_id, query.image))
            self.appended += 1
            if len(segment.rows) >= self.rotate_rows:
                self._rotate()

    def _rotate(self) -> None:
        """Close the open file (call under ``_lock``) and open the next number."""
        if not self._open.rows:
            return
        self._closed.append(self._open)
        self._open = _Segment(self._open.number + 1)

    def flush(self) -> None:
        """Write the closed files and the open one (when it has new rows), then delete files beyond
        ``keep_files``."""
        with self._write_lock:
            with self._lock:
                closed, self._closed = self._closed, []
                pending = [(s, len(s.rows)) for s in closed]
                if len(self._open.rows) > self._open.written_rows:
                    pending.append((self._open, len(self._open.rows)))
            for segment, rows in pending:
                self._write(segment, rows)
            if closed:
                self._prune()

    def _write(self, segment: _Segment, rows: int) -> None:
        """Write the first ``rows`` rows of ``segment`` (descriptors, images, then statistics)."""
        # a consistent copy under the lock (appends continue meanwhile); the tables are built outside it
        with self._lock:
            part = _Segment(segment.number, segment.rows[:rows], segment.vectors[:rows], dim=segment.dim)
            images = list(segment.images)
        table = pd.DataFrame(part.rows, columns=list(LOG_COLUMNS))
        stem = file_stem(self.root, segment.number)
        matrix = part.matrix()
        _replace_atomically(stem.with_suffix(VECTORS_SUFFIX), lambda p: _save_npy(p, matrix))
        if images:
            folder = stem.with_suffix(IMAGES_SUFFIX)
            folder.mkdir(exist_ok=True)
            for query_id, data in images:
                target = folder / f"{query_id}.bin"
                if not target.exists():
                    _replace_atomically(target, lambda p, d=data: p.write_bytes(d))
        _replace_atomically(stem.with_suffix(STATS_SUFFIX), lambda p: table.to_parquet(p, index=False))
        segment.written_rows = max(segment.written_rows, rows)

    def _prune(self) -> None:
        """Delete the oldest numbered files beyond ``keep_files`` (with their descriptors and images)."""
        files = numbered_files(self.root)
        for number, _ in files[: max(0, len(files) - self.keep_files)]:
            stem = file_stem(self.root, number)
            for suffix in (STATS_SUFFIX, VECTORS_SUFFIX):
                stem.with_suffix(suffix).unlink(missing_ok=True)
            shutil.rmtree(stem.with_suffix(IMAGES_SUFFIX), ignore_errors=True)

    def start(self) -> QueryLog:
        """Flush every ``flush_s`` seconds in a daemon thread until :meth:`close`."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="query-log", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.flush_s):
            try:
                self.flush()
            except OSError as exc:  # a full or failing disk must not stop serving: reported, retried
                logger.error("serving: cannot write the query log in %s: %s", self.root, exc)

    def close(self) -> None:
        """Stop the flushing thread and write what is left."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._lock:
            self._rotate()
        self.flush()


def _save_npy(path: Path, matrix: np.ndarray) -> None:
    with open(path, "wb") as handle:
        np.save(handle, matrix)


# ---------------------------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True)
class QueryWindow:
    """The last logged queries.

    Attributes:
        stats: one row per query, oldest first, indexed by ``query_id``: :data:`META_COLUMNS` (less the id),
            :data:`landmark.ops.drift.IMAGE_STAT_COLUMNS` and ``failure``.
        vectors: query id -> (dim,) float32 descriptor, for the queries that have one.
        files: the numbered files read.
    """

    stats: pd.DataFrame
    vectors: dict[str, np.ndarray]
    files: tuple[str, ...]

    def descriptors(self, model_id: str) -> tuple[list[str], np.ndarray]:
        """(query ids, (n, dim) descriptors) of the queries described by the model ``model_id``."""
        ids = [
            str(q)
            for q, m in zip(self.stats.index, self.stats["model_id"], strict=True)
            if m == model_id and q in self.vectors
        ]
        if not ids:
            return [], np.zeros((0, 0), np.float32)
        return ids, np.vstack([self.vectors[q] for q in ids]).astype(np.float32)

    def models(self) -> list[str]:
        """The model ids that described queries of the window, most queries first."""
        described = self.stats[self.stats.index.isin(list(self.vectors))]
        return [str(m) for m in described["model_id"].value_counts().index]


def read_file(stem: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """One numbered file: its statistics and descriptors, cut to the rows both hold (the open file may be
    rewritten between the two reads; rows are only appended)."""
    table = pd.read_parquet(stem.with_suffix(STATS_SUFFIX))
    vectors_path = stem.with_suffix(VECTORS_SUFFIX)
    vectors = np.load(vectors_path, allow_pickle=False) if vectors_path.is_file() else np.zeros((0, 0))
    rows = min(len(table), vectors.shape[0])
    return table.iloc[:rows], np.asarray(vectors[:rows], np.float32)


def read_window(root: Path, rows: int) -> QueryWindow:
    """The last ``rows`` logged queries (fewer when the log holds fewer), newest files first until enough.

    Raises:
        FileNotFoundError: no query log at ``root``.
        ValueError: ``rows`` < 1.
    """
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    files = numbered_files(Path(root))
    if not files:
        raise FileNotFoundError(
            f"no query log at {root} (landmark serve writes it with serve.log on; see serve.log_dir)"
        )
    tables: list[pd.DataFrame] = []
    vectors: dict[str, np.ndarray] = {}
    read: list[str] = []
    held = 0
    for _, path in reversed(files):
        table, matrix = read_file(path.with_suffix(""))
        tables.insert(0, table)
        read.insert(0, path.name)
        for query_id, vector in zip(table["query_id"], matrix, strict=True):
            if vector.size and np.isfinite(vector).all():
                vectors[str(query_id)] = vector
        held += len(table)
        if held >= rows:
            break
    stats = pd.concat(tables, ignore_index=True).tail(rows).set_index("query_id")
    kept = {q: v for q, v in vectors.items() if q in stats.index}
    return QueryWindow(stats, kept, tuple(read))
