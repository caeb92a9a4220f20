"""Memory-mapped, sharded feature store keyed by image id.

A store is a directory of shards ``shard-00000.npy`` (float32/float16, shape (n, dim)) each with a sibling
``shard-00000.ids.txt`` (one image id per line, in row order). A shard is complete when its ids file exists:
the ids are written after the array, both via temp file + rename, so a run killed mid-shard leaves no partial
shard behind and a rerun extracts only the ids that are not yet stored.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from landmark.errors import LandmarkError

_META = "store.json"


class FeatureStoreError(LandmarkError, ValueError):
    """A feature store that is missing, inconsistent, or does not hold the requested ids."""


def _atomic_write_bytes(path: Path, write: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        write(fh)  # type: ignore[operator]
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class FeatureWriter:
    """Appends (ids, vectors) to a store, flushing a shard every ``shard_size`` rows."""

    def __init__(
        self,
        root: Path,
        dim: int,
        *,
        dtype: str = "float32",
        shard_size: int = 4096,
        meta: Mapping[str, object] | None = None,
    ) -> None:
        if dtype not in ("float32", "float16"):
            raise ValueError(f"dtype must be float32 or float16, got {dtype!r}")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.dim, self.dtype, self.shard_size = dim, np.dtype(dtype), shard_size
        ensure_meta(self.root, dim, dtype, meta)
        self._ids: list[str] = []
        self._rows: list[np.ndarray] = []
        self._next = len(_complete_shards(self.root))

    def add(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Buffer rows; ``vectors`` has shape (len(ids), dim)."""
        vectors = np.asarray(vectors)
        if vectors.shape != (len(ids), self.dim):
            raise ValueError(f"expected vectors of shape ({len(ids)}, {self.dim}), got {vectors.shape}")
        self._ids.extend(ids)
        self._rows.append(vectors.astype(self.dtype, copy=False))
        if len(self._ids) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows as one complete shard."""
        if not self._ids:
            return
        write_shard(self.root, self._next, self._ids, np.concatenate(self._rows))
        self._next += 1
        self._ids, self._rows = [], []

    def __enter__(self) -> FeatureWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        # Keep what was computed even when extraction stops with an error: it is complete and valid.
        self.flush()


def ensure_meta(root: Path, dim: int, dtype: str, meta: Mapping[str, object] | None) -> None:
    """Create the store directory and its ``store.json``, or check that the existing one matches.

    Raises:
        FeatureStoreError: the store holds features written with other settings (naming them).
    """
    root.mkdir(parents=True, exist_ok=True)
    info = json.loads(json.dumps({"dim": dim, "dtype": dtype, **(meta or {})}))
    existing = read_meta(root) if (root / _META).exists() else None
    if existing is not None and existing != info:
        changed = sorted(k for k in set(existing) | set(info) if existing.get(k) != info.get(k))
        raise FeatureStoreError(
            f"{root} holds features written with a different {', '.join(changed)}; cannot append "
            "to it (the stored vectors would not be comparable). Remove the directory or choose another output."
        )
    if existing is None:
        _atomic_write_bytes(
            root / _META, lambda fh: fh.write(json.dumps(info, indent=2, sort_keys=True).encode())
        )


def write_shard(root: Path, number: int, ids: Sequence[str], vectors: np.ndarray) -> None:
    """Write ``vectors`` (len(ids), dim) as the complete shard ``number`` of the store at ``root``: the array,
    then the ids file (each atomically), so a reader never sees a partial shard. Writing the same shard again
    (a chunk retried after its worker died) replaces it with the same content."""
    if len(ids) != vectors.shape[0]:
        raise ValueError(f"{len(ids)} ids for {vectors.shape[0]} rows")
    name = f"shard-{number:05d}"
    array = np.ascontiguousarray(vectors)
    _atomic_write_bytes(root / f"{name}.npy", lambda fh: np.save(fh, array))
    _atomic_write_bytes(root / f"{name}.ids.txt", lambda fh: fh.write("\n".join(ids).encode()))


def next_shard_number(root: Path) -> int:
    """One past the highest complete shard number of the store at ``root`` (0 for none): chunks planned from
    here write shards that never collide with stored ones."""
    shards = _complete_shards(Path(root))
    return int(shards[-1].name.split("-")[1].split(".")[0]) + 1 if shards else 0


def _complete_shards(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("shard-*.npy") if p.with_suffix(".ids.txt").exists())


def read_meta(root: Path) -> dict[str, object]:
    """The store's metadata (``dim``, ``dtype`` and whatever the writer recorded)."""
    path = Path(root) / _META
    if not path.exists():
        raise FeatureStoreError(f"no feature store at {root} (missing {_META}); run `landmark extract` first")
    meta: dict[str, object] = json.loads(path.read_text())
    return meta


