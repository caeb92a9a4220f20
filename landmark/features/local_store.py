"""Compact, sharded, resumable store of local features keyed by image id.

Layout of a store directory (conventions of :mod:`landmark.features.store`, the global store):

- ``local.json``: ``dim``, ``location_dtype`` and whatever the writer recorded (e.g. the backend and its params);
- per shard ``shard-00000``: ``.desc.npy`` (M, D) float16 descriptors, ``.loc.npy`` (M, 2) int16 (rounded to
  the pixel) or float16 locations (x, y), ``.aux.npy`` (M, 2) float16 (scale, score), ``.offsets.npy``
  (n + 1,) int64 row offsets of the shard's n images, and ``.ids.txt`` (one image id per line).

Every file goes through temp file + ``os.replace``; the ids file is written last, so a shard without one is
incomplete (a run killed mid-shard) and is ignored, and a rerun skips only the ids in complete shards.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from landmark.errors import InputError, LandmarkError
from landmark.features.local import LocalFeatures
from landmark.normalize import l2_normalize

_META = "local.json"
_PARTS = ("desc", "loc", "aux", "offsets")
LocationDtype = Literal["int16", "float16"]


class LocalStoreError(LandmarkError, ValueError):
    """A local feature store that is missing, inconsistent, or lacks the requested id."""


def _atomic_save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, array)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _complete_shards(root: Path) -> list[str]:
    """Names (``shard-00000``) of shards whose ids file exists, sorted."""
    return sorted(p.name[: -len(".ids.txt")] for p in root.glob("shard-*.ids.txt"))


def _read_ids(root: Path, shard: str) -> list[str]:
    text = (root / f"{shard}.ids.txt").read_text(encoding="utf-8")
    return text.split("\n") if text else []


class LocalFeatureWriter:
    """Appends per-image local features to a store, writing a shard every ``shard_size`` images.

    Ids already in complete shards are skipped by :meth:`add` (resume); :meth:`missing` filters a work list.
    """

    def __init__(
        self,
        root: str | Path,
        dim: int,
        *,
        location_dtype: LocationDtype = "int16",
        shard_size: int = 1024,
        meta: Mapping[str, object] | None = None,
    ) -> None:
        if location_dtype not in ("int16", "float16"):
            raise ValueError(f"location_dtype must be int16 or float16, got {location_dtype!r}")
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.dim, self.location_dtype, self.shard_size = dim, location_dtype, shard_size
        ensure_local_meta(self.root, dim, location_dtype, meta)
        shards = _complete_shards(self.root)
        self._stored = {i for s in shards for i in _read_ids(self.root, s)}
        self._next = int(shards[-1].split("-")[1]) + 1 if shards else 0
        self._ids: list[str] = []
        self._features: list[LocalFeatures] = []

    def missing(self, ids: Iterable[str]) -> list[str]:
        """The ids not stored yet (nor buffered), in the given order."""
        buffered = set(self._ids)
        return [i for i in ids if i not in self._stored and i not in buffered]

    def add(self, image_id: str, features: LocalFeatures) -> bool:
        """Buffer one image's features; False (and nothing done) when ``image_id`` is already stored.

        Raises:
            ValueError: an empty id or one with a line break, a descriptor dimension other than ``dim``, or
                int16 locations outside [-32768, 32767].
        """
        if not image_id or "\n" in image_id or "\r" in image_id:
            raise InputError(f"image id must be non-empty without line breaks, got {image_id!r}")
        if image_id in self._stored or image_id in self._ids:
            return False
        if features.descriptors.shape[1] != self.dim:
            raise InputError(
                f"expected {self.dim}-d descriptors for {image_id!r}, got {features.descriptors.shape[1]}"
            )
        if self.location_dtype == "int16" and len(features):
            lo, hi = float(features.locations.min()), float(features.locations.max())
            if lo < -32768 or hi > 32767:
                raise ValueError(f"locations of {image_id!r} span [{lo}, {hi}], outside the int16 range")
        self._ids.append(image_id)
        self._features.append(features)
        if len(self._ids) >= self.shard_size:
            self.flush()
        return True

    def flush(self) -> None:
        """Write the buffered images as one complete shard (ids file last)."""
        if not self._ids:
            return
        write_local_shard(self.root, self._next, self._ids, self._features, self.location_dtype)
        self._stored.update(self._ids)
        self._next += 1
        self._ids, self._features = [], []

    def __enter__(self) -> LocalFeatureWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        # What was extracted before an error is complete and valid: keep it.
        self.flush()


def ensure_local_meta(
    root: Path, dim: int, location_dtype: LocationDtype, meta: Mapping[str, object] | None
) -> None:
    """Write the store's ``local.json`` (atomically) or check that the existing one matches.

    Raises:
        LocalStoreError: the store was written with other settings (naming them).
    """
    info = json.loads(json.dumps({"dim": dim, "location_dtype": location_dtype, **(meta or {})}))
    meta_path = root / _META
    if not meta_path.exists():
        _atomic_text(meta_path, json.dumps(info, indent=2, sort_keys=True))
        return
    existing = json.loads(meta_path.read_text())
    if existing != info:
        changed = sorted(k for k in set(existing) | set(info) if existing.get(k) != info.get(k))
        raise LocalStoreError(
            f"{root} holds local features written with a different {', '.join(changed)}; cannot "
            "append to it. Remove the directory or choose another output."
        )


def write_local_shard(
    root: Path, number: int, ids: Sequence[str], feats: Sequence[LocalFeatures], location_dtype: LocationDtype
) -> None:
    """Write one complete shard ``number`` of the store at ``root`` (every part atomically, the ids file last).

    Writing the same shard again (a chunk retried after its worker died) replaces it with the same content.
    """
    if len(ids) != len(feats) or not ids:
        raise ValueError(f"need one features entry per id and at least one, got {len(ids)} and {len(feats)}")
    name = f"shard-{number:05d}"
    counts = np.array([len(f) for f in feats], np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    desc = np.concatenate([f.descriptors for f in feats]).astype(np.float16)
    loc = np.concatenate([f.locations for f in feats])
    loc = np.rint(loc).astype(np.int16) if location_dtype == "int16" else loc.astype(np.float16)
    aux = np.concatenate([np.stack([f.scales, f.scores], axis=1) for f in feats]).astype(np.float16)
    for part, array in zip(_PARTS, (desc, loc, aux, offsets), strict=True):
        _atomic_save(root / f"{name}.{part}.npy", np.ascontiguousarray(array))
    _atomic_text(root / f"{name}.ids.txt", "\n".join(ids))


def next_local_shard_number(root: str | Path) -> int:
    """One past the highest complete shard number of the store at ``root`` (0 for none)."""
    shards = _complete_shards(Path(root))
    return int(shards[-1].split("-")[1]) + 1 if shards else 0


def read_local_meta(root: str | Path) -> dict[str, object]:
    """The store's metadata (``dim``, ``location_dtype``, and what the writer recorded)."""
    path = Path(root) / _META
    if not path.exists():
        raise LocalStoreError(f"no local feature store at {root} (missing {_META})")
    meta: dict[str, object] = json.loads(path.read_text())
    return meta


