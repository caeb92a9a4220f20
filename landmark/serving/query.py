"""Answering queries with a :class:`~landmark.serving.bundle.ServedModel`: the code ``evaluate`` runs, per image.

- decoding: :func:`landmark.data.images.decode_image` (the pipeline's safe decoder, same reason codes);
- the descriptor: :func:`landmark.features.global_desc.describe_image` (extraction's resize and multi-scale);
- search: :func:`landmark.rerank.run_retrieval` over the version's index and train set, with ``evaluate``'s list
  length (``evaluate.topk``), then cut to the requested number of results;
- recognition: :func:`landmark.recognize.knn_recognition`, rejected as "no landmark" at or below the threshold
  ``evaluate`` calibrated (``recognition.threshold`` in the version's metrics).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from landmark.data.images import ImageDecodeError, decode_image
from landmark.features.global_desc import describe_image
from landmark.recognize import knn_recognition
from landmark.rerank import run_retrieval
from landmark.serving.bundle import ServedModel


class RecognitionUnavailableError(ValueError):
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


def describe_query(served: ServedModel, image: np.ndarray) -> np.ndarray:
    """The (1, dim) float32 descriptor of a decoded image, made like the index's descriptors."""
    return describe_image(served.model, image, served.extract, served.device)[None]


def search_descriptors(served: ServedModel, queries: np.ndarray, top: int) -> list[list[SearchHit]]:
    """The top results of each query descriptor, re-ranked as ``evaluate`` re-ranks.

    Args:
        served: the loaded version.
        queries: (n, dim) L2-normalised descriptors.
        top: results per query (at most ``served.topk``, the list re-ranking works on).

    Returns:
        Per query, up to ``top`` hits, best first.
    """
    if not 1 <= top <= served.topk:
        raise ValueError(f"top must be in [1, {served.topk}] (evaluate.topk), got {top}")
    result = run_retrieval(
        np.asarray(queries, np.float32),
        served.db,
        served.rerank,
        top=served.topk,
        index_cfg=served.index_cfg,
        seed=served.seed,
        train=served.train,
        db_ids=served.ids,
        first_stage=served.index,
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


def recognize_descriptors(served: ServedModel, queries: np.ndarray) -> list[Recognition]:
    """Recognise each query descriptor by kNN voting over the version's train set, with rejection.

    Raises:
        RecognitionUnavailableError: the version stores no labelled train set.
    """
    if served.train is None:
        raise RecognitionUnavailableError(
            f"version {served.version} cannot recognise: it stores no labelled train set (rebuild its index with "
            "train features present)"
        )
    prediction = knn_recognition(
        np.asarray(queries, np.float32), served.train, served.recognize, served.index_cfg, seed=served.seed
    )
    return [
        _decide(int(label), float(conf), served.threshold)
        for label, conf in zip(prediction.labels, prediction.confidence, strict=True)
    ]


def _decide(label: int, confidence: float, threshold: float | None) -> Recognition:
    voted = label if label >= 0 else None
    accepted = voted is not None and (threshold is None or confidence > threshold)
    return Recognition(voted if accepted else None, voted, round(confidence, 6), threshold)