def stored_ids(root: Path) -> list[str]:
    """All ids in complete shards, in storage order."""
    ids: list[str] = []
    for shard in _complete_shards(Path(root)):
        text = shard.with_suffix(".ids.txt").read_text()
        ids.extend(text.split("\n") if text else [])
    return ids


def load_features(root: Path, ids: Iterable[str] | None = None) -> tuple[list[str], np.ndarray]:
    """Load features as float32, either all (storage order) or for ``ids`` (in that order).

    Shards are memory-mapped, so only the requested rows are read.

    Raises:
        FeatureStoreError: when a requested id is not in the store.
    """
    root = Path(root)
    meta = read_meta(root)
    shards = _complete_shards(root)
    arrays = [np.load(s, mmap_mode="r") for s in shards]
    all_ids = stored_ids(root)
    offsets = np.cumsum([0] + [a.shape[0] for a in arrays])
    if len(all_ids) != offsets[-1]:
        raise FeatureStoreError(
            f"{root}: ids files and arrays disagree ({len(all_ids)} ids, {offsets[-1]} rows)"
        )
    dim = int(meta["dim"])  # type: ignore[call-overload]
    if ids is None:
        wanted = all_ids
        rows = np.arange(len(all_ids))
    else:
        wanted = list(ids)
        position = {image_id: i for i, image_id in enumerate(all_ids)}
        missing = [i for i in wanted if i not in position]
        if missing:
            raise FeatureStoreError(f"{root}: {len(missing)} ids have no features, e.g. {missing[:3]}")
        rows = np.array([position[i] for i in wanted], dtype=np.int64)
    out = np.empty((len(rows), dim), dtype=np.float32)
    shard_of = np.searchsorted(offsets, rows, side="right") - 1
    for s in np.unique(shard_of):
        sel = np.flatnonzero(shard_of == s)
        out[sel] = arrays[s][rows[sel] - offsets[s]]
    return wanted, out


def iter_feature_chunks(
    root: Path, ids: Sequence[str], chunk_size: int
) -> Iterator[tuple[list[str], np.ndarray]]:
    """Yield ``(ids, vectors (n, dim) float32)`` for consecutive slices of ``ids``, streaming the store: shards
    are opened (memory-mapped) and the id positions read once, and only one slice is in memory at a time.

    Raises:
        FeatureStoreError: a requested id is not in the store.
        ValueError: ``chunk_size`` < 1.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    root = Path(root)
    dim = int(read_meta(root)["dim"])  # type: ignore[call-overload]
    shards = _complete_shards(root)
    arrays = [np.load(s, mmap_mode="r") for s in shards]
    where: dict[str, tuple[int, int]] = {}
    for k, shard in enumerate(shards):
        text = shard.with_suffix(".ids.txt").read_text()
        where.update((image_id, (k, j)) for j, image_id in enumerate(text.split("\n") if text else []))
    missing = [i for i in ids if i not in where]
    if missing:
        raise FeatureStoreError(f"{root}: {len(missing)} ids have no features, e.g. {missing[:3]}")
    for start in range(0, len(ids), chunk_size):
        part = list(ids[start : start + chunk_size])
        out = np.empty((len(part), dim), np.float32)
        located = np.array([where[i] for i in part], np.int64)
        for k in np.unique(located[:, 0]):
            sel = np.flatnonzero(located[:, 0] == k)
            rows = located[sel, 1]
            out[sel] = arrays[k][rows]  # fancy indexing on a memmap reads only these rows
        yield part, out
