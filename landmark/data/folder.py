"""Plain folder-per-landmark layout: ``<root>/<landmark name>/<image id>.jpg|jpeg|png``.

Landmark ids are the positions of the folder names in sorted order, so the same folders get the same ids.
Hidden folders and files (name starting with ".") and files with other extensions are skipped; images whose
file stem is not a safe id, or repeats an earlier one, are quarantined.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from landmark.errors import InputError
from landmark.data.atomic import atomic_path
from landmark.data.groundtruth import LandmarkDataset
from landmark.data.ids import is_safe_image_id
from landmark.data.manifest import STATUS_OK, make_manifest, quarantined_row

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
SPLIT = "train"


def is_image_file(path: Path) -> bool:
    """A visible regular file with a supported image extension (case-insensitive)."""
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def landmark_dirs(root: str | Path) -> list[Path]:
    """Visible sub-directories of ``root``, sorted by name (their positions are the landmark ids)."""
    return sorted(
        (p for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name
    )


def validate_label_name(name: str) -> str:
    """Return ``name`` if it can be a landmark folder name, else raise ValueError.

    Names may hold spaces and non-ASCII letters, but not path separators, NUL, a leading "." or "..".
    """
    if not name or name.startswith(".") or any(c in name for c in "/\\\x00"):
        raise InputError(
            f"landmark name {name!r} cannot be a folder name (empty, leading '.', or a path separator/NUL)"
        )
    return name


def read_folder(root: str | Path) -> LandmarkDataset:
    """Read a folder-per-landmark dataset into split "train".

    Returns:
        A dataset with one manifest ("train"): uri ``<name>/<file>``, landmark_id = index of the folder
        name in sorted order, ``label_names`` = id -> folder name.

    Raises:
        FileNotFoundError: ``root`` is not a directory.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"folder dataset root {root} is not a directory")
    dirs = landmark_dirs(root)
    label_names = {landmark_id: d.name for landmark_id, d in enumerate(dirs)}
    rows: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    skipped = 0
    for landmark_id, directory in enumerate(dirs):
        for path in sorted(directory.iterdir(), key=lambda p: p.name):
            if not is_image_file(path):
                skipped += 1
                continue
            image_id, uri = path.stem, f"{directory.name}/{path.name}"
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
    if skipped:
        logger.info(
            "%s: skipped %d entries that are not %s images", root, skipped, "/".join(IMAGE_EXTENSIONS)
        )
    return LandmarkDataset(root=root, manifests={SPLIT: make_manifest(rows)}, label_names=label_names)


def write_folder(dataset: LandmarkDataset, root: str | Path, *, split: str = SPLIT) -> list[Path]:
    """Lay out one split of a dataset as folders, copying each ok image to ``<root>/<name>/<id><ext>``.

    Every name in ``label_names`` gets a folder, even an empty one, so reading the result back gives the same
    landmark ids (when the names sort in id order, as they do for datasets read from folders or IMC).
    Labels without a name are written as ``landmark_<id>``. Files are copied atomically.

    Args:
        dataset: source dataset; its images must be local files.
        root: output directory.
        split: which manifest to write.

    Returns:
        The image paths written, in manifest order.

    Raises:
        ValueError: an ok row without landmark (-1), a label name that cannot be a folder, or an image whose
            extension is not one of :data:`IMAGE_EXTENSIONS`.
    """
    root = Path(root)
    manifest = dataset.manifest(split)
    ok = manifest[manifest["status"] == STATUS_OK]
    unlabelled = ok["landmark_id"] < 0
    if unlabelled.any():
        raise InputError(
            f"folder layout needs a landmark for every image; {int(unlabelled.sum())} ok rows have -1, "
            f"e.g. {list(ok.loc[unlabelled, 'image_id'][:5])}"
        )
    names = {int(k): validate_label_name(v) for k, v in dataset.label_names.items()}
    for landmark_id in sorted(set(ok["landmark_id"].tolist()) - set(names)):
        names[int(landmark_id)] = f"landmark_{landmark_id}"
    by_id = [names[k] for k in sorted(names)]
    if by_id != sorted(by_id):
        logger.warning(
            "label names are not in id order; reading %s back will number the landmarks differently", root
        )
    for name in names.values():
        (root / name).mkdir(parents=True, exist_ok=True)
    sources = dataset.image_paths(split)
    written = []
    for image_id, landmark_id, uri in zip(ok["image_id"], ok["landmark_id"], ok["uri"], strict=True):
        source = sources[image_id]
        extension = Path(uri).suffix.lower()
        if extension not in IMAGE_EXTENSIONS:
            raise InputError(
                f"image {image_id!r} has extension {extension!r}; expected one of {IMAGE_EXTENSIONS}"
            )
        target = root / names[int(landmark_id)] / f"{image_id}{extension}"
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
        written.append(target)
    return written
