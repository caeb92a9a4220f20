"""Spatial verification of image pairs, the one verifier of cleaning, spatial re-ranking and recognition.

1. Putative matches (:func:`match_many`, :func:`match_descriptors`): nearest neighbours of L2-normalised
   descriptors ranked by an int8 matrix product (:func:`quantize`, :func:`products`; exact integer sums), the
   cosines of each row's nearest and second nearest then computed exactly in float32; kept by a distance cap,
   Lowe's ratio test and optionally the mutual check (tested first: the rest only runs on mutual rows). An image
   is quantised once per chunk, however many of its pairs the chunk holds.
2. Robust fit (:func:`fit_inliers`): OpenCV USAC (``cv2.UsacParams``) of an affine map or a homography from
   image-1 to image-2 locations, scored by MSAC (default) or MAGSAC++, with MAGSAC++'s local optimisation and
   final polish (the settings of ``cv2.USAC_MAGSAC``).
3. Pairs are keyed: by image ids (:class:`StoreVerifier`) or, for bare features, by a digest of their content
   (:func:`features_key`). A pair is always verified in one orientation, the smaller key as image 1, and its
   RANSAC seed is a hash of the base seed and the two keys (:func:`pair_seed`), so a pair's inliers never depend
   on its orientation, its position in a list, the other pairs or the number of workers. Results are handed
   back in the caller's orientation.
4. Lists of pairs run in chunks (pairs sharing their image 1 in the same chunk, matched in one call) through
   :func:`landmark.platform.parallel.parallel_map`; a pair with fewer putative matches than ``reject_below`` is not
   fitted (it cannot reach that many inliers) and scores 0.

:class:`StoreVerifier` serves local feature stores to all three users: ``verifier(query_id, candidate_ids)``
(:class:`landmark.retrieval.recognize.Verifier`, re-ranking and recognition) and ``verifier.pair_counts(pairs)`` (cleaning).
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch  # at import time, so forked pool workers inherit it instead of importing it (seconds) per pool

from landmark.config import ParallelConfig, VerifyConfig
from landmark.features.local import LocalFeatures
from landmark.features.local_store import LocalFeatureReader, LocalStoreError
from landmark.platform.parallel import Backend, parallel_map
from landmark.platform.threads import torch_threads

_MAX_PAIRS_PER_TASK = 64  # amortises pickling and task overhead; fewer when that would idle a worker

_NO_MATCHES = np.zeros((0, 2), np.int64)


@dataclass(frozen=True, eq=False)
class PairVerification:
    """Verification of one pair.

    Attributes:
        matches: (K, 2) int64 putative matches (row in image 1, row in image 2), sorted by the first column.
        inliers: (K,) bool, the matches consistent with the fitted model.
        model: (3, 3) float64 image-1 -> image-2 transform (affine: last row 0, 0, 1), or None when no fit.
    """

    matches: np.ndarray
    inliers: np.ndarray
    model: np.ndarray | None

    @property
    def num_inliers(self) -> int:
        """The pair's score."""
        return int(self.inliers.sum())

    def swapped(self) -> PairVerification:
        """The same verification seen from image 2: columns swapped, re-sorted, the model inverted."""
        matches = self.matches[:, ::-1]
        order = np.argsort(matches[:, 0], kind="stable")
        model = None
        if self.model is not None:
            model = np.linalg.inv(self.model) if abs(np.linalg.det(self.model)) > 1e-12 else None
        return PairVerification(np.ascontiguousarray(matches[order]), self.inliers[order], model)


class FeatureSource(Protocol):
    """Where a verifier reads local features by key (a store, several stores, or features in memory)."""

    def load(self, image_id: str) -> LocalFeatures:
        """Features of one image (raises LocalStoreError for an unknown id)."""
        ...


# ---------------------------------------------------------------------------------------------------------------
# Matching


