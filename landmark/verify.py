"""Spatial verification of many image pairs at once: putative matches, then a seeded robust geometric fit.

1. Putative matches (:func:`match_descriptors`): nearest neighbours by one matrix product of L2-normalised
   descriptors, kept by a distance cap, Lowe's ratio test and optionally the mutual check.
2. Robust fit (:func:`fit_inliers`): OpenCV USAC with MAGSAC++ scoring (``cv2.UsacParams``, the settings of
   ``cv2.USAC_MAGSAC``) of an affine map or a homography from image-1 to image-2 locations; USAC's RNG state is
   seeded per pair from the base seed and the pair's position, so counts do not depend on the number of workers.
3. :func:`verify_pairs` runs both over a list of pairs through :func:`landmark.parallel.parallel_map`; the
   score of a pair is its inlier count (DELF, Noh et al. 2017).

:class:`StoreVerifier` adapts this to :class:`landmark.rerank.Verifier` over a local feature store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from landmark.config import VerifyConfig
from landmark.features.local import LocalFeatures
from landmark.features.local_store import LocalFeatureReader
from landmark.parallel import Backend, parallel_map

_PAIRS_PER_TASK = 16  # amortises pickling and task overhead when workers > 0


@dataclass(frozen=True, eq=False)
class PairVerification:
    """Verification of one pair.

    Attributes:
        matches: (K, 2) int64 putative matches (row in image 1, row in image 2).
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


