"""Image Matching Challenge layout: ``<root>/<scene>/images/<id>.jpg`` with camera geometry per scene.

Per scene: ``calibration.csv`` (image_id, camera_intrinsics = K as 9 numbers row-major, rotation_matrix =
R as 9, translation_vector = t as 3; world-to-camera x_cam = R X + t) and optionally ``pair_covisibility.csv``
(pair "<id1>-<id2>", covisibility, fundamental_matrix as 9 numbers with x2^T F x1 = 0 in pixels).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from landmark.errors import InputError
from landmark.data.atomic import atomic_path
from landmark.data.csvtable import read_csv_table, write_csv_rows
from landmark.data.folder import IMAGE_EXTENSIONS, is_image_file, validate_label_name
from landmark.data.groundtruth import DatasetFormatError, LandmarkDataset
from landmark.data.ids import is_safe_image_id, validate_image_id
from landmark.data.manifest import STATUS_OK, make_manifest, quarantined_row

logger = logging.getLogger(__name__)

SPLIT = "train"
CALIBRATION_FILE = "calibration.csv"
PAIRS_FILE = "pair_covisibility.csv"
CALIBRATION_COLUMNS = ("image_id", "camera_intrinsics", "rotation_matrix", "translation_vector")
PAIR_COLUMNS = ("pair", "covisibility", "fundamental_matrix")


@dataclass(frozen=True, eq=False)
class Camera:
    """A calibrated pinhole camera, world-to-camera ``x_cam = R @ X + t``.

    Attributes:
        K: (3, 3) intrinsics in pixels.
        R: (3, 3) rotation.
        t: (3,) translation.
    """

    K: np.ndarray
    R: np.ndarray
    t: np.ndarray

    def __post_init__(self) -> None:
        for name, shape in (("K", (3, 3)), ("R", (3, 3)), ("t", (3,))):
            value = np.asarray(getattr(self, name), dtype=np.float64)
            if value.shape != shape or not np.isfinite(value).all():
                raise InputError(f"Camera.{name} must be finite with shape {shape}, got {value.shape}")
            object.__setattr__(self, name, value)


def scene_dirs(root: str | Path) -> list[Path]:
    """Sub-directories of ``root`` with an ``images/`` folder, sorted by name (positions = landmark ids)."""
    return sorted(
        (p for p in Path(root).iterdir() if (p / "images").is_dir() and not p.name.startswith(".")),
        key=lambda p: p.name,
    )


def read_imc(root: str | Path) -> LandmarkDataset:
    """Read every scene's images into split "train".

    Returns:
        A dataset with uri ``<scene>/images/<file>``, landmark_id = index of the scene in sorted order and
        ``label_names`` = id -> scene name. Unsafe or repeated ids are quarantined.

    Raises:
        FileNotFoundError: ``root`` is not a directory.
        DatasetFormatError: no ``<scene>/images`` directory under ``root``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"IMC root {root} is not a directory")
    scenes = scene_dirs(root)
    if not scenes:
        raise DatasetFormatError(f"{root}: no <scene>/images directories, not an IMC layout")
    rows: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for landmark_id, scene in enumerate(scenes):
        for path in sorted((scene / "images").iterdir(), key=lambda p: p.name):
            if not is_image_file(path):
                continue
            image_id, uri = path.stem, f"{scene.name}/images/{path.name}"
            if not is_safe_image_id(image_id):
                rows.append(
                    quarantined_row(
                        image_id, "unsafe_id", f"{image_id!r} (file {uri!r})", landmark_id=landmark_id
                    )
                )
            elif image_id in seen:
                detail = f"{image_id!r} in {uri!r} (first in {seen[image_id]!r})"
                rows.append(quarantined_row(image_id, "duplicate_id", detail, landmark_id=landmark_id))
            else:
                seen[image_id] = uri
                rows.append({"image_id": image_id, "landmark_id": landmark_id, "uri": uri})
    label_names = {landmark_id: scene.name for landmark_id, scene in enumerate(scenes)}
    return LandmarkDataset(root=root, manifests={SPLIT: make_manifest(rows)}, label_names=label_names)


def _numbers(text: str, count: int, where: str) -> np.ndarray:
    try:
        values = np.array([float(v) for v in text.split()], dtype=np.float64)
    except ValueError as exc:
        raise DatasetFormatError(f"{where}: expected {count} numbers, got {text!r}") from exc
    if values.shape != (count,) or not np.isfinite(values).all():
        raise DatasetFormatError(f"{where}: expected {count} finite numbers, got {text!r}")
    return values


