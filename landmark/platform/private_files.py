"""Files that hold secrets (S3 keys, JWT signing keys, DVC's ``config.local``): readable by their owner only.

A private file is written atomically with mode 0600 from its first byte (a fresh temporary file opened with that
mode, then renamed over the target), so there is no moment where another user could read it. Files that already
exist are checked, and their mode is fixed, by :func:`ensure_private` (``landmark infra up`` does this every time).
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path

logger = logging.getLogger(__name__)

PRIVATE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


def write_private_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically, readable and writable by the owner only (0600).

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)  # O_CREAT's mode applies only to a file it creates
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as stream:
        os.fchmod(stream.fileno(), PRIVATE_MODE)  # whatever the umask
        stream.write(text)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(tmp, path)
    return path


def is_private(path: str | Path) -> bool:
    """True when no one but the owner may read, write or enter ``path``."""
    return stat.S_IMODE(Path(path).stat().st_mode) & 0o077 == 0


def ensure_private(paths: Iterable[str | Path]) -> list[Path]:
    """Make existing files 0600 (directories 0700) where group or others have any access; missing paths are
    skipped.

    Returns:
        The paths whose mode was fixed (each is logged as a warning).
    """
    fixed = []
    for path in map(Path, paths):
        if not path.exists() or is_private(path):
            continue
        mode = PRIVATE_DIR_MODE if path.is_dir() else PRIVATE_MODE
        logger.warning(
            "%s was accessible to other users (mode %o); set to %o",
            path,
            stat.S_IMODE(path.stat().st_mode),
            mode,
        )
        path.chmod(mode)
        fixed.append(path)
    return fixed
