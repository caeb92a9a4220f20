"""The journal of an ingestion batch: what is already done, so a killed run resumes instead of starting over.

A journal is a JSON-lines file. Its first line (the header: batch id, split, source, fingerprint) is written
atomically when the batch starts; then one line per finished item is appended, flushed and fsync'ed before
the next item counts as done. A run killed mid-write leaves at most one torn last line, which is ignored on
reading (that item is simply done again). The manifest itself is only written when the batch is committed,
after which the journal is removed.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from landmark.data.atomic import atomic_path
from landmark.errors import LandmarkError

logger = logging.getLogger(__name__)


class JournalError(LandmarkError, ValueError):
    """A journal whose header cannot be read (the message names the file)."""


@dataclass(frozen=True)
class JournalHeader:
    """What a pending batch is: its id, split, source and the fingerprint of its planned items."""

    batch_id: str
    split: str
    source: str
    fingerprint: str
    started_at: str


class BatchJournal:
    """Append-only record of finished items of one batch (see the module docstring).

    Use :meth:`create` or :meth:`open`; close with :meth:`close` or as a context manager.
    """

    def __init__(self, path: Path, header: JournalHeader) -> None:
        self.path = path
        self.header = header
        self._stream: IO[str] | None = None

    @classmethod
    def create(cls, path: str | Path, header: JournalHeader) -> BatchJournal:
        """Start a journal at ``path`` (replacing any file there) with ``header``."""
        path = Path(path)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(asdict(header), sort_keys=True) + "\n")
        return cls(path, header)

    @classmethod
    def open(cls, path: str | Path) -> BatchJournal | None:
        """The journal at ``path``, or None when there is none.

        Raises:
            JournalError: the header is unreadable.
        """
        path = Path(path)
        if not path.is_file():
            return None
        with open(path, encoding="utf-8") as stream:
            first = stream.readline()
        try:
            header = JournalHeader(**json.loads(first))
        except (json.JSONDecodeError, TypeError) as exc:
            raise JournalError(
                f"journal {path} has an unreadable header ({exc}); remove it to start over"
            ) from exc
        return cls(path, header)

    def records(self) -> list[dict[str, Any]]:
        """The finished-item records, in the order they were written (a torn last line is skipped)."""
        records: list[dict[str, Any]] = []
        with open(self.path, encoding="utf-8") as stream:
            lines = stream.read().split("\n")
        body, last = lines[1:-1], lines[-1]
        for number, line in enumerate(body, start=2):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                logger.warning("%s: skipping unreadable line %d", self.path, number)
        if last:
            logger.warning("%s: ignoring a torn last line (the run was killed while writing it)", self.path)
        return records

    def append(self, record: dict[str, Any]) -> None:
        """Write one finished-item record durably (flush + fsync) before returning."""
        if self._stream is None:
            self._stream = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
            self._drop_torn_tail()
        self._stream.write(json.dumps(record, sort_keys=True) + "\n")
        self._stream.flush()
        os.fsync(self._stream.fileno())

    def _drop_torn_tail(self) -> None:
        """Cut a torn last line left by a killed run, so the next record starts on its own line."""
        with open(self.path, "rb") as stream:
            data = stream.read()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            os.truncate(self.path, keep)

    def close(self) -> None:
        """Close the file (the journal stays on disk)."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def remove(self) -> None:
        """Close and delete the journal (after the batch is committed)."""
        self.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> BatchJournal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
