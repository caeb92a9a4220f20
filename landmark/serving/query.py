"""Answering queries with a :class:`~landmark.serving.bundle.ServedModel`: the code ``evaluate`` runs, per image.

- decoding: :func:`landmark.data.images.decode_image` (the pipeline's safe decoder, same reason codes);
- the descriptor: :func:`landmark.features.global_desc.describe_image` (extraction's resize and multi-scale);
- the local features (when spatial verification is on): :func:`landmark.features.local_extract.local_features`
  (the ``local`` stage's extraction), verified against the stored features of the candidates with
  :meth:`landmark.cleaning.verify.StoreVerifier.verify_query` (the pair keyed by the query's content, so its inliers do
  not depend on its place in a batch);
- search: :func:`landmark.retrieval.rerank.run_retrieval` over the version's index and train set, with ``evaluate``'s list
  length (``evaluate.topk``), then cut to the requested number of results;
- recognition: :func:`landmark.retrieval.recognize.knn_recognition`, rejected as "no landmark" at or below the threshold
  ``evaluate`` calibrated (``recognition.threshold`` in the version's metrics).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from landmark.cleaning.verify import StoreVerifier
from landmark.data.images import ImageDecodeError, decode_image
from landmark.errors import InputError, LandmarkError
from landmark.features.global_desc import describe_image
from landmark.features.local import LocalFeatures
from landmark.features.local_extract import local_features
from landmark.retrieval.recognize import knn_recognition
from landmark.retrieval.rerank import run_retrieval
from landmark.serving.bundle import ServedModel


class RecognitionUnavailableError(LandmarkError, ValueError):
    """The served version cannot recognise (it stores no labelled train set)."""


@dataclass(frozen=True)
class SearchHit:
    """One search result.

    Attributes:
        rank: 1-based position.
        image_id: the index image.
        landmark: its landmark id (from the manifest, else predicted by kNN over the train set), or None.
        landmark_source: "manifest", "predicted" or None.
        score: cosine similarity of the (expanded) query and the (augmented) index descriptor.
        inliers: spatial-verification inliers, or None when verification did not run.
    """

    rank: int
    image_id: str
    landmark: int | None
    landmark_source: str | None
    score: float
    inliers: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Recognition:
    """The recognised landmark of one query.

    Attributes:
        landmark: the accepted landmark id, or None ("no landmark": nothing voted, or confidence at or below the
            threshold).
        predicted: the best-voted landmark before rejection (None when no neighbour voted).
        confidence: its summed vote (``evaluate``'s recognition score).
        threshold: the calibrated threshold applied (None: none known, everything voted is accepted).
    """

    landmark: int | None
    predicted: int | None
    confidence: float
    threshold: float | None

    @property
    def accepted(self) -> bool:
        return self.landmark is not None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "accepted": self.accepted}


def decode_query(data: bytes, *, max_bytes: int, max_pixels: int, name: str = "<upload>") -> np.ndarray:
    """Decode an uploaded or fetched image with the pipeline's decoder, refusing more than ``max_bytes``.

    Returns:
        (H, W, 3) uint8 RGB.

    Raises:
        ImageDecodeError: reason "empty", "too_large" (bytes or pixels), "not_an_image", "truncated" or
            "corrupt".
    """
    if len(data) > max_bytes:
        raise ImageDecodeError(name, "too_large", f"{len(data)} bytes exceeds max_bytes={max_bytes}")
    return decode_image(data, max_pixels=max_pixels, name=name)


@dataclass(frozen=True)
class Query:
    """A described query image.

    Attributes:
        vector: (dim,) float32 L2-normalised global descriptor.
        local: its local features (only when the served version verifies spatially).
    """

    vector: np.ndarray
    local: LocalFeatures | None = None


def describe_query(served: ServedModel, image: np.ndarray) -> Query:
    """Describe a decoded image like the index images were: global descriptor, and local features when
    ``served`` verifies spatially."""
    vector = describe_image(served.model, image, served.extract, served.device)
    local = local_features(image, served.local) if served.verifier is not None else None
    return Query(vector, local)


@dataclass(frozen=True)
class QueryVerifier:
    """A :class:`landmark.retrieval.recognize.Verifier` for queries that are not in any store: their local features come
    from memory (keyed by query id), the candidates' from the version's stores."""

    queries: dict[str, LocalFeatures]
    stored: StoreVerifier

    def __call__(self, query_id: str, candidate_ids: Sequence[str]) -> np.ndarray:
        return self.stored.verify_query(self.queries[query_id], candidate_ids)


def _verification(served: ServedModel, queries: Sequence[Query]) -> tuple[QueryVerifier | None, list[str]]:
    """The verifier and query ids of a batch (none when the version does not verify)."""
    if served.verifier is None:
        return None, []
    ids = [f"query-{i}" for i in range(len(queries))]
    local = {}
    for query_id, query in zip(ids, queries, strict=True):
        if query.local is None:
            raise ValueError("spatial verification needs the queries' local features (see describe_query)")
        local[query_id] = query.local
    return QueryVerifier(local, served.verifier), ids


def _vectors(queries: Sequence[Query]) -> np.ndarray:
    if not queries:
        raise InputError("no queries")
    return np.vstack([q.vector.reshape(1, -1) for q in queries]).astype(np.float32)


def search(served: ServedModel, queries: Sequence[Query], top: int) -> list[list[SearchHit]]:
    """The top results of each query, re-ranked as ``evaluate`` re-ranks.

    Args:
        served: the loaded version.
        queries: described query images.
        top: results per query (at most ``served.topk``, the list re-ranking works on).

    Returns:
        Per query, up to ``top`` hits, best first.
    """
    if not 1 <= top <= served.topk:
        raise InputError(f"top must be in [1, {served.topk}] (evaluate.topk), got {top}")
    verifier, query_ids = _verification(served, queries)
    result = run_retrieval(
        _vectors(queries),
        served.db,
        served.rerank,
        top=served.topk,
        index_cfg=served.index_cfg,
        seed=served.seed,
        train=served.train,
        verifier=verifier,
        query_ids=query_ids,
        db_ids=served.ids,
        first_stage=served.index,
        database=served.database,
    )
    predicted = None if result.db_prediction is None else result.db_prediction.labels
    answers = []
    for q in range(result.ranked.shape[0]):
        positions = result.ranked[q][result.ranked[q] >= 0][:top]
        scores = result.db_vectors[positions] @ result.query_vectors[q]
        inliers = None if result.inliers is None else result.inliers[q]
        answers.append(
            [
                SearchHit(
                    rank + 1,
                    served.ids[pos],
                    *_landmark_of(int(pos), served.labels, predicted),
                    score=round(float(score), 6),
                    inliers=None if inliers is None or rank >= inliers.size else int(inliers[rank]),
                )
                for rank, (pos, score) in enumerate(zip(positions, scores, strict=True))
            ]
        )
    return answers


def _landmark_of(
    position: int, labels: np.ndarray | None, predicted: np.ndarray | None
) -> tuple[int | None, str | None]:
    """(landmark, source) of an index image: its manifest label, else its predicted label, else unknown."""
    if labels is not None and labels[position] >= 0:
        return int(labels[position]), "manifest"
    if predicted is not None and predicted[position] >= 0:
        return int(predicted[position]), "predicted"
    return None, None


def recognize(served: ServedModel, queries: Sequence[Query]) -> list[Recognition]:
    """Recognise each query by kNN voting over the version's train set (plus the inlier term when the version
    verifies spatially), with rejection.

    Raises:
        RecognitionUnavailableError: the version stores no labelled train set.
    """
    if served.train is None:
        raise RecognitionUnavailableError(
            f"version {served.version} cannot recognise: it stores no labelled train set (rebuild its index with "
            "train features present)"
        )
    verifier, query_ids = _verification(served, queries)
    prediction = knn_recognition(
        _vectors(queries),
        served.train,
        served.recognize,
        served.index_cfg,
        seed=served.seed,
        verifier=verifier if served.recognize.inliers else None,
        query_ids=query_ids if served.recognize.inliers else (),
    )
    return [
        _decide(int(label), float(conf), served.threshold)
        for label, conf in zip(prediction.labels, prediction.confidence, strict=True)
    ]


def _decide(label: int, confidence: float, threshold: float | None) -> Recognition:
    voted = label if label >= 0 else None
    accepted = voted is not None and (threshold is None or confidence > threshold)
    return Recognition(voted if accepted else None, voted, round(confidence, 6), threshold)