def read_imc_cameras(scene_dir: str | Path) -> dict[str, Camera]:
    """Cameras of one scene from its ``calibration.csv``.

    Returns:
        image_id -> :class:`Camera`, in file order.

    Raises:
        FileNotFoundError: no calibration.csv.
        DatasetFormatError: missing columns, malformed rows, wrong number counts, unsafe or repeated ids.
    """
    path = Path(scene_dir) / CALIBRATION_FILE
    table = read_csv_table(path, CALIBRATION_COLUMNS)
    if table.malformed:
        line, fields = table.malformed[0]
        raise DatasetFormatError(f"{path}:{line}: expected {len(table.header)} fields, got {len(fields)}")
    ids, ks, rs, ts = (table.columns[c] for c in CALIBRATION_COLUMNS)
    cameras: dict[str, Camera] = {}
    for k, line in enumerate(table.lines):
        where = f"{path}:{line}"
        if not is_safe_image_id(ids[k]) or ids[k] in cameras:
            raise DatasetFormatError(f"{where}: unsafe or repeated image_id {ids[k]!r}")
        cameras[ids[k]] = Camera(
            K=_numbers(ks[k], 9, f"{where} camera_intrinsics").reshape(3, 3),
            R=_numbers(rs[k], 9, f"{where} rotation_matrix").reshape(3, 3),
            t=_numbers(ts[k], 3, f"{where} translation_vector"),
        )
    return cameras


def _split_pair(pair: str, known_ids: set[str], where: str) -> tuple[str, str]:
    """Split "<id1>-<id2>"; ids may contain "-", so ambiguous splits are settled by the scene's known ids."""
    candidates = [
        (pair[:k], pair[k + 1 :])
        for k, char in enumerate(pair)
        if char == "-" and is_safe_image_id(pair[:k]) and is_safe_image_id(pair[k + 1 :])
    ]
    if len(candidates) > 1:
        candidates = [c for c in candidates if c[0] in known_ids and c[1] in known_ids]
    if len(candidates) != 1:
        raise DatasetFormatError(f"{where}: cannot split pair {pair!r} into two image ids")
    return candidates[0]


def read_imc_pairs(scene_dir: str | Path) -> pd.DataFrame:
    """Image pairs of one scene from ``pair_covisibility.csv`` (empty frame when the file is absent).

    Returns:
        DataFrame with columns id1 (str), id2 (str), covisibility (float64) and F (object: (3, 3) float64
        arrays with x2^T F x1 = 0 in pixel coordinates).

    Raises:
        DatasetFormatError: missing columns, malformed rows, bad numbers or unsplittable pairs.
    """
    scene_dir = Path(scene_dir)
    path = scene_dir / PAIRS_FILE
    if not path.is_file():
        return pd.DataFrame({"id1": [], "id2": [], "covisibility": np.zeros(0), "F": []}).astype(
            {"id1": object, "id2": object, "F": object}
        )
    table = read_csv_table(path, PAIR_COLUMNS)
    if table.malformed:
        line, fields = table.malformed[0]
        raise DatasetFormatError(f"{path}:{line}: expected {len(table.header)} fields, got {len(fields)}")
    images = scene_dir / "images"
    known = {p.stem for p in images.iterdir()} if images.is_dir() else set()
    id1, id2, covisibility, matrices = [], [], [], []
    pairs, covis, fundamentals = (table.columns[c] for c in PAIR_COLUMNS)
    for k, line in enumerate(table.lines):
        where = f"{path}:{line}"
        first, second = _split_pair(pairs[k], known, where)
        id1.append(first)
        id2.append(second)
        covisibility.append(float(_numbers(covis[k], 1, f"{where} covisibility")[0]))
        matrices.append(_numbers(fundamentals[k], 9, f"{where} fundamental_matrix").reshape(3, 3))
    return pd.DataFrame(
        {
            "id1": pd.Series(id1, dtype=object),
            "id2": pd.Series(id2, dtype=object),
            "covisibility": np.asarray(covisibility, dtype=np.float64),
            "F": pd.Series(matrices, dtype=object),
        }
    )


def skew(v: np.ndarray) -> np.ndarray:
    """(3,) vector -> (3, 3) cross-product matrix [v]x with [v]x @ w == cross(v, w)."""
    x, y, z = np.asarray(v, dtype=np.float64).reshape(3)
    return np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])


