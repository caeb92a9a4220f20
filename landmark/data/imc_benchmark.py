"""Revisited-format benchmarks from IMC photos with the pose-based protocol of :mod:`landmark.data.imc_protocol`.

One set per held-out scene: ``<out>/imc_<scene>/gnd_imc_<scene>.pkl`` + ``jpg/<image_id>.jpg`` (+ the photos'
LICENSE.txt). Its queries are photos of that scene only (bbx = the whole image, no crop); its database is every
photo of every scene except those queries, so the other scenes' photos are distractors. Image ids are the IMC
ids, the same in every set, so descriptors cached by id are shared between sets.

Leave-one-out sets (``queries_per_scene="all"``: every eligible photo a query) keep the queries in the
database, each query's own photo being junk to it: many more queries for the same database, so differences of a
point or two between models can be resolved (a paired interval over 348 Brandenburg Gate queries instead of 20).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from landmark.errors import InputError
from landmark.data.atomic import atomic_path
from landmark.data.groundtruth import QueryTruth
from landmark.data.images import read_image_size
from landmark.data.imc import read_imc_cameras, read_imc_pairs, scene_dirs
from landmark.data.imc_protocol import (
    JUNK,
    OverlapThresholds,
    choose_queries,
    covisibility_matrix,
    query_truths,
    scene_pair_classes,
)
from landmark.data.revisitop import gnd_path, image_uri, write_gnd

logger = logging.getLogger(__name__)

SET_PREFIX = "imc_"
LICENSE_FILE = "LICENSE.txt"
JPEG_SUFFIXES = (".jpg", ".jpeg")


@dataclass(frozen=True, eq=False)
class ImcScene:
    """One scene's photos and the class code of every pair.

    Attributes:
        name: scene directory name.
        image_ids: (n,) ids, cameras first (calibration order), then photos without a camera (sorted).
        paths: (n,) image files.
        codes: (n, n) int8 pair codes (:mod:`landmark.data.imc_protocol`); a photo without a camera is junk to
            every other photo of the scene.
    """

    name: str
    image_ids: tuple[str, ...]
    paths: tuple[Path, ...]
    codes: np.ndarray


@dataclass(frozen=True)
class ImcSetSummary:
    """What one written set holds (counts of list entries summed over queries)."""

    name: str
    held_out: str
    queries: int
    database: int
    distractors: int
    easy: int
    hard: int
    junk: int
    queries_without_hard: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def read_imc_scene(scene_dir: str | Path, thresholds: OverlapThresholds | None = None) -> ImcScene:
    """Photos, cameras and covisibility of one scene, classified pair by pair.

    Raises:
        FileNotFoundError: no calibration.csv.
        ValueError: a photo that is not a JPEG, fewer than two cameras with photos, or a degenerate scene.
        DatasetFormatError: malformed calibration or covisibility files.
    """
    scene_dir = Path(scene_dir)
    photos = {p.stem: p for p in sorted((scene_dir / "images").iterdir()) if p.is_file()}
    not_jpeg = [p.name for p in photos.values() if p.suffix.lower() not in JPEG_SUFFIXES]
    if not_jpeg:
        raise InputError(f"{scene_dir}: Revisited sets need JPEG photos, got {not_jpeg[:5]}")
    cameras = {i: c for i, c in read_imc_cameras(scene_dir).items() if i in photos}
    if len(cameras) < 2:
        raise InputError(f"{scene_dir}: needs at least two photos with cameras, found {len(cameras)}")
    without_camera = sorted(set(photos) - set(cameras))
    if without_camera:
        logger.warning(
            "%s: %d photos without a camera are junk for the scene", scene_dir, len(without_camera)
        )
    camera_ids = list(cameras)
    pairs = read_imc_pairs(scene_dir)
    known = pairs["id1"].isin(camera_ids) & pairs["id2"].isin(camera_ids)
    covisibility = (
        covisibility_matrix(
            camera_ids,
            list(zip(pairs.loc[known, "id1"], pairs.loc[known, "id2"], strict=True)),
            pairs.loc[known, "covisibility"].tolist(),
        )
        if len(pairs)
        else None
    )
    codes = np.full((len(photos), len(photos)), JUNK, dtype=np.int8)
    codes[: len(camera_ids), : len(camera_ids)] = scene_pair_classes(
        np.stack([cameras[i].R for i in camera_ids]),
        np.stack([cameras[i].t for i in camera_ids]),
        covisibility,
        thresholds,
    )
    np.fill_diagonal(codes, -1)
    ids = (*camera_ids, *without_camera)
    return ImcScene(scene_dir.name, ids, tuple(photos[i] for i in ids), codes)


def whole_image_boxes(
    scene: ImcScene, indices: Sequence[int]
) -> dict[str, tuple[float, float, float, float]]:
    """bbx (0, 0, width, height) of the photos at ``indices`` (sizes read from the file headers)."""
    boxes = {}
    for k in indices:
        width, height = read_image_size(scene.paths[k])
        boxes[scene.image_ids[k]] = (0.0, 0.0, float(width), float(height))
    return boxes


def scene_seed(seed: int, position: int) -> int:
    """Seed of the query draw of the scene at ``position`` (sorted order): a hash of (seed, position)."""
    return int(np.random.SeedSequence([seed, position]).generate_state(1)[0])


def _place_image(source: Path, target: Path) -> None:
    """Hard-link ``source`` at ``target`` (copy across file systems); an existing same-size file is kept."""
    if target.exists() and target.stat().st_size == source.stat().st_size:
        return
    with atomic_path(target) as tmp:
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)


def write_imc_set(
    out_root: Path,
    name: str,
    scenes: Sequence[ImcScene],
    truths: Sequence[QueryTruth],
    license_file: Path | None = None,
    *,
    leave_one_out: bool = False,
) -> list[str]:
    """Write one set: jpg/ (database and query photos), gnd pickle, LICENSE.txt; returns the database ids.

    The queries are left out of the database unless ``leave_one_out``.

    Raises:
        ValueError: an image id that appears in two scenes.
    """
    query_ids = set() if leave_one_out else {t.query_id for t in truths}
    paths: dict[str, Path] = {}
    for scene in scenes:
        for image_id, path in zip(scene.image_ids, scene.paths, strict=True):
            if image_id in paths:
                raise InputError(f"image id {image_id!r} is in two scenes ({paths[image_id]} and {path})")
            paths[image_id] = path
    db_ids = [i for i in paths if i not in query_ids]
    set_dir = out_root / name
    for image_id, path in paths.items():
        _place_image(path, set_dir / image_uri(image_id))
    if license_file is not None and license_file.is_file():
        shutil.copyfile(license_file, set_dir / LICENSE_FILE)
    write_gnd(gnd_path(out_root, name), db_ids, truths)
    return db_ids


def build_imc_sets(
    imc_root: str | Path,
    out_root: str | Path,
    *,
    queries_per_scene: int | Literal["all"],
    seed: int,
    thresholds: OverlapThresholds | None = None,
) -> list[ImcSetSummary]:
    """Write one Revisited-format set ``imc_<scene>`` per scene of ``imc_root`` (module docstring).

    Args:
        imc_root: IMC layout (``<scene>/images``, ``<scene>/calibration.csv``, optional covisibility).
        out_root: where the sets go (``<out_root>/imc_<scene>/``); rewriting is idempotent.
        queries_per_scene: queries drawn per held-out scene and left out of the database (fewer when fewer are
            eligible); "all": every eligible photo, kept in the database and junk to itself (leave-one-out).
        seed: seeds the query draws.
        thresholds: the protocol's limits (default :class:`OverlapThresholds`).

    Returns:
        One summary per set, in scene order.

    Raises:
        ValueError: ``queries_per_scene`` < 1, fewer than two scenes, or a scene without eligible queries.
        FileNotFoundError: ``imc_root`` is not a directory.
    """
    leave_one_out = queries_per_scene == "all"
    count = None if leave_one_out else int(queries_per_scene)
    if count is not None and count < 1:
        raise InputError(f"queries_per_scene must be >= 1, got {queries_per_scene}")
    root = Path(imc_root)
    if not root.is_dir():
        raise FileNotFoundError(f"IMC root {root} is not a directory")
    scenes = [read_imc_scene(d, thresholds) for d in scene_dirs(root)]
    if len(scenes) < 2:
        raise InputError(
            f"{root}: needs at least two scenes (the others are distractors), found {len(scenes)}"
        )
    summaries = []
    for position, scene in enumerate(scenes):
        chosen = choose_queries(scene.codes, count, scene_seed(seed, position)).tolist()
        if len(chosen) == 0:
            raise InputError(f"scene {scene.name!r} has no photo with both an easy and a hard positive")
        truths = query_truths(
            scene.image_ids,
            scene.codes,
            chosen,
            whole_image_boxes(scene, chosen),
            leave_one_out=leave_one_out,
        )
        name = f"{SET_PREFIX}{scene.name}"
        db_ids = write_imc_set(
            Path(out_root), name, scenes, truths, root / LICENSE_FILE, leave_one_out=leave_one_out
        )
        summaries.append(
            ImcSetSummary(
                name=name,
                held_out=scene.name,
                queries=len(truths),
                database=len(db_ids),
                distractors=sum(len(s.image_ids) for s in scenes if s is not scene),
                easy=sum(len(t.easy) for t in truths),
                hard=sum(len(t.hard) for t in truths),
                junk=sum(len(t.junk) for t in truths),
                queries_without_hard=sum(1 for t in truths if not t.hard),
            )
        )
    return summaries
