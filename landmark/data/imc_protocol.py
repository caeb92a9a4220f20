"""A geometric retrieval protocol from camera poses: easy / hard positives and junk for IMC photos.

Every photo of an Image Matching Challenge scene has a calibrated camera (world-to-camera ``x = R X + t``), so
whether two photos show the same part of the landmark can be read from the poses instead of from labels. For a
pair (i, j) of one scene:

- ``rotation``: relative rotation angle, ``arccos((trace(R_j R_i^T) - 1) / 2)`` in degrees (viewpoint change
  including in-plane roll);
- ``view``: angle between the optical axes ``d = R^T (0, 0, 1)`` (the third row of R), in degrees; it never
  exceeds ``rotation``;
- ``lateral``: sideways offset of the cameras, the part of ``c_j - c_i`` (centres ``c = -R^T t``) perpendicular
  to the mean viewing direction ``d_i + d_j``, divided by the scene radius (the median distance of the scene's
  centres from their coordinate-wise median; SfM units are arbitrary). Moving along the viewing direction
  changes scale but keeps the view; moving sideways moves the view off the subject;
- ``covisibility``: the IMC ``pair_covisibility.csv`` value (the dataset's estimate of the pair's overlap from
  its 3D reconstruction, 0..1) where the scene has one; unknown (NaN) elsewhere. Where it is known it is the overlap
  evidence and ``lateral`` is not used; where it is unknown ``lateral`` stands in for it.

Classes (the defaults of :class:`OverlapThresholds`; all limits inclusive):

- **easy**: ``rotation <= 20`` and ``view <= 20`` and large overlap: ``covisibility >= 0.5``, or (unknown)
  ``lateral <= 0.75``;
- **hard**: not easy, ``view <= 45`` and overlapping: ``covisibility >= 0.1``, or (unknown) ``lateral <= 1.5``.
  The views overlap but across a wide baseline, a strong rotation (any in-plane roll included) or low overlap;
- **junk**: every other pair of the same scene (not enough overlap to call it a match, nor a distractor).

Photos of other scenes are distractors (in no list). Scale change from moving along the viewing direction is not
measured (poses give no depth), so a zoomed pair within the easy limits counts as easy.

The limits were checked against an independent signal, SIFT matches consistent with the pose-derived
fundamental matrix (at least 15 within 2 px; 800 random pairs per scene). With these defaults such matches exist
for 88-97 % of easy pairs, 54-65 % of hard pairs and 5-38 % of junk pairs (brandenburg_gate, grand_place_brussels,
sagrada_familia); SIFT misses many true wide-baseline overlaps, so the hard share is a lower bound.

Queries (:func:`eligible_queries`, :func:`choose_queries`) are photos with at least one easy and one hard
positive. Everything here is a pure function on arrays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from landmark.errors import InputError
from landmark.data.groundtruth import QueryTruth

PairClass = Literal["easy", "hard", "junk"]
JUNK, HARD, EASY = 0, 1, 2  # codes of :func:`classify_pairs`
CLASS_NAMES: dict[int, PairClass] = {JUNK: "junk", HARD: "hard", EASY: "easy"}


@dataclass(frozen=True)
class OverlapThresholds:
    """Limits of the easy and hard classes (angles in degrees, lateral offsets in scene radii, covisibility 0..1).

    Raises:
        ValueError: a limit out of range, or an easy limit looser than the hard one.
    """

    easy_max_rotation: float = 20.0
    easy_max_view: float = 20.0
    easy_max_lateral: float = 0.75
    easy_min_covisibility: float = 0.5
    hard_max_view: float = 45.0
    hard_max_lateral: float = 1.5
    hard_min_covisibility: float = 0.1

    def __post_init__(self) -> None:
        for name in ("easy_max_rotation", "easy_max_view", "hard_max_view"):
            value = getattr(self, name)
            if not 0.0 <= value <= 180.0:
                raise InputError(f"{name} must be in [0, 180] degrees, got {value}")
        for name in ("easy_max_lateral", "hard_max_lateral"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0.0):
                raise InputError(f"{name} must be a finite number >= 0, got {value}")
        for name in ("easy_min_covisibility", "hard_min_covisibility"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InputError(f"{name} must be in [0, 1], got {value}")
        for easy, hard in (
            ("easy_max_view", "hard_max_view"),
            ("easy_max_lateral", "hard_max_lateral"),
        ):
            if getattr(self, easy) > getattr(self, hard):
                raise InputError(
                    f"{easy} ({getattr(self, easy)}) must not exceed {hard} ({getattr(self, hard)})"
                )
        if self.easy_min_covisibility < self.hard_min_covisibility:
            raise InputError(
                f"easy_min_covisibility ({self.easy_min_covisibility}) must be >= hard_min_covisibility "
                f"({self.hard_min_covisibility})"
            )


def _rotations(rotations: np.ndarray) -> np.ndarray:
    r = np.asarray(rotations, dtype=np.float64)
    if r.ndim != 3 or r.shape[1:] != (3, 3) or not np.isfinite(r).all():
        raise InputError(f"rotations must be finite with shape (n, 3, 3), got {r.shape}")
    return r


def _angle_deg(cosine: np.ndarray) -> np.ndarray:
    return np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))


def camera_centres(rotations: np.ndarray, translations: np.ndarray) -> np.ndarray:
    """Camera centres ``c = -R^T t`` in world coordinates.

    Args:
        rotations: (n, 3, 3) world-to-camera rotations.
        translations: (n, 3) translations.

    Returns:
        (n, 3) float64.
    """
    r = _rotations(rotations)
    t = np.asarray(translations, dtype=np.float64)
    if t.shape != (r.shape[0], 3) or not np.isfinite(t).all():
        raise InputError(f"translations must be finite with shape ({r.shape[0]}, 3), got {t.shape}")
    return -np.einsum("nji,nj->ni", r, t)


def viewing_directions(rotations: np.ndarray) -> np.ndarray:
    """Optical axes ``R^T (0, 0, 1)`` in world coordinates, (n, 3) unit vectors."""
    return _rotations(rotations)[:, 2, :].copy()


def relative_rotation_angles(rotations: np.ndarray) -> np.ndarray:
    """Angle of the relative rotation ``R_j R_i^T`` of every pair, (n, n) degrees in [0, 180], symmetric."""
    r = _rotations(rotations)
    traces = np.einsum("aij,bij->ab", r, r)  # trace(R_a R_b^T)
    return _angle_deg((traces - 1.0) / 2.0)


def viewing_angles(rotations: np.ndarray) -> np.ndarray:
    """Angle between the optical axes of every pair, (n, n) degrees in [0, 180], symmetric."""
    d = viewing_directions(rotations)
    return _angle_deg(d @ d.T)


def scene_radius(centres: np.ndarray) -> float:
    """Median distance of camera centres (n, 3) from their coordinate-wise median: the scene's length unit.

    Raises:
        ValueError: fewer than two cameras, or a radius of 0 (most cameras at one point).
    """
    c = np.asarray(centres, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] != 3 or c.shape[0] < 2:
        raise InputError(f"centres must have shape (n >= 2, 3), got {c.shape}")
    radius = float(np.median(np.linalg.norm(c - np.median(c, axis=0), axis=1)))
    if not radius > 0.0:
        raise InputError(f"scene radius is {radius}: most cameras share one centre, offsets have no unit")
    return radius


def lateral_offsets(centres: np.ndarray, directions: np.ndarray, radius: float) -> np.ndarray:
    """Sideways offset of every camera pair in units of ``radius``, (n, n) symmetric, zero diagonal.

    The offset of (i, j) is the norm of the part of ``c_j - c_i`` perpendicular to the mean viewing direction
    ``(d_i + d_j) / |d_i + d_j|`` (``d_i`` for exactly opposite directions).

    Args:
        centres: (n, 3) camera centres.
        directions: (n, 3) unit viewing directions.
        radius: the scene's length unit (:func:`scene_radius`).
    """
    if not (np.isfinite(radius) and radius > 0.0):
        raise InputError(f"radius must be a finite number > 0, got {radius}")
    c = np.asarray(centres, dtype=np.float64)
    d = np.asarray(directions, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] != 3 or d.shape != c.shape:
        raise InputError(f"centres and directions must both have shape (n, 3), got {c.shape} and {d.shape}")
    diff = c[None, :, :] - c[:, None, :]
    mean = d[:, None, :] + d[None, :, :]
    norm = np.linalg.norm(mean, axis=-1, keepdims=True)
    mean = np.where(norm > 1e-9, mean / np.maximum(norm, 1e-12), np.broadcast_to(d[:, None, :], mean.shape))
    along = np.einsum("ijk,ijk->ij", diff, mean)
    offsets = np.linalg.norm(diff - along[..., None] * mean, axis=-1) / radius
    return np.maximum(offsets, offsets.T)  # exactly symmetric (opposite directions use d_i for (i, j))


def covisibility_matrix(
    image_ids: Sequence[str], pairs: Sequence[tuple[str, str]], values: Sequence[float]
) -> np.ndarray:
    """Symmetric (n, n) covisibility of ``image_ids`` from listed pairs, NaN where a pair is not listed.

    Raises:
        ValueError: a pair naming an id not in ``image_ids``, a value outside [0, 1], or lengths that differ.
    """
    position = {image_id: k for k, image_id in enumerate(image_ids)}
    if len(pairs) != len(values):
        raise InputError(f"got {len(pairs)} pairs but {len(values)} covisibility values")
    out = np.full((len(image_ids), len(image_ids)), np.nan)
    for (first, second), value in zip(pairs, values, strict=True):
        for image_id in (first, second):
            if image_id not in position:
                raise InputError(
                    f"covisibility pair ({first!r}, {second!r}) names unknown image {image_id!r}"
                )
        if not 0.0 <= float(value) <= 1.0:
            raise InputError(f"covisibility of ({first!r}, {second!r}) must be in [0, 1], got {value}")
        out[position[first], position[second]] = out[position[second], position[first]] = float(value)
    return out


def classify_pairs(
    rotation: np.ndarray,
    view: np.ndarray,
    lateral: np.ndarray,
    covisibility: np.ndarray | None = None,
    thresholds: OverlapThresholds | None = None,
) -> np.ndarray:
    """Class code (:data:`EASY`, :data:`HARD`, :data:`JUNK`) of pairs from their pose measures (module doc).

    Args:
        rotation: relative rotation angles, degrees, any shape.
        view: viewing-direction angles, degrees, same shape.
        lateral: sideways camera offsets in scene radii (:func:`lateral_offsets`), same shape; used only where
            the covisibility is unknown.
        covisibility: 0..1 with NaN = unknown, same shape; None = unknown everywhere.
        thresholds: the class limits (default :class:`OverlapThresholds`).

    Returns:
        int8 codes, same shape.

    Raises:
        ValueError: shapes that differ, NaN or negative angles/offsets, covisibility outside [0, 1].
    """
    limits = thresholds or OverlapThresholds()
    rot = np.asarray(rotation, dtype=np.float64)
    vw = np.asarray(view, dtype=np.float64)
    side = np.asarray(lateral, dtype=np.float64)
    covis = np.full(rot.shape, np.nan) if covisibility is None else np.asarray(covisibility, np.float64)
    for name, value in (("view", vw), ("lateral", side), ("covisibility", covis)):
        if value.shape != rot.shape:
            raise InputError(f"{name} has shape {value.shape}, rotation has {rot.shape}")
    for name, value in (("rotation", rot), ("view", vw), ("lateral", side)):
        if np.isnan(value).any() or (value < 0).any():
            raise InputError(f"{name} must be >= 0 and not NaN, got min {np.nanmin(value, initial=0.0)}")
    known = ~np.isnan(covis)
    if ((covis[known] < 0) | (covis[known] > 1)).any():
        raise InputError(
            f"covisibility must be in [0, 1], got values in [{covis[known].min()}, {covis[known].max()}]"
        )
    # where covisibility is known it is the overlap evidence; elsewhere the lateral offset stands in for it
    large_overlap = np.where(known, covis >= limits.easy_min_covisibility, side <= limits.easy_max_lateral)
    overlap = np.where(known, covis >= limits.hard_min_covisibility, side <= limits.hard_max_lateral)
    easy = (rot <= limits.easy_max_rotation) & (vw <= limits.easy_max_view) & large_overlap
    overlapping = (vw <= limits.hard_max_view) & overlap
    return np.where(easy, EASY, np.where(overlapping, HARD, JUNK)).astype(np.int8)


def classify_pair(
    rotation: float,
    view: float,
    lateral: float,
    covisibility: float | None = None,
    thresholds: OverlapThresholds | None = None,
) -> PairClass:
    """:func:`classify_pairs` of one pair, as a name ("easy", "hard" or "junk")."""
    code = classify_pairs(
        np.array([rotation]),
        np.array([view]),
        np.array([lateral]),
        None if covisibility is None else np.array([covisibility]),
        thresholds,
    )
    return CLASS_NAMES[int(code[0])]


def scene_pair_classes(
    rotations: np.ndarray,
    translations: np.ndarray,
    covisibility: np.ndarray | None = None,
    thresholds: OverlapThresholds | None = None,
) -> np.ndarray:
    """Class codes of every pair of one scene's cameras, (n, n) int8 symmetric; the diagonal is -1 (self).

    Args:
        rotations: (n, 3, 3) world-to-camera rotations.
        translations: (n, 3).
        covisibility: (n, n) with NaN = unknown (see :func:`covisibility_matrix`), or None.
        thresholds: the class limits.
    """
    centres = camera_centres(rotations, translations)
    lateral = lateral_offsets(centres, viewing_directions(rotations), scene_radius(centres))
    codes = classify_pairs(
        relative_rotation_angles(rotations), viewing_angles(rotations), lateral, covisibility, thresholds
    )
    np.fill_diagonal(codes, -1)
    return codes


def eligible_queries(codes: np.ndarray) -> np.ndarray:
    """Indices of cameras with at least one easy and one hard partner in (n, n) pair codes, ascending."""
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[0] != codes.shape[1]:
        raise InputError(f"codes must be a square (n, n) matrix, got shape {codes.shape}")
    return np.flatnonzero((codes == EASY).any(axis=1) & (codes == HARD).any(axis=1))


def choose_queries(codes: np.ndarray, count: int | None, seed: int) -> np.ndarray:
    """``count`` eligible queries (:func:`eligible_queries`) drawn without replacement, ascending.

    Fewer are returned when fewer are eligible; ``count=None`` returns every eligible photo.

    Raises:
        ValueError: ``count`` < 1.
    """
    if count is not None and count < 1:
        raise InputError(f"queries per scene must be >= 1, got {count}")
    eligible = eligible_queries(codes)
    if count is None or len(eligible) <= count:
        return eligible
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(eligible, size=count, replace=False))


def query_truths(
    image_ids: Sequence[str],
    codes: np.ndarray,
    queries: Sequence[int],
    boxes: Mapping[str, tuple[float, float, float, float]],
    *,
    leave_one_out: bool = False,
) -> tuple[QueryTruth, ...]:
    """Ground truth of one scene's queries: easy/hard/junk ids among the scene's database photos.

    Args:
        image_ids: (n,) the scene's image ids, in the order of ``codes``.
        codes: (n, n) pair codes (:func:`scene_pair_classes`).
        queries: indices of the query photos.
        boxes: query id -> bbx (x0, y0, x1, y1) in pixels.
        leave_one_out: False: the queries are not in the database, so they are left out of every list. True:
            every photo stays in the database; a query's own photo is junk to it (ignored when ranked) and the
            other queries are classed like any photo.

    Returns:
        One :class:`QueryTruth` per query, in ``queries`` order, lists in ``image_ids`` order.

    Raises:
        ValueError: shapes that do not match, an index out of range or repeated, a query without a box.
    """
    codes = np.asarray(codes)
    n = len(image_ids)
    if codes.shape != (n, n):
        raise InputError(f"codes must have shape ({n}, {n}), got {codes.shape}")
    chosen = [int(q) for q in queries]
    if len(set(chosen)) != len(chosen) or any(not 0 <= q < n for q in chosen):
        raise InputError(f"query indices must be distinct and in [0, {n}), got {chosen}")
    in_database = np.ones(n, bool)
    if not leave_one_out:
        in_database[chosen] = False
    truths = []
    for q in chosen:
        query_id = image_ids[q]
        if query_id not in boxes:
            raise InputError(f"query {query_id!r} has no bounding box")
        row = codes[q].copy()
        row[q] = JUNK  # only reachable with leave_one_out: the query's own photo
        lists = {
            name: tuple(image_ids[int(j)] for j in np.flatnonzero((row == code) & in_database))
            for name, code in (("easy", EASY), ("hard", HARD), ("junk", JUNK))
        }
        truths.append(QueryTruth(query_id, lists["easy"], lists["hard"], lists["junk"], boxes[query_id]))
    return tuple(truths)