def fundamental_from_cameras(cam1: Camera, cam2: Camera) -> np.ndarray:
    """Fundamental matrix of a camera pair: F = K2^-T [t]x R K1^-1 with R = R2 R1^T, t = t2 - R t1.

    Returns:
        (3, 3) float64 F with x2^T F x1 = 0 for pixel coordinates x1 in image 1 and x2 in image 2 (not
        normalised; see :func:`normalize_fundamental`).
    """
    rotation = cam2.R @ cam1.R.T
    translation = cam2.t - rotation @ cam1.t
    essential = skew(translation) @ rotation
    return np.linalg.inv(cam2.K).T @ essential @ np.linalg.inv(cam1.K)


def normalize_fundamental(F: np.ndarray) -> np.ndarray:
    """(3, 3) F scaled to unit Frobenius norm with its largest-magnitude entry positive.

    Raises:
        ValueError: an all-zero or non-finite matrix.
    """
    matrix = np.asarray(F, dtype=np.float64)
    norm = float(np.linalg.norm(matrix))
    if matrix.shape != (3, 3) or not np.isfinite(norm) or norm == 0:
        raise InputError(f"cannot normalise fundamental matrix of shape {matrix.shape} and norm {norm}")
    matrix = matrix / norm
    return matrix if matrix.flat[np.argmax(np.abs(matrix))] > 0 else -matrix


def _format_numbers(values: np.ndarray) -> str:
    return " ".join(repr(float(v)) for v in np.asarray(values).reshape(-1))


def write_imc_cameras(scene_dir: str | Path, cameras: Mapping[str, Camera]) -> Path:
    """Write ``<scene_dir>/calibration.csv`` (numbers in shortest round-trip form), atomically."""
    rows = [
        [validate_image_id(i), _format_numbers(c.K), _format_numbers(c.R), _format_numbers(c.t)]
        for i, c in cameras.items()
    ]
    return write_csv_rows(Path(scene_dir) / CALIBRATION_FILE, CALIBRATION_COLUMNS, rows)


def write_imc(
    dataset: LandmarkDataset,
    root: str | Path,
    *,
    split: str = SPLIT,
    cameras: Mapping[str, Camera] | None = None,
) -> list[Path]:
    """Lay out one split as IMC scenes: copy ok images to ``<root>/<scene>/images/<id><ext>``.

    The scene of an image is ``label_names[landmark_id]`` (``landmark_<id>`` when unnamed). With ``cameras``
    (image_id -> Camera), each scene also gets a calibration.csv for its images that have a camera.

    Returns:
        The image paths written, in manifest order.

    Raises:
        ValueError: an ok row without landmark (-1), an unusable scene name, or an unsupported extension.
    """
    root = Path(root)
    manifest = dataset.manifest(split)
    ok = manifest[manifest["status"] == STATUS_OK]
    if (ok["landmark_id"] < 0).any():
        raise InputError(
            "IMC layout needs a scene (landmark) for every image; some ok rows have landmark_id -1"
        )
    sources = dataset.image_paths(split)
    written: list[Path] = []
    per_scene: dict[str, dict[str, Camera]] = {}
    for image_id, landmark_id, uri in zip(ok["image_id"], ok["landmark_id"], ok["uri"], strict=True):
        scene = validate_label_name(dataset.label_names.get(int(landmark_id), f"landmark_{landmark_id}"))
        extension = Path(uri).suffix.lower()
        if extension not in IMAGE_EXTENSIONS:
            raise InputError(
                f"image {image_id!r} has extension {extension!r}; expected one of {IMAGE_EXTENSIONS}"
            )
        target = root / scene / "images" / f"{image_id}{extension}"
        with atomic_path(target) as tmp:
            shutil.copyfile(sources[image_id], tmp)
        written.append(target)
        scene_cameras = per_scene.setdefault(scene, {})
        if cameras is not None and image_id in cameras:
            scene_cameras[image_id] = cameras[image_id]
    if cameras is not None:
        for scene, scene_cameras in per_scene.items():
            write_imc_cameras(root / scene, scene_cameras)
    return written


def read_all_imc_cameras(root: str | Path) -> dict[str, Camera]:
    """image_id -> Camera over every scene of ``root`` that has a calibration.csv."""
    cameras: dict[str, Camera] = {}
    for scene in scene_dirs(root):
        if (scene / CALIBRATION_FILE).is_file():
            cameras.update(read_imc_cameras(scene))
    return cameras
