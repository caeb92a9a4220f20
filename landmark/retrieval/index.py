"""Nearest-neighbour search over L2-normalised descriptors (FAISS, inner product = cosine similarity).

Index kinds come from a small registry (:data:`INDEX_KINDS`): ``flat`` is exact inner-product search,
``ivfpq`` an inverted file with product quantization (trained on a seeded sample) for large indexes. When faiss
sees a GPU (the ``[gpu]`` extra: faiss-cuda) and ``gpu`` is ``"auto"``, IVF training (its k-means), adding (the
coarse assignment and PQ encoding) and searching run on it; CPU-only installs (faiss-cpu) skip that path.

A saved index is a directory, built shard by shard from a feature store so the whole index never has to be in
memory at build time::

    meta.json           format, kind, dim, ntotal, shard list, model_version, the feature store's meta, config
    ids.txt             one image id per line; line i = global position i
    shard-00000.faiss   FAISS index over positions [0, n0), shard-00001.faiss over [n0, n0 + n1), ...

It is written into a temporary sibling directory and renamed into place (the previous index is moved aside
first and deleted only after the new one is in place), so a crash never leaves a half-written index where a
good one was; an interrupted swap is repaired by the next write or load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from landmark.config import IndexConfig, config_to_dict
from landmark.data.atomic import atomic_directory, repair_interrupted_swap
from landmark.errors import ConfigError, InputError

logger = logging.getLogger(__name__)

INDEX_FORMAT = "landmark-faiss-index/1"
META_FILE = "meta.json"
IDS_FILE = "ids.txt"


def _as_float32_matrix(x: np.ndarray, name: str) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-d (n, dim) array, got shape {x.shape}")
    return x


def build_exact_index(vectors: np.ndarray) -> faiss.Index:
    """Exact inner-product index over ``vectors`` (n, dim)."""
    vectors = _as_float32_matrix(vectors, "vectors")
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    return index


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` neighbours of each query in one FAISS index.

    Args:
        index: a FAISS index of dimension dim.
        queries: (n_queries, dim).
        k: neighbours per query; clipped to the index size.

    Returns:
        (similarities, indices), each (n_queries, min(k, ntotal)), best first. Approximate indexes may return
        fewer hits: missing entries have index -1 and similarity -inf.
    """
    queries = _as_float32_matrix(queries, "queries")
    if queries.shape[1] != index.d:
        raise ValueError(f"queries have dim {queries.shape[1]}, the index has dim {index.d}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = min(k, index.ntotal)
    if k == 0:
        return np.zeros((queries.shape[0], 0), np.float32), np.zeros((queries.shape[0], 0), np.int64)
    sims, idx = index.search(queries, k)
    idx = idx.astype(np.int64)
    sims = np.where(idx < 0, -np.inf, sims).astype(np.float32)
    return sims, idx


def retrieval_ranks(db: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Full exact ranking of the database for each query.

    Args:
        db: (n_database, dim) descriptors.
        queries: (n_queries, dim) descriptors.

    Returns:
        (n_database, n_queries) database indices, best first (the revisitop layout: column q = query q).
    """
    _, idx = search(build_exact_index(db), queries, k=db.shape[0])
    return idx.T.copy()


# ---------------------------------------------------------------------------------------------------------------
# Index kinds


def _flat(dim: int, cfg: IndexConfig) -> faiss.Index:
    return faiss.IndexFlatIP(dim)


def _ivfpq(dim: int, cfg: IndexConfig) -> faiss.Index:
    if dim % cfg.pq_m:
        raise ConfigError(f"index.pq_m = {cfg.pq_m} must divide the descriptor dim {dim}")
    index = faiss.index_factory(
        dim, f"IVF{cfg.nlist},PQ{cfg.pq_m}x{cfg.pq_nbits}", faiss.METRIC_INNER_PRODUCT
    )
    ivf: Any = faiss.downcast_index(faiss.extract_index_ivf(index))  # the IndexIVFPQ itself
    ivf.nprobe = cfg.nprobe
    # polysemous training (PQ code reordering for Hamming pre-filtering) is never used by our searches and
    # costs minutes per training on CPU
    ivf.do_polysemous_training = False
    return index


INDEX_KINDS: dict[str, Callable[[int, IndexConfig], faiss.Index]] = {"flat": _flat, "ivfpq": _ivfpq}
"""Index kind -> factory ``(dim, cfg) -> empty FAISS index``."""


def resolve_kind(cfg: IndexConfig, n_vectors: int) -> str:
    """The index kind to build for ``n_vectors``: ``cfg.kind``, or for "auto" flat below ``ivfpq_min_vectors``."""
    if cfg.kind != "auto":
        return cfg.kind
    return "ivfpq" if n_vectors >= cfg.ivfpq_min_vectors else "flat"


def create_empty_index(kind: str, dim: int, cfg: IndexConfig) -> faiss.Index:
    """An empty (untrained for ivfpq) CPU index of one registered kind.

    Raises:
        ValueError: unknown kind, bad dim, or a PQ size that does not divide dim.
    """
    if kind not in INDEX_KINDS:
        raise ValueError(f"unknown index kind {kind!r}; expected one of {sorted(INDEX_KINDS)}")
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    return INDEX_KINDS[kind](dim, cfg)


def min_training_vectors(kind: str, cfg: IndexConfig) -> int:
    """Fewest training vectors a kind needs (k-means needs at least one point per centroid)."""
    return max(cfg.nlist, 2**cfg.pq_nbits) if kind == "ivfpq" else 0


def train_index(index: faiss.Index, kind: str, sample: np.ndarray, cfg: IndexConfig) -> None:
    """Train an index that needs it (ivfpq) on ``sample`` (n, dim), in place; flat needs nothing.

    Raises:
        ValueError: fewer sample vectors than the kind needs.
    """
    if index.is_trained:
        return
    sample = _as_float32_matrix(sample, "sample")
    need = min_training_vectors(kind, cfg)
    if sample.shape[0] < need:
        raise InputError(
            f"{kind} index needs at least {need} training vectors (nlist={cfg.nlist}, pq_nbits={cfg.pq_nbits}), "
            f"got {sample.shape[0]}; use index.kind=flat or smaller nlist/pq_nbits"
        )
    if cfg.gpu == "auto" and gpu_available() and kind == "ivfpq":
        # the coarse k-means (nlist centroids over the sample) is the slow part of training: run it on the GPU
        ivf: Any = faiss.extract_index_ivf(index)
        ivf.clustering_index = faiss.index_cpu_to_all_gpus(faiss.IndexFlatL2(index.d))
    index.train(sample)


def gpu_available() -> bool:
    """True when the installed faiss has GPU support and sees at least one GPU."""
    return hasattr(faiss, "index_cpu_to_all_gpus") and faiss.get_num_gpus() > 0


def to_search_device(index: faiss.Index, gpu: str) -> faiss.Index:
    """A GPU copy of ``index`` for searching when ``gpu == "auto"`` and a GPU is usable, else ``index``."""
    if gpu != "auto" or not gpu_available():
        return index
    options = faiss.GpuMultipleClonerOptions()
    options.useFloat16 = True  # PQ lookup tables in fp16 fit shared memory for more sub-quantizers
    return faiss.index_cpu_to_all_gpus(index, co=options)


# ---------------------------------------------------------------------------------------------------------------
# Sharded index


def merge_topk(
    sims: Sequence[np.ndarray], idx: Sequence[np.ndarray], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-shard top-k lists (global indices) into one top-k list per query.

    Ties in similarity are broken by the smaller global index, so results do not depend on the shard layout.

    Args:
        sims: per shard, similarities (n_queries, k_s); -inf marks a missing hit.
        idx: per shard, global indices (n_queries, k_s); -1 marks a missing hit.
        k: results to keep.

    Returns:
        (similarities (n_queries, k'), indices (n_queries, k')), best first, k' = min(k, sum of k_s).
    """
    if not sims or len(sims) != len(idx):
        raise ValueError(
            f"need one idx array per sims array and at least one, got {len(sims)} and {len(idx)}"
        )
    all_sims = np.concatenate([np.asarray(s, np.float32) for s in sims], axis=1)
    all_idx = np.concatenate([np.asarray(i, np.int64) for i in idx], axis=1)
    all_sims = np.where(all_idx < 0, -np.inf, all_sims)
    tie_key = np.where(all_idx < 0, np.iinfo(np.int64).max, all_idx)
    order = np.lexsort((tie_key, -all_sims), axis=-1)[:, :k]
    return np.take_along_axis(all_sims, order, 1), np.take_along_axis(all_idx, order, 1)


@dataclass
class ShardedIndex:
    """Index shards over consecutive global positions, with the image ids and the build metadata.

    Attributes:
        shards: FAISS indexes; shard s holds global positions [offsets[s], offsets[s] + shards[s].ntotal).
        ids: image id of each global position, shape (ntotal,).
        meta: what :func:`save_index` records (kind, model_version, feature-store meta, config, ...).
    """

    shards: list[faiss.Index]
    ids: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.shards or any(s.ntotal == 0 for s in self.shards):
            raise ValueError("an index needs at least one shard and no empty shard")
        dims = {s.d for s in self.shards}
        if len(dims) != 1:
            raise ValueError(f"shards have different dims {sorted(dims)}")
        if self.ntotal != len(self.ids):
            raise ValueError(f"index holds {self.ntotal} vectors but {len(self.ids)} ids")

    @property
    def dim(self) -> int:
        """Descriptor dimension."""
        return int(self.shards[0].d)

    @property
    def ntotal(self) -> int:
        """Number of indexed vectors over all shards."""
        return int(sum(s.ntotal for s in self.shards))

    @property
    def offsets(self) -> np.ndarray:
        """Global position of each shard's first vector, shape (n_shards,)."""
        return np.cumsum([0] + [s.ntotal for s in self.shards[:-1]]).astype(np.int64)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` global positions per query, merged over the shards.

        Args:
            queries: (n_queries, dim), L2-normalised.
            k: results per query (clipped to ntotal).

        Returns:
            (similarities, positions), each (n_queries, min(k, ntotal)), best first; -1 / -inf pad missing hits.
        """
        k = min(k, self.ntotal)
        if k < 1:
            raise ValueError(f"k must be >= 1 and the index non-empty, got k={k}, ntotal={self.ntotal}")
        parts = [search(shard, queries, k) for shard in self.shards]
        sims = [p[0] for p in parts]
        idx = [np.where(p[1] >= 0, p[1] + int(off), -1) for p, off in zip(parts, self.offsets, strict=True)]
        return merge_topk(sims, idx, k)


_NOT_DESCRIPTIVE = ("batch_size", "workers")  # extraction settings that never change a descriptor


def model_version(feature_meta: Mapping[str, Any]) -> str:
    """The model version descriptors came from: the store's ``model_version`` if recorded, else a 12-hex hash
    of its metadata (model or model directory + weights hash, extraction settings that shape descriptors, dim,
    dtype) so incomparable descriptors never mix. Batch size and worker count are left out."""
    if "model_version" in feature_meta:
        return str(feature_meta["model_version"])
    meta = dict(feature_meta)
    extract = meta.get("extract")
    if isinstance(extract, Mapping):
        meta["extract"] = {k: v for k, v in extract.items() if k not in _NOT_DESCRIPTIVE}
    canonical = json.dumps(meta, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(canonical.encode()).hexdigest()[:12]


def check_compatible(index_meta: Mapping[str, Any], feature_meta: Mapping[str, Any]) -> None:
    """Raise ValueError when an index was built from another model's descriptors than ``feature_meta``'s."""
    built = index_meta.get("model_version")
    wanted = model_version(feature_meta)
    if built != wanted:
        raise InputError(
            f"the index was built from model version {built!r} but the queries come from {wanted!r}; "
            "rebuild the index (`landmark index`) from the current features"
        )


def build_in_memory(vectors: np.ndarray, cfg: IndexConfig, *, seed: int = 0) -> ShardedIndex:
    """A one-shard index over ``vectors`` (n, dim) of the kind ``cfg`` selects, ids "0".."n-1".

    IVF-PQ is trained on a seeded sample of at most ``cfg.train_size`` of the vectors.
    """
    vectors = _as_float32_matrix(vectors, "vectors")
    kind = resolve_kind(cfg, vectors.shape[0])
    index = create_empty_index(kind, vectors.shape[1], cfg)
    if kind == "ivfpq":
        train_index(index, kind, vectors[sample_rows(vectors.shape[0], cfg.train_size, seed)], cfg)
    index.add(vectors)
    ids = [str(i) for i in range(vectors.shape[0])]
    searchable = to_search_device(index, cfg.gpu)
    return ShardedIndex(
        [searchable], ids, {"kind": kind, "dim": vectors.shape[1], "ntotal": vectors.shape[0]}
    )


def sample_rows(n: int, size: int, seed: int) -> np.ndarray:
    """Sorted, seeded random sample of ``min(size, n)`` distinct row numbers out of ``n``."""
    if n < 0 or size < 0:
        raise ValueError(f"n and size must be >= 0, got n={n}, size={size}")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(size, n), replace=False))


# ---------------------------------------------------------------------------------------------------------------
# Writing and reading


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def to_build_device(index: faiss.Index, gpu: str) -> faiss.Index:
    """A GPU copy of an empty (trained) index to add vectors on when ``gpu == "auto"`` and a GPU is usable (the
    coarse assignment and PQ encoding of millions of vectors), else ``index`` itself."""
    if gpu != "auto" or not gpu_available():
        return index
    return faiss.index_cpu_to_all_gpus(index)


def to_host(index: faiss.Index) -> faiss.Index:
    """The CPU index of a GPU one (to write it); a CPU index as it is."""
    return faiss.index_gpu_to_cpu(index) if gpu_available() and "Gpu" in type(index).__name__ else index


@dataclass
class _ShardWriter:
    """Fills shards of at most ``shard_size`` vectors (on the GPU when ``gpu`` is "auto" and one is usable) and
    writes each to ``root`` when full: only one shard is held in memory."""

    root: Path
    template: faiss.Index
    shard_size: int
    gpu: str = "off"
    shards: list[dict[str, Any]] = field(default_factory=list)
    current: faiss.Index | None = None

    def add(self, vectors: np.ndarray) -> None:
        start = 0
        while start < vectors.shape[0]:
            if self.current is None:
                self.current = to_build_device(faiss.clone_index(self.template), self.gpu)
            room = self.shard_size - self.current.ntotal
            take = vectors[start : start + room]
            self.current.add(take)
            start += take.shape[0]
            if self.current.ntotal >= self.shard_size:
                self.flush()

    def flush(self) -> None:
        if self.current is None or self.current.ntotal == 0:
            return
        name = f"shard-{len(self.shards):05d}.faiss"
        faiss.write_index(to_host(self.current), str(self.root / name))
        _fsync_file(self.root / name)
        self.shards.append({"file": name, "ntotal": int(self.current.ntotal)})
        self.current = None


def write_index(
    out_dir: str | Path,
    chunks: Iterable[tuple[Sequence[str], np.ndarray]],
    *,
    dim: int,
    kind: str,
    cfg: IndexConfig,
    train_sample: np.ndarray | None = None,
    meta: Mapping[str, Any] | None = None,
    extra: Callable[[Path], Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Build an index shard by shard from streamed ``(ids, vectors (n, dim))`` chunks and save it atomically.

    Only one shard and one chunk are in memory at a time.

    Args:
        out_dir: index directory to create or replace.
        chunks: the vectors to index, in order, with their image ids.
        dim: descriptor dimension.
        kind: a key of :data:`INDEX_KINDS`.
        cfg: the ``index`` config (IVF-PQ sizes, shard size).
        train_sample: (m, dim) training vectors, required for kinds that need training.
        meta: extra metadata to record (e.g. ``feature_meta``, ``model_version``).
        extra: writes further files into the (temporary) index directory it is given, after the shards and ids,
            so they appear atomically with the index (e.g. the labels serving needs); what it returns is
            recorded in ``meta.json``.

    Returns:
        The metadata written to ``meta.json``.
    """
    template = create_empty_index(kind, dim, cfg)
    if not template.is_trained:
        if train_sample is None:
            raise ValueError(f"a {kind} index needs train_sample")
        train_index(template, kind, train_sample, cfg)
    with atomic_directory(out_dir) as tmp:
        writer = _ShardWriter(tmp, template, cfg.shard_size, cfg.gpu)
        total = 0
        with open(tmp / IDS_FILE, "w", encoding="utf-8") as ids_fh:
            for ids, vectors in chunks:
                vectors = _as_float32_matrix(vectors, "vectors")
                if vectors.shape != (len(ids), dim):
                    raise ValueError(
                        f"chunk of {len(ids)} ids has vectors of shape {vectors.shape}, want dim {dim}"
                    )
                writer.add(vectors)
                ids_fh.writelines(f"{i}\n" for i in ids)
                total += len(ids)
            ids_fh.flush()
            os.fsync(ids_fh.fileno())
        writer.flush()
        if total == 0:
            raise InputError("no vectors to index")
        info: dict[str, Any] = {
            "format": INDEX_FORMAT,
            "kind": kind,
            "dim": dim,
            "ntotal": total,
            "shards": writer.shards,
            "config": config_to_dict(cfg),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            **dict(meta or {}),
        }
        if extra is not None:
            info.update(extra(tmp))
        (tmp / META_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        _fsync_file(tmp / META_FILE)
    return info


def read_index_meta(path: str | Path) -> dict[str, Any]:
    """The ``meta.json`` of a saved index.

    Raises:
        FileNotFoundError: no index at ``path``.
        ValueError: not an index of this format.
    """
    path = Path(path)
    repair_interrupted_swap(path)
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"no index at {path} (missing {META_FILE}); run `landmark index` first")
    meta: dict[str, Any] = json.loads(meta_path.read_text())
    if meta.get("format") != INDEX_FORMAT:
        raise InputError(f"{meta_path}: format {meta.get('format')!r} is not {INDEX_FORMAT!r}")
    return meta


def load_index(path: str | Path, *, nprobe: int | None = None, gpu: str = "auto") -> ShardedIndex:
    """Load a saved index (shards, ids, metadata) for searching.

    Args:
        path: the index directory.
        nprobe: IVF cells to visit (default: the value it was built with).
        gpu: "auto" to search on GPU when available, "off" for CPU.

    Raises:
        FileNotFoundError, ValueError: missing or inconsistent files.
    """
    path = Path(path)
    meta = read_index_meta(path)
    ids = (path / IDS_FILE).read_text(encoding="utf-8").splitlines()
    shards: list[faiss.Index] = []
    for entry in meta["shards"]:
        shard = faiss.read_index(str(path / entry["file"]))
        if shard.ntotal != entry["ntotal"] or shard.d != meta["dim"]:
            raise InputError(
                f"{path / entry['file']}: holds {shard.ntotal} x {shard.d}, meta says "
                f"{entry['ntotal']} x {meta['dim']}"
            )
        if nprobe is not None and meta["kind"] == "ivfpq":
            faiss.extract_index_ivf(shard).nprobe = nprobe
        shards.append(to_search_device(shard, gpu))
    if len(ids) != meta["ntotal"]:
        raise InputError(f"{path}: {len(ids)} ids for {meta['ntotal']} vectors")
    return ShardedIndex(shards, ids, meta)