def _check_descriptors(name: str, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (N, D), got {x.shape}")
    return x


def match_descriptors(
    desc1: np.ndarray,
    desc2: np.ndarray,
    *,
    ratio: float = 1.0,
    max_distance: float = 2.0,
    mutual: bool = False,
) -> np.ndarray:
    """Putative matches between two sets of L2-normalised descriptors by nearest neighbour.

    Distances are Euclidean, ``sqrt(2 - 2 cos)``. A match (i, j) has j = nearest neighbour of i and passes
    ``d(i, j) <= max_distance``, the ratio test ``d(i, j) < ratio * d(i, second nearest)`` (when ratio < 1 and
    image 2 has at least two descriptors) and, with ``mutual``, i is a nearest neighbour of j (ties allowed).
    Nearest-neighbour ties in image 2 go to the lowest index.

    Args:
        desc1: (N1, D) unit rows.
        desc2: (N2, D) unit rows.
        ratio: Lowe's ratio in (0, 1]; 1 disables the test.
        max_distance: distance cap in (0, 2]; 2 disables it.
        mutual: keep only mutual nearest neighbours.

    Returns:
        (K, 2) int64 (row in desc1, row in desc2), sorted by the first column.

    Raises:
        ValueError: bad shapes, differing dimensions, or parameters out of range.
    """
    a, b = _check_descriptors("desc1", desc1), _check_descriptors("desc2", desc2)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"descriptor dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    if not 0.0 < max_distance <= 2.0:
        raise ValueError(f"max_distance must be in (0, 2], got {max_distance}")
    if len(a) == 0 or len(b) == 0:
        return np.zeros((0, 2), np.int64)
    import torch

    # torch's GEMM: it honours torch.set_num_threads, which :func:`verify_pairs` sets to 1 (parallel over pairs)
    sim = (torch.from_numpy(a) @ torch.from_numpy(b).T).numpy()
    rows = np.arange(len(a))
    best = sim.argmax(axis=1)  # ties: the lowest index, so the mutual check is well defined
    best_sim = sim[rows, best].copy()
    # column max, not argmax: a strided argmax over 1000 rows costs ~10x more; ties count as mutual
    mutual_ok = best_sim >= sim.max(axis=0)[best] if mutual else None
    if len(b) >= 2:
        sim[rows, best] = -np.inf  # sim is ours: the second nearest is the row max without the nearest
        second_sim = sim.max(axis=1)
    else:
        second_sim = np.full(len(a), -1.0, np.float32)
    dist = np.sqrt(np.maximum(2.0 - 2.0 * best_sim, 0.0))
    keep = dist <= max_distance + 1e-6
    if ratio < 1.0 and len(b) >= 2:
        second = np.sqrt(np.maximum(2.0 - 2.0 * second_sim, 0.0))
        keep &= dist < ratio * second
    if mutual_ok is not None:
        keep &= mutual_ok
    kept = np.flatnonzero(keep)
    return np.stack([kept, best[kept]], axis=1).astype(np.int64)


def pair_seed(seed: int, position: int) -> int:
    """The RANSAC seed of the pair at ``position``: a hash of (seed, position), in [0, 2**31)."""
    state = np.random.SeedSequence([seed, position]).generate_state(1)[0]
    return int(state) & 0x7FFFFFFF


def fit_inliers(
    points1: np.ndarray, points2: np.ndarray, config: VerifyConfig, *, rng_seed: int = 0
) -> tuple[np.ndarray, np.ndarray | None]:
    """Robust fit of ``config.model`` mapping ``points1`` onto ``points2`` with seeded MAGSAC++.

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
    # ignores cv2.setRNGSeed, so it could not honour the seed. These settings are MAGSAC++ (OpenCV's USAC_MAGSAC).
    params = cv2.UsacParams()
    params.score = cv2.SCORE_METHOD_MAGSAC
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


def verify_pair(
    features1: LocalFeatures, features2: LocalFeatures, config: VerifyConfig, *, position: int = 0
) -> PairVerification:
    """Match and fit one pair; the RANSAC seed derives from ``config.seed`` and ``position``."""
    matches = match_descriptors(
        features1.descriptors,
        features2.descriptors,
        ratio=config.ratio,
        max_distance=config.max_distance,
        mutual=config.mutual,
    )
    mask, model = fit_inliers(
        features1.locations[matches[:, 0]],
        features2.locations[matches[:, 1]],
        config,
        rng_seed=pair_seed(config.seed, position),
    )
    if mask.sum() < config.min_inliers:
        mask = np.zeros_like(mask)
    return PairVerification(matches=matches, inliers=mask, model=model)


_Task = tuple[VerifyConfig, int, Sequence[tuple[LocalFeatures, LocalFeatures]]]


def _verify_chunk(task: _Task) -> list[PairVerification]:
    import torch

    config, start, pairs = task
    # One BLAS thread per pair: parallelism is over pairs, and threaded small GEMMs on busy cores thrash.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return [verify_pair(f1, f2, config, position=start + k) for k, (f1, f2) in enumerate(pairs)]
    finally:
        torch.set_num_threads(threads)


def verify_pairs_detailed(
    pairs: Sequence[tuple[LocalFeatures, LocalFeatures]],
    config: VerifyConfig,
    *,
    backend: Backend = "local",
    address: str | None = None,
    progress: bool = False,
) -> list[PairVerification]:
    """:func:`verify_pair` for every pair (pair k seeded with ``pair_seed(config.seed, k)``), in input order.

    Runs through :func:`landmark.parallel.parallel_map` with ``config.workers`` (0 = in this process) on the
    local or Dask ``backend`` (``address`` = scheduler); results do not depend on either.
    """
    tasks: list[_Task] = [
        (config, s, pairs[s : s + _PAIRS_PER_TASK]) for s in range(0, len(pairs), _PAIRS_PER_TASK)
    ]
    out: list[PairVerification] = []
    chunks = parallel_map(
        _verify_chunk,
        tasks,
        workers=config.workers,
        backend=backend,
        address=address,
        desc="verify",
        progress=progress,
    )
    for chunk in chunks:
        out.extend(chunk)
    return out


def verify_pairs(
    pairs: Sequence[tuple[LocalFeatures, LocalFeatures]],
    config: VerifyConfig,
    *,
    backend: Backend = "local",
    address: str | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Inlier counts of many pairs, shape (len(pairs),) int64 (see :func:`verify_pairs_detailed`)."""
    details = verify_pairs_detailed(pairs, config, backend=backend, address=address, progress=progress)
    return np.array([d.num_inliers for d in details], dtype=np.int64)


class StoreVerifier:
    """A :class:`landmark.rerank.Verifier` over local feature stores: inlier counts of query vs candidates.

    Several stores (e.g. one per split: test queries, index candidates, train neighbours) are searched in order.
    With ``query_store``, queries are read from it alone (e.g. features of cropped queries whose ids are also
    database ids, as in Revisited Oxford/Paris) and candidates from the other stores.
    """

    def __init__(
        self,
        store: str | Path | LocalFeatureReader | Sequence[str | Path | LocalFeatureReader],
        config: VerifyConfig,
        *,
        query_store: str | Path | LocalFeatureReader | None = None,
    ) -> None:
        stores: list[str | Path | LocalFeatureReader] = (
            list(store) if isinstance(store, list | tuple) else [store]  # type: ignore[list-item]
        )
        if not stores:
            raise ValueError("StoreVerifier needs at least one local feature store")
        self.readers = [s if isinstance(s, LocalFeatureReader) else LocalFeatureReader(s) for s in stores]
        self.query_reader = (
            query_store
            if query_store is None or isinstance(query_store, LocalFeatureReader)
            else LocalFeatureReader(query_store)
        )
        self.config = config

    def load(self, image_id: str) -> LocalFeatures:
        """The features of ``image_id`` from the first store holding them.

        Raises:
            LocalStoreError: no store holds them.
        """
        for reader in self.readers:
            if image_id in reader:
                return reader.load(image_id)
        return self.readers[0].load(image_id)  # raises, naming the id and the store

    def __call__(self, query_id: str, candidate_ids: Sequence[str]) -> np.ndarray:
        """Inlier counts, shape (len(candidate_ids),) int64, >= 0.

        Raises:
            LocalStoreError: an id without stored features.
        """
        query = self.load(query_id) if self.query_reader is None else self.query_reader.load(query_id)
        pairs = [(query, self.load(c)) for c in candidate_ids]
        return verify_pairs(pairs, self.config)


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