def _check_descriptors(name: str, x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (N, D), got {x.shape}")
    return x


_EXCLUDED = np.iinfo(np.int32).min


def _block_matches(
    block: np.ndarray, column_max: np.ndarray | None, desc1: np.ndarray, desc2: np.ndarray, ratio: float,
    max_distance: float,
) -> np.ndarray:  # fmt: skip
    """Matches of one pair from its (N1, N2) int32 product block (modified; see :func:`products`): nearest and second
    nearest ranked by the block, their cosines computed exactly from the float32 descriptors ``desc1`` (N1, D)
    and ``desc2`` (N2, D); ``column_max``: the block's column maxima for the mutual check (None: no check)."""
    n2 = block.shape[1]
    nearest = block.argmax(axis=1)  # ties: the lowest index, so the mutual check is well defined
    rows = np.arange(len(block))  # the cheap test first: the rest only for mutual nearest neighbours
    if column_max is not None:
        rows = np.flatnonzero(block[rows, nearest] >= column_max[nearest])  # ties count as mutual
    best = nearest[rows]
    ours = np.take(desc1, rows, axis=0)  # np.take: ~3x faster than fancy indexing for row gathers
    best_sim = np.einsum("ij,ij->i", ours, np.take(desc2, best, axis=0))
    dist = np.sqrt(np.maximum(2.0 - 2.0 * best_sim, 0.0))
    keep = dist <= max_distance + 1e-6
    if ratio < 1.0 and n2 >= 2:
        candidates = np.take(block, rows, axis=0) if column_max is not None else block  # the rows in play
        candidates[np.arange(len(rows)), best] = _EXCLUDED  # their best is then the second nearest
        second = candidates.argmax(axis=1)
        second_sim = np.einsum("ij,ij->i", ours, np.take(desc2, second, axis=0))
        keep &= dist < ratio * np.sqrt(np.maximum(2.0 - 2.0 * second_sim, 0.0))
    return np.stack([rows[keep], best[keep]], axis=1).astype(np.int64)


@dataclass(frozen=True, eq=False)
class QuantizedDescriptors:
    """One image's descriptors, float32 and as int8 codes for ranking (see :func:`quantize`).

    Attributes:
        values: (N, D) float32, C-contiguous.
        codes: (N, D) int8, C-contiguous (:func:`products` multiplies one image's codes by another's transposed).
    """

    values: np.ndarray
    codes: torch.Tensor

    def __len__(self) -> int:
        return len(self.values)

    @property
    def dim(self) -> int:
        """Descriptor dimension D."""
        return int(self.values.shape[1])


def quantize(descriptors: np.ndarray, name: str = "descriptors") -> QuantizedDescriptors:
    """(N, D) descriptors of one image with their int8 codes: one scale for the whole set (its largest magnitude
    -> 127), so a block of products ranks consistently along rows and columns alike. Descriptors are finite and
    not all (near) zero (OpenCV maps a set whose largest magnitude is under 2.2e-16 to zeros).

    Raises:
        ValueError: not 2-d.
    """
    import cv2

    x = _check_descriptors(name, descriptors)
    if not x.size:
        return QuantizedDescriptors(x, torch.zeros(x.shape, dtype=torch.int8))
    # one pass in OpenCV (x * 127 / max|x|, rounded half to even, saturated; all zeros stay zeros): the same codes
    # as numpy's max, multiply, rint and cast in ~2.5x less time, which was ~10% of a pair's verification
    codes = np.empty(x.shape, np.int8)
    cv2.normalize(x, codes, alpha=127.0, norm_type=cv2.NORM_INF, dtype=cv2.CV_8S)  # fills ``codes`` in place
    return QuantizedDescriptors(x, torch.from_numpy(codes))


def products(
    a: QuantizedDescriptors, b: QuantizedDescriptors, scratch: torch.Tensor | None = None
) -> np.ndarray:
    """(N1, N2) int32 products of the int8 codes of ``a`` and ``b``, proportional to their cosines up to the
    quantisation (~2e-3 std for unit RootSIFT rows). With ``scratch`` (a 1-d int32 tensor of at least N1 * N2
    elements) the result is a view of it (D > 1), valid until ``scratch`` is reused: a fresh 4 MB block per pair costs
    ~0.1 ms in page faults alone, ~10% of a pair's verification.

    Ranking nearest neighbours by these exact integer sums (no dependence on threads or blocking) takes ~10x
    fewer CPU cycles than the float32 product, which was ~75% of verification time; the matcher then computes
    the cosines of the two candidates of each row exactly. One product per pair, not one for an image's partners
    side by side: row reductions over a contiguous block are ~3x faster than over a column slice of a wider one.
    """
    if (
        a.dim == 1
    ):  # torch's CPU int8 kernel returns garbage for an inner dimension of 1: a fresh exact product
        return a.codes.numpy().astype(np.int32) @ b.codes.numpy().astype(np.int32).T
    if scratch is None:
        return torch._int_mm(a.codes, b.codes.T).numpy()  # the public matmul has no int8 path
    out = scratch[: len(a) * len(b)].view(len(a), len(b))
    torch._int_mm(a.codes, b.codes.T, out=out)
    return out.numpy()


_SCRATCH = threading.local()  # per thread: a Dask worker runs several chunks at once in threads
_SCRATCH_MAX = 16 << 20  # elements (64 MB) a thread keeps; a larger block is allocated for its one product


def _scratch(size: int) -> torch.Tensor:
    """This thread's int32 scratch of at least ``size`` elements (grown up to :data:`_SCRATCH_MAX`, above that a
    one-off buffer, so a thread pool never holds more than 64 MB a thread)."""
    if size > _SCRATCH_MAX:
        return torch.empty(size, dtype=torch.int32)
    buffer = getattr(_SCRATCH, "buffer", None)
    if buffer is None or buffer.numel() < size:
        buffer = _SCRATCH.buffer = torch.empty(size, dtype=torch.int32)
    return buffer


def match_many(
    desc1: np.ndarray | QuantizedDescriptors,
    others: Sequence[np.ndarray | QuantizedDescriptors],
    *,
    ratio: float = 1.0,
    max_distance: float = 2.0,
    mutual: bool = False,
) -> list[np.ndarray]:
    """Putative matches of one set of L2-normalised descriptors against several others (quantised once each).

    Distances are Euclidean, ``sqrt(2 - 2 cos)``. Candidates are ranked by int8 products (:func:`products`); the
    cosines of each row's nearest and second nearest are exact. A match (i, j) has
    j = nearest neighbour of i and passes ``d(i, j) <= max_distance``, the ratio test ``d(i, j) < ratio *
    d(i, second nearest)`` (when ratio < 1 and the partner has at least two descriptors) and, with ``mutual``, i
    is a nearest neighbour of j (ties allowed). Nearest-neighbour ties go to the lowest index. Each partner's
    result equals matching that pair alone.

    Args:
        desc1: (N1, D) unit rows, or their :func:`quantize` (a caller matching an image many times quantises once).
        others: partners, each (N2_k, D) unit rows or quantised.
        ratio: Lowe's ratio in (0, 1]; 1 disables the test.
        max_distance: distance cap in (0, 2]; 2 disables it.
        mutual: keep only mutual nearest neighbours.

    Returns:
        Per partner, (K, 2) int64 (row in desc1, row in the partner), sorted by the first column.

    Raises:
        ValueError: bad shapes, differing dimensions, or parameters out of range.
    """
    a = desc1 if isinstance(desc1, QuantizedDescriptors) else quantize(desc1, "desc1")
    parts = [
        b if isinstance(b, QuantizedDescriptors) else quantize(b, f"desc2[{k}]") for k, b in enumerate(others)
    ]
    for b in parts:
        if a.dim != b.dim:
            raise ValueError(f"descriptor dimensions differ: {a.dim} vs {b.dim}")
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    if not 0.0 < max_distance <= 2.0:
        raise ValueError(f"max_distance must be in (0, 2], got {max_distance}")
    out = []
    for b in parts:
        if not len(a) or not len(b):
            out.append(_NO_MATCHES)
            continue
        block = products(a, b, _scratch(len(a) * len(b)))
        # column max, not argmax: a strided argmax over 1000 rows costs ~10x more
        column_max = block.max(axis=0) if mutual else None
        out.append(_block_matches(block, column_max, a.values, b.values, ratio, max_distance))
    return out


def match_descriptors(
    desc1: np.ndarray,
    desc2: np.ndarray,
    *,
    ratio: float = 1.0,
    max_distance: float = 2.0,
    mutual: bool = False,
) -> np.ndarray:
    """Putative matches of one pair (:func:`match_many` with one partner): (K, 2) int64, sorted by column 0."""
    return match_many(desc1, [desc2], ratio=ratio, max_distance=max_distance, mutual=mutual)[0]


# ---------------------------------------------------------------------------------------------------------------
# Seeds, keys and the robust fit


def pair_seed(seed: int, key1: str, key2: str) -> int:
    """The RANSAC seed of the unordered pair {key1, key2}: a hash of the base seed and both keys, in [0, 2**31)."""
    a, b = sorted((key1, key2))
    digest = hashlib.blake2b(f"{seed}\0{a}\0{b}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


def features_key(features: LocalFeatures) -> str:
    """A key for features that have no image id: a digest of their content (see the comment)."""
    desc = np.asarray(features.descriptors, np.float32)
    h = hashlib.blake2b(repr(desc.shape).encode(), digest_size=12)
    # every keypoint's geometry and a sample of 32 descriptor rows: the same keypoints described differently
    # (another backend or normalisation) differ in the sampled rows; hashing every descriptor would cost as much
    # as matching them
    sample = desc[:: max(1, len(desc) // 32)]
    for part in (features.locations, features.scales, features.scores, sample):
        h.update(np.ascontiguousarray(part, np.float32).data)
    return "sha:" + h.hexdigest()


def fit_inliers(
    points1: np.ndarray, points2: np.ndarray, config: VerifyConfig, *, rng_seed: int = 0
) -> tuple[np.ndarray, np.ndarray | None]:
    """Robust fit of ``config.model`` mapping ``points1`` onto ``points2`` with seeded USAC (``config.score``).

    Args:
        points1: (K, 2) x, y pixels in image 1.
        points2: (K, 2) the matched x, y pixels in image 2.
        config: model, threshold (pixels), iterations, confidence.
        rng_seed: seed of OpenCV's RNG for this fit.

    Returns:
        (K,) bool inlier mask and the (3, 3) float64 model (None when there are too few points or no fit).
    """
    import cv2

    p1 = np.ascontiguousarray(points1, dtype=np.float32).reshape(-1, 2)
    p2 = np.ascontiguousarray(points2, dtype=np.float32).reshape(-1, 2)
    if p1.shape != p2.shape:
        raise ValueError(f"points1 and points2 must have the same shape, got {p1.shape} and {p2.shape}")
    needed = 3 if config.model == "affine" else 4
    none = np.zeros(len(p1), bool)
    if len(p1) < needed:
        return none, None
    # USAC through UsacParams, not method=cv2.USAC_MAGSAC: that path runs from a fixed internal RNG state and
    # ignores cv2.setRNGSeed, so it could not honour the seed. With score "magsac" these are MAGSAC++ (OpenCV's
    # USAC_MAGSAC); "msac" scores hypotheses by truncated squared residuals instead, which on IMC photo pairs
    # separates matching from non-matching pairs better (mean ROC AUC 0.965 vs 0.948 over 6 seeds on 100 + 100
    # pairs drawn as verify_speed draws them) and, unlike MAGSAC++, keeps that at 1000 hypotheses.
    params = cv2.UsacParams()
    params.score = cv2.SCORE_METHOD_MSAC if config.score == "msac" else cv2.SCORE_METHOD_MAGSAC
    params.sampler = cv2.SAMPLING_UNIFORM
    params.loMethod = cv2.LOCAL_OPTIM_SIGMA
    params.final_polisher = cv2.MAGSAC
    params.threshold = config.ransac_threshold
    params.maxIterations = config.max_iters
    params.confidence = config.confidence
    params.randomGeneratorState = rng_seed
    if config.model == "affine":
        matrix, mask = cv2.estimateAffine2D(p1, p2, params=params)
        model = None if matrix is None else np.vstack([matrix, [0.0, 0.0, 1.0]])
    else:
        model, mask = cv2.findHomography(p1, p2, params=params)
    if model is None or mask is None:
        return none, None
    return mask.reshape(-1).astype(bool), np.asarray(model, np.float64)


def _fit_pair(
    f1: LocalFeatures, f2: LocalFeatures, matches: np.ndarray, config: VerifyConfig, seed: int,
    reject_below: int,
) -> PairVerification:  # fmt: skip
    if len(matches) < max(reject_below, config.min_inliers, 1):  # cannot reach the bar: no fit
        return PairVerification(matches, np.zeros(len(matches), bool), None)
    mask, model = fit_inliers(f1.locations[matches[:, 0]], f2.locations[matches[:, 1]], config, rng_seed=seed)
    if mask.sum() < config.min_inliers:
        mask = np.zeros_like(mask)
    return PairVerification(matches=matches, inliers=mask, model=model)


# ---------------------------------------------------------------------------------------------------------------
# Chunks of keyed pairs


@dataclass(frozen=True)
class _Chunk:
    """One task: pairs of keys, image 1 read from ``first``, image 2 from ``second``."""

    config: VerifyConfig
    reject_below: int
    first: FeatureSource
    second: FeatureSource
    pairs: tuple[tuple[str, str], ...]
    detailed: bool


def _verify_chunk(chunk: _Chunk) -> list[PairVerification] | list[int]:
    """Verify a chunk's pairs, grouped by their image 1 (one matching call per group), in input order."""
    # parallel over pairs: one BLAS thread each, threaded small GEMMs thrash busy cores
    with torch_threads():
        return _verify_here(chunk)


def _verify_here(chunk: _Chunk) -> list[PairVerification] | list[int]:
    config, same = chunk.config, chunk.first is chunk.second
    cache: dict[tuple[int, str], tuple[LocalFeatures, QuantizedDescriptors]] = {}

    def load(side: int, key: str) -> tuple[LocalFeatures, QuantizedDescriptors]:
        at = (0 if same else side, key)
        if at not in cache:  # read and quantised once per chunk, however many pairs an image is in
            features = (chunk.first if side == 0 else chunk.second).load(key)
            cache[at] = (features, quantize(features.descriptors))
        return cache[at]

    # each pair as (image 1, image 2) = ((source side, key), ...), the smaller key first, and whether that swaps it
    canon = [((0, a), (1, b), False) if a <= b else ((1, b), (0, a), True) for a, b in chunk.pairs]
    groups: dict[tuple[int, str], list[int]] = {}
    for position, (one, _, _) in enumerate(canon):
        groups.setdefault(one, []).append(position)
    results: list[Any] = [None] * len(canon)
    for one, positions in groups.items():
        f1, q1 = load(*one)
        partners = [load(*canon[p][1]) for p in positions]
        found = match_many(
            q1, [q for _, q in partners], ratio=config.ratio, max_distance=config.max_distance,
            mutual=config.mutual,
        )  # fmt: skip
        for p, (f2, _), matches in zip(positions, partners, found, strict=True):
            seed = pair_seed(config.seed, one[1], canon[p][1][1])
            done = _fit_pair(f1, f2, matches, config, seed, chunk.reject_below)
            if not chunk.detailed:
                results[p] = done.num_inliers
            else:
                results[p] = done.swapped() if canon[p][2] else done
    return results


def _chunks(
    pairs: Sequence[tuple[str, str]], first: FeatureSource, second: FeatureSource, config: VerifyConfig,
    reject_below: int, detailed: bool,
) -> tuple[list[_Chunk], np.ndarray]:  # fmt: skip
    """Tasks over ``pairs`` sorted so that pairs sharing an image 1 are neighbours, and the sort order."""
    if reject_below < 0:
        raise ValueError(f"reject_below must be >= 0, got {reject_below}")
    keys = [(a, b) if a <= b else (b, a) for a, b in pairs]
    order = np.array(sorted(range(len(pairs)), key=keys.__getitem__), np.int64)
    workers = max(config.workers, 1)
    per_task = max(1, min(_MAX_PAIRS_PER_TASK, math.ceil(len(pairs) / (4 * workers))))
    tasks = []
    for start in range(0, len(order), per_task):
        part = tuple(pairs[i] for i in order[start : start + per_task])
        if first is second:  # one source (identity survives pickling, so workers see it as one too)
            both = _portable(first, [k for pair in part for k in pair])
            tasks.append(_Chunk(config, reject_below, both, both, part, detailed))
        else:
            one, two = _portable(first, [p[0] for p in part]), _portable(second, [p[1] for p in part])
            tasks.append(_Chunk(config, reject_below, one, two, part, detailed))
    return tasks, order


def run_pairs(
    pairs: Sequence[tuple[str, str]],
    first: FeatureSource,
    second: FeatureSource | None,
    config: VerifyConfig,
    *,
    reject_below: int = 0,
    detailed: bool = False,
    backend: Backend = "local",
    address: str | None = None,
    parallel: ParallelConfig | None = None,
    progress: bool = False,
) -> list[Any]:
    """Verify keyed pairs (image 1 from ``first``, image 2 from ``second``, default ``first``), in input order.

    Returns :class:`PairVerification` per pair (``detailed``) or inlier counts, through
    :func:`landmark.platform.parallel.parallel_map` with ``config.workers`` on ``backend`` (or on the ``parallel``
    section's backend, e.g. a Dask cluster, when given); results do not depend on it.
    """
    second = first if second is None else second
    tasks, order = _chunks(pairs, first, second, config, reject_below, detailed)
    flat: list[Any] = []
    for part in parallel_map(
        _verify_chunk, tasks, config=parallel, workers=config.workers, backend=backend, address=address,
        desc="verify", progress=progress,
    ):  # fmt: skip
        flat.extend(part)
    out: list[Any] = [None] * len(pairs)
    for position, result in zip(order, flat, strict=True):
        out[int(position)] = result
    return out


# ---------------------------------------------------------------------------------------------------------------
# Feature sources


class FeatureMemory:
    """Features held in memory by key (queries, or bare feature pairs keyed by :func:`features_key`)."""

    def __init__(self, features: Mapping[str, LocalFeatures]) -> None:
        self.features = dict(features)

    def load(self, image_id: str) -> LocalFeatures:
        if image_id not in self.features:
            raise LocalStoreError(f"no local features in memory for image id {image_id!r}")
        return self.features[image_id]


_OPEN_STORES: dict[tuple[str, ...], tuple[tuple[Any, ...], StoreFeatures]] = {}


def _store_signature(roots: Sequence[str]) -> tuple[Any, ...]:
    """What changes when a store gains or replaces shards (names and mtimes of the ids files)."""
    out: list[tuple[str, str, int]] = []
    for root in roots:
        with os.scandir(root) as entries:
            out.extend((root, e.name, e.stat().st_mtime_ns) for e in entries if e.name.endswith(".ids.txt"))
    return tuple(sorted(out))


def _reopen_stores(roots: tuple[str, ...]) -> StoreFeatures:
    """The stores at ``roots``, opened once per process while their shards stay the same (worker side)."""
    signature = _store_signature(roots)
    cached = _OPEN_STORES.get(roots)
    if cached is None or cached[0] != signature:
        cached = (signature, StoreFeatures([Path(r) for r in roots]))
        _OPEN_STORES[roots] = cached
    return cached[1]


class StoreFeatures:
    """Local features from one or more stores (the first store holding an id wins).

    Pickles as the stores' paths, so a chunk sent to a worker process or a Dask worker carries no arrays; the
    worker opens the stores itself (once per process).
    """

    def __init__(self, stores: Sequence[str | Path | LocalFeatureReader]) -> None:
        if not stores:
            raise ValueError("need at least one local feature store")
        self.readers = [s if isinstance(s, LocalFeatureReader) else LocalFeatureReader(s) for s in stores]

    def __contains__(self, image_id: object) -> bool:
        return any(image_id in r for r in self.readers)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_reopen_stores, (tuple(str(r.root) for r in self.readers),))

    def load(self, image_id: str) -> LocalFeatures:
        """The features of ``image_id`` from the first store holding them.

        Raises:
            LocalStoreError: no store holds them (naming the id and the first store).
        """
        for reader in self.readers:
            if image_id in reader:
                return reader.load(image_id)
        return self.readers[0].load(image_id)


def _portable(source: FeatureSource, keys: Sequence[str]) -> FeatureSource:
    """What a chunk carries of ``source``: a memory source cut down to the chunk's keys, anything else as is."""
    if isinstance(source, FeatureMemory):
        return FeatureMemory({k: source.load(k) for k in keys})
    return source


# ---------------------------------------------------------------------------------------------------------------
# Bare feature pairs and stores


def _keyed(
    pairs: Sequence[tuple[LocalFeatures, LocalFeatures]],
) -> tuple[list[tuple[str, str]], FeatureMemory]:
    memory: dict[str, LocalFeatures] = {}
    keyed = []
    for f1, f2 in pairs:
        k1, k2 = features_key(f1), features_key(f2)
        memory[k1], memory[k2] = f1, f2
        keyed.append((k1, k2))
    return keyed, FeatureMemory(memory)


def verify_pairs(
    pairs: Sequence[tuple[LocalFeatures, LocalFeatures]],
    config: VerifyConfig,
    *,
    reject_below: int = 0,
    backend: Backend = "local",
    address: str | None = None,
    progress: bool = False,
) -> list[PairVerification]:
    """Verify bare feature pairs (keyed by :func:`features_key`), in input order and orientation; the inlier
    counts are :func:`inlier_counts` of the result.

    Runs through :func:`landmark.platform.parallel.parallel_map` with ``config.workers`` (0 or 1 = in this
    process) on the local or Dask ``backend`` (``address`` = scheduler); results do not depend on either, nor on
    the order.
    """
    keyed, memory = _keyed(pairs)
    return run_pairs(
        keyed, memory, None, config, reject_below=reject_below, detailed=True, backend=backend,
        address=address, progress=progress,
    )  # fmt: skip


def inlier_counts(verifications: Sequence[PairVerification]) -> np.ndarray:
    """The pairs' scores, shape (len(verifications),) int64."""
    return np.array([v.num_inliers for v in verifications], dtype=np.int64)


class StoreVerifier:
    """The verifier of local feature stores, for cleaning, spatial re-ranking and recognition.

    Several stores (e.g. one per split: test queries, index candidates, train neighbours) are searched in order.
    With ``query_store``, queries are read from it alone (e.g. features of cropped queries whose ids are also
    database ids, as in Revisited Oxford/Paris) and candidates from the other stores. Pairs are keyed by image
    ids (see the module docstring): a pair's inliers do not depend on order, position or workers.
    """

    def __init__(
        self,
        store: str | Path | LocalFeatureReader | FeatureSource | Sequence[str | Path | LocalFeatureReader],
        config: VerifyConfig,
        *,
        query_store: str | Path | LocalFeatureReader | None = None,
        reject_below: int = 0,
        parallel: ParallelConfig | None = None,
    ) -> None:
        if isinstance(store, list | tuple):
            self.source: FeatureSource = StoreFeatures(store)
        elif isinstance(store, str | Path | LocalFeatureReader):
            self.source = StoreFeatures([store])
        else:
            self.source = store  # type: ignore[assignment]  # a FeatureSource, e.g. a benchmark's view
        self.query_source = None if query_store is None else StoreFeatures([query_store])
        if reject_below < 0:
            raise ValueError(f"reject_below must be >= 0, got {reject_below}")
        self.config = config
        self.reject_below = reject_below
        self.parallel = parallel  # the backend chunks of pairs run on (None: local, config.workers processes)

    def load(self, image_id: str) -> LocalFeatures:
        """The features of a candidate (raises LocalStoreError when no store holds them)."""
        return self.source.load(image_id)

    def __call__(self, query_id: str, candidate_ids: Sequence[str]) -> np.ndarray:
        """Inlier counts of a stored query against candidates, shape (len(candidate_ids),) int64, >= 0.

        Raises:
            LocalStoreError: an id without stored features.
        """
        first = self.source if self.query_source is None else self.query_source
        return self._counts([(query_id, c) for c in candidate_ids], first)

    def verify_query(self, query: LocalFeatures, candidate_ids: Sequence[str]) -> np.ndarray:
        """Inlier counts of a query that is in no store (keyed by its content) against stored candidates."""
        key = features_key(query)
        return self._counts([(key, c) for c in candidate_ids], FeatureMemory({key: query}))

    def pair_counts(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """Inlier counts of stored id pairs, shape (len(pairs),) int64 (cleaning's pair verifier)."""
        return self._counts(pairs, self.source)

    def _counts(self, pairs: Sequence[tuple[str, str]], first: FeatureSource) -> np.ndarray:
        second = None if first is self.source else self.source
        counts = run_pairs(
            pairs, first, second, self.config, reject_below=self.reject_below, parallel=self.parallel
        )
        return np.array(counts, dtype=np.int64)


def sampson_error(fundamental: np.ndarray, points1: np.ndarray, points2: np.ndarray) -> np.ndarray:
    """First-order geometric (Sampson) error of correspondences under a fundamental matrix.

    ``(x2^T F x1)^2 / ((F x1)_1^2 + (F x1)_2^2 + (F^T x2)_1^2 + (F^T x2)_2^2)`` with homogeneous pixels.

    Args:
        fundamental: (3, 3) F with x2^T F x1 = 0.
        points1: (K, 2) x, y pixels in image 1.
        points2: (K, 2) x, y pixels in image 2.

    Returns:
        (K,) float64 errors in squared pixels.
    """
    F = np.asarray(fundamental, np.float64)
    p1 = np.asarray(points1, np.float64).reshape(-1, 2)
    p2 = np.asarray(points2, np.float64).reshape(-1, 2)
    if F.shape != (3, 3) or p1.shape != p2.shape:
        raise ValueError(f"need F (3, 3) and points (K, 2) twice, got {F.shape}, {p1.shape}, {p2.shape}")
    x1 = np.hstack([p1, np.ones((len(p1), 1))])
    x2 = np.hstack([p2, np.ones((len(p2), 1))])
    fx1 = x1 @ F.T
    ftx2 = x2 @ F
    num = np.einsum("ij,ij->i", x2, fx1) ** 2
    den = fx1[:, 0] ** 2 + fx1[:, 1] ** 2 + ftx2[:, 0] ** 2 + ftx2[:, 1] ** 2
    return num / np.maximum(den, 1e-300)
