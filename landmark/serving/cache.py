"""The local cache of registry versions that serving reads: one directory per version, verified before use.

``<cache>/<version>/`` is what :meth:`landmark.ops.registry.Registry.download` writes (``model/``, ``index/``,
``metrics.json``, ``MANIFEST.json``). A version is downloaded once; every later use re-checks the files on disk
against the MANIFEST (sizes and sha256), and a directory that fails the check is downloaded again.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from landmark.ops.registry import (
    MANIFEST,
    FileEntry,
    Registry,
    RegistryError,
    check_version_id,
    parse_manifest,
    sha256_file,
)

logger = logging.getLogger(__name__)


def verify_version_dir(root: Path) -> list[FileEntry]:
    """Check every file a version directory's MANIFEST lists: present, with its size and sha256.

    Returns:
        The manifest entries.

    Raises:
        RegistryError: no MANIFEST, or a file that is missing or differs from it.
    """
    root = Path(root)
    manifest = root / MANIFEST
    if not manifest.is_file():
        raise RegistryError(f"{root} is not a downloaded registry version: no {MANIFEST}")
    entries = parse_manifest(manifest.read_bytes(), str(manifest))
    for entry in entries:
        path = root / entry.path
        if not path.is_file():
            raise RegistryError(f"{path} is listed in the MANIFEST but missing")
        size = path.stat().st_size
        if size != entry.size:
            raise RegistryError(f"{path}: {size} bytes, the MANIFEST says {entry.size}")
        digest = sha256_file(path)
        if digest != entry.sha256:
            raise RegistryError(
                f"{path}: sha256 {digest[:12]} differs from the MANIFEST's {entry.sha256[:12]}"
            )
    return entries


def cached_version(registry: Registry, version: str, cache_root: Path) -> Path:
    """The verified local copy of ``version`` under ``cache_root``, downloading it when absent or damaged.

    Raises:
        RegistryError: the version is unknown or incomplete, or its files differ from the MANIFEST.
        StorageError: the store failed.
    """
    dest = Path(cache_root) / check_version_id(version)
    if (dest / MANIFEST).is_file():
        try:
            verify_version_dir(dest)
            os.utime(dest)  # marks it recently used for prune_cache
            return dest
        except RegistryError as exc:
            logger.warning("cached %s failed verification (%s): downloading it again", version, exc)
    dest.parent.mkdir(parents=True, exist_ok=True)
    registry.download(version, dest)
    verify_version_dir(dest)
    return dest


def prune_cache(cache_root: Path, keep: Iterable[str], extra: int) -> list[str]:
    """Delete cached versions except ``keep`` and the ``extra`` most recently used others; returns the deleted.

    Only directories named like version ids are touched.
    """
    root = Path(cache_root)
    if not root.is_dir():
        return []
    kept = set(keep)
    others = []
    for path in root.iterdir():
        try:
            check_version_id(path.name)
        except RegistryError:
            continue
        if path.is_dir() and path.name not in kept:
            others.append(path)
    others.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    deleted = []
    for path in others[extra:]:
        shutil.rmtree(path, ignore_errors=True)
        deleted.append(path.name)
    return deleted