def stored_local_ids(root: str | Path) -> list[str]:
    """All ids in complete shards, in storage order."""
    root = Path(root)
    return [i for s in _complete_shards(root) for i in _read_ids(root, s)]


class LocalFeatureReader:
    """Random access to a store by image id; shards are memory-mapped, so a load reads only its rows."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.meta = read_local_meta(self.root)
        self._where: dict[str, tuple[int, int]] = {}
        self._shards: list[dict[str, np.ndarray]] = []
        for k, shard in enumerate(_complete_shards(self.root)):
            arrays = {p: np.load(self.root / f"{shard}.{p}.npy", mmap_mode="r") for p in _PARTS}
            ids = _read_ids(self.root, shard)
            if len(arrays["offsets"]) != len(ids) + 1 or arrays["offsets"][-1] != len(arrays["desc"]):
                raise LocalStoreError(f"{self.root}/{shard}: ids, offsets and rows disagree")
            self._shards.append(arrays)
            self._where.update((image_id, (k, j)) for j, image_id in enumerate(ids))

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._where

    def __len__(self) -> int:
        return len(self._where)

    def ids(self) -> list[str]:
        """Stored ids (storage order)."""
        return list(self._where)

    def load(self, image_id: str) -> LocalFeatures:
        """Features of ``image_id`` as float32 (descriptors re-normalised after the float16 round trip).

        Raises:
            LocalStoreError: the id is not in the store.
        """
        if image_id not in self._where:
            raise LocalStoreError(f"{self.root}: no local features for image id {image_id!r}")
        k, j = self._where[image_id]
        arrays = self._shards[k]
        lo, hi = int(arrays["offsets"][j]), int(arrays["offsets"][j + 1])
        aux = np.asarray(arrays["aux"][lo:hi], np.float32)
        return LocalFeatures(
            locations=np.asarray(arrays["loc"][lo:hi], np.float32),
            scales=aux[:, 0],
            scores=aux[:, 1],
            descriptors=l2_normalize(np.asarray(arrays["desc"][lo:hi], np.float32)),
        )

    def bytes_per_image(self) -> float:
        """Mean bytes on disk per stored image (all shard files, ids included); 0 for an empty store."""
        if not self._where:
            return 0.0
        total = sum(
            (self.root / f"{s}.{p}").stat().st_size
            for s in _complete_shards(self.root)
            for p in (*(f"{q}.npy" for q in _PARTS), "ids.txt")
        )
        return total / len(self._where)


def load_local(root: str | Path, image_id: str) -> LocalFeatures:
    """Features of one image (opens the store; use :class:`LocalFeatureReader` for many loads)."""
    return LocalFeatureReader(root).load(image_id)


def local_bytes_per_image(root: str | Path) -> float:
    """Mean bytes on disk per stored image."""
    return LocalFeatureReader(root).bytes_per_image()
