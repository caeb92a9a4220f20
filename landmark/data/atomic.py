"""Atomic file and directory replacement: a reader sees the old one or the new one, never half of one."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it over ``path`` with ``os.replace``.

    The temporary file lives in the same directory so the final rename never crosses file systems. When the
    body raises, the temporary file is removed and the exception propagates; ``path`` is left untouched.

    Args:
        path: the destination file; its parent directories are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        # After a successful os.replace the temporary name no longer exists.
        tmp.unlink(missing_ok=True)


def write_json(path: str | Path, payload: Mapping[str, object]) -> None:
    """Write ``payload`` as indented JSON with sorted keys and a final newline, atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def _backup_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.previous")


def repair_interrupted_swap(path: Path) -> None:
    """Finish or undo a swap a crash interrupted: restore the previous directory if the new one never arrived."""
    backup = _backup_path(path)
    if not backup.exists():
        return
    if path.exists():
        shutil.rmtree(backup)  # the new directory is in place; the old one was about to be deleted
    else:
        os.replace(backup, path)  # crashed between the two renames: the previous good directory comes back


@contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary directory next to ``path``; on success it replaces ``path``.

    On error the temporary directory is removed and ``path`` is untouched. The swap moves the old directory
    aside, renames the new one into place, then deletes the old one; :func:`repair_interrupted_swap` (run
    here and by readers such as :func:`landmark.retrieval.index.load_index`) restores the old directory if a crash hit between the two renames.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    repair_interrupted_swap(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        backup = _backup_path(path)
        if path.exists():
            os.replace(path, backup)
        os.replace(tmp, path)
        if backup.exists():
            shutil.rmtree(backup)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
