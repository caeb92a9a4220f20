"""One entry point over every dataset format, with detection of the layout on disk."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from landmark.errors import InputError
from landmark.data.catalog import is_catalog, read_catalog
from landmark.data.folder import is_image_file, landmark_dirs, read_folder, write_folder
from landmark.data.gldv2 import read_gldv2, write_gldv2
from landmark.data.groundtruth import DatasetFormatError, LandmarkDataset
from landmark.data.imc import CALIBRATION_FILE, read_imc, write_imc
from landmark.data.revisitop import read_revisitop, write_revisitop

Format = Literal["gldv2", "revisitop", "folder", "imc"]
FORMATS: tuple[Format, ...] = ("gldv2", "revisitop", "folder", "imc")
ReadFormat = Literal["auto", "catalog", "gldv2", "revisitop", "folder", "imc"]
READ_FORMATS: tuple[str, ...] = ("catalog", *FORMATS)


def _revisitop_name(root: Path) -> tuple[Path, str] | None:
    """(parent dir, name) of a revisitop dataset at ``root/<name>`` or at ``root`` itself, if exactly one."""
    if (root / f"gnd_{root.name}.pkl").is_file():
        return root.parent, root.name
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and (p / f"gnd_{p.name}.pkl").is_file())
    if len(found) > 1:
        raise DatasetFormatError(f"{root} holds several revisitop datasets {found}; pass name=")
    return (root, found[0]) if found else None


def detect_format(root: str | Path) -> Format | Literal["catalog"]:
    """Guess the format of the dataset at ``root``.

    Rules, in order: ``manifests/*.parquet`` -> catalog (an ingestion root or its validated view); ``train.csv`` or ``index.csv`` -> gldv2; ``<name>/gnd_<name>.pkl`` (or ``gnd_<root
    name>.pkl``) -> revisitop; ``<scene>/images`` with ``<scene>/calibration.csv`` -> imc; sub-folders holding
    images -> folder; ``<scene>/images`` holding images without any calibration -> imc.

    Raises:
        FileNotFoundError: ``root`` is not a directory.
        DatasetFormatError: nothing matches (the message lists what was looked for).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} is not a directory")
    if is_catalog(root):
        return "catalog"
    if (root / "train.csv").is_file() or (root / "index.csv").is_file():
        return "gldv2"
    if _revisitop_name(root) is not None:
        return "revisitop"
    subdirs = landmark_dirs(root)
    if any((d / "images").is_dir() and (d / CALIBRATION_FILE).is_file() for d in subdirs):
        return "imc"
    if any(is_image_file(f) for d in subdirs for f in d.iterdir()):
        return "folder"
    if any(
        (d / "images").is_dir() and any(is_image_file(f) for f in (d / "images").iterdir()) for d in subdirs
    ):
        return "imc"  # scenes without calibration (e.g. written by write_imc without cameras)
    raise DatasetFormatError(
        f"cannot detect the dataset format of {root}: no manifests/*.parquet (catalog), "
        "no train.csv/index.csv (gldv2), "
        "no <name>/gnd_<name>.pkl (revisitop), no <scene>/images + calibration.csv (imc), "
        "and no <landmark>/<image>.jpg|jpeg|png (folder)"
    )


def read_dataset(
    root: str | Path,
    fmt: ReadFormat | str = "auto",
    name: str | None = None,
) -> LandmarkDataset:
    """Read a dataset in any supported format.

    Args:
        root: dataset directory (for revisitop: the directory holding ``<name>/``, or ``<name>/`` itself).
        fmt: the format, or "auto" to detect it with :func:`detect_format`. ``catalog`` (an ingestion root
            or the validated view) gives its ok rows only, with the ground truth its sources carried.
        name: revisitop dataset name (e.g. "roxford5k"); found automatically when there is only one.

    Raises:
        ValueError: an unknown ``fmt``.
        FileNotFoundError, DatasetFormatError: as the format readers and :func:`detect_format`.
    """
    root = Path(root)
    if fmt not in ("auto", *READ_FORMATS):
        raise InputError(f"unknown dataset format {fmt!r}; expected 'auto' or one of {READ_FORMATS}")
    resolved = detect_format(root) if fmt == "auto" else fmt
    if resolved == "catalog":
        return read_catalog(root)
    if resolved == "gldv2":
        return read_gldv2(root)
    if resolved == "imc":
        return read_imc(root)
    if resolved == "folder":
        return read_folder(root)
    if name is not None:
        return read_revisitop(root, name)
    located = _revisitop_name(root) if root.is_dir() else None
    if located is None:
        raise DatasetFormatError(f"{root}: no <name>/gnd_<name>.pkl found; pass the revisitop dataset name")
    return read_revisitop(*located)


def write_dataset(
    dataset: LandmarkDataset, root: str | Path, fmt: Format, name: str | None = None
) -> list[Path]:
    """Write a dataset in one format (see each writer; gldv2 and revisitop write no images).

    Raises:
        ValueError: an unknown ``fmt``, or revisitop without ``name``.
    """
    if fmt == "gldv2":
        return write_gldv2(dataset, root)
    if fmt == "revisitop":
        if name is None:
            raise InputError("writing revisitop needs the dataset name (gnd_<name>.pkl)")
        return [write_revisitop(dataset, root, name)]
    if fmt == "folder":
        return write_folder(dataset, root)
    if fmt == "imc":
        return write_imc(dataset, root)
    raise InputError(f"unknown dataset format {fmt!r}; expected one of {FORMATS}")
