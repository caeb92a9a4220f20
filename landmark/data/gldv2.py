"""Google Landmarks Dataset v2 layout: CSVs and ``<split>/<a>/<b>/<c>/<id>.jpg`` images.

Files: ``train.csv`` (id,url,landmark_id); ``index.csv`` and ``test.csv`` (id,url);
``recognition_solution*.csv`` (id,landmarks,Usage; landmarks space-separated, empty = not a landmark);
``retrieval_solution*.csv`` (id,images,Usage; images space-separated).
Malformed split rows never raise: they become quarantined manifest rows with a reason code (``malformed_row``,
``unsafe_id``, ``duplicate_id``, ``missing_file``). Problems in solution files are skipped and listed in
``LandmarkDataset.issues``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from landmark.errors import InputError
from landmark.data.csvtable import CsvTable, read_csv_table, write_csv_rows
from landmark.data.groundtruth import DatasetFormatError, LandmarkDataset, QueryTruth
from landmark.data.ids import is_safe_image_id, validate_image_id
from landmark.data.manifest import NO_LANDMARK, STATUS_OK, STATUS_QUARANTINED, format_reason, make_manifest
from landmark.data.revisitop import find_gnd_files, read_gnd, write_gnd

logger = logging.getLogger(__name__)

SPLITS = ("train", "index", "test")
SPLIT_COLUMNS: dict[str, tuple[str, ...]] = {
    "train": ("id", "url", "landmark_id"),
    "index": ("id", "url"),
    "test": ("id", "url"),
}
RECOGNITION_COLUMNS = ("id", "landmarks", "Usage")
RETRIEVAL_COLUMNS = ("id", "images", "Usage")
USAGES = ("Public", "Private", "Ignored")
DEFAULT_USAGE = "Public"

_NON_NEGATIVE_INT = re.compile(r"^[0-9]{1,18}$")  # up to 18 digits always fits int64
_MIN_ID_LENGTH = 3  # the layout nests by the first three characters
_EMPTY_LIST_TOKENS = ("", "None")  # GLDv2 writes "None" for retrieval queries without relevant images


def image_relpath(split: str, image_id: str) -> PurePosixPath:
    """Relative path of an image in the GLDv2 layout, e.g. ``train/0/1/2/0123abcd.jpg``.

    Raises:
        ValueError: for an unknown split, or an unsafe or too-short id.
    """
    return PurePosixPath(image_uri(split, image_id))


def image_uri(split: str, image_id: str) -> str:
    """:func:`image_relpath` as a POSIX string (the manifest ``uri``), e.g. ``"train/0/1/2/0123abcd.jpg"``.

    Raises:
        ValueError: for an unknown split, or an unsafe or too-short id.
    """
    if split not in SPLITS:
        raise InputError(f"unknown GLDv2 split {split!r}; expected one of {SPLITS}")
    validate_image_id(image_id)
    if len(image_id) < _MIN_ID_LENGTH:
        raise InputError(f"GLDv2 image id {image_id!r} is shorter than the 3 characters the layout needs")
    return _unchecked_uri(split, image_id)


def _unchecked_uri(split: str, image_id: str) -> str:
    # Plain string formatting: PurePosixPath costs ~20 us a row, minutes over GLDv2's 4M train rows.
    return f"{split}/{image_id[0]}/{image_id[1]}/{image_id[2]}/{image_id}.jpg"


def _is_usable_id(image_id: str) -> bool:
    return len(image_id) >= _MIN_ID_LENGTH and is_safe_image_id(image_id)


def _uris(split: str, ids: pd.Series) -> pd.Series:
    """Vectorised :func:`image_uri` for already validated ids."""
    if ids.empty:
        return ids.astype(object)
    text = ids.str
    return split + "/" + text[0] + "/" + text[1] + "/" + text[2] + "/" + ids + ".jpg"


def _set_reasons(reasons: np.ndarray, mask: np.ndarray, code: str, detail: Callable[[int], str]) -> None:
    for k in np.flatnonzero(mask):
        reasons[k] = format_reason(code, detail(int(k)))


def _split_manifest(table: CsvTable, split: str) -> pd.DataFrame:
    """Manifest rows for one split CSV, in file order; bad rows quarantined with a reason code.

    Vectorised over rows: GLDv2's train.csv has 4.1M of them.
    """
    ids = pd.Series(table.columns["id"], dtype=object)
    lines = np.asarray(table.lines, dtype=np.int64)
    reasons = np.full(len(ids), "", dtype=object)
    usable = ids.map(_is_usable_id).to_numpy(dtype=bool)
    _set_reasons(reasons, ~usable, "unsafe_id", lambda k: f"{ids[k]!r} (line {lines[k]})")

    landmarks = np.full(len(ids), NO_LANDMARK, dtype=np.int64)
    if "landmark_id" in table.columns:
        labels = pd.Series(table.columns["landmark_id"], dtype=object)
        numeric = labels.str.fullmatch(_NON_NEGATIVE_INT).fillna(False).to_numpy(dtype=bool)
        landmarks[numeric] = labels[numeric].astype(np.int64).to_numpy()
        _set_reasons(
            reasons,
            usable & ~numeric,
            "malformed_row",
            lambda k: f"line {lines[k]}: landmark_id {labels[k]!r} is not a non-negative integer",
        )

    candidate = reasons == ""
    duplicate = candidate & ids.where(candidate).duplicated(keep="first").to_numpy(dtype=bool)
    first_line = dict(zip(ids[candidate & ~duplicate], lines[candidate & ~duplicate], strict=True))
    _set_reasons(
        reasons,
        duplicate,
        "duplicate_id",
        lambda k: f"{ids[k]!r} on line {lines[k]} (first on line {first_line[ids[k]]})",
    )

    ok = reasons == ""
    uris = np.full(len(ids), "", dtype=object)
    uris[ok] = _uris(split, ids[ok]).to_numpy()
    frame = pd.DataFrame(
        {
            "image_id": ids,
            "landmark_id": landmarks,
            "uri": uris,
            "url": pd.Series(table.columns["url"], dtype=object),
            "status": np.where(ok, STATUS_OK, STATUS_QUARANTINED).astype(object),
            "reason": reasons,
        }
    )
    id_col = table.header.index("id")
    malformed = pd.DataFrame(
        {
            "image_id": [
                fields[id_col].strip() if len(fields) > id_col else "" for _, fields in table.malformed
            ],
            "status": STATUS_QUARANTINED,
            "reason": [
                format_reason(
                    "malformed_row", f"line {line}: expected {len(table.header)} fields, got {len(fields)}"
                )
                for line, fields in table.malformed
            ],
        }
    )
    if not malformed.empty:
        all_lines = np.concatenate([lines, [line for line, _ in table.malformed]])
        frame = pd.concat([frame, malformed], ignore_index=True).iloc[np.argsort(all_lines, kind="stable")]
    return make_manifest(frame)


def _quarantine_missing_files(manifest: pd.DataFrame, root: Path) -> pd.DataFrame:
    ok = manifest["status"] == STATUS_OK
    missing = ok & ~manifest["uri"].map(lambda uri: (root / uri).is_file()).astype(bool)
    if not missing.any():
        return manifest
    frame = manifest.copy()
    frame.loc[missing, "status"] = STATUS_QUARANTINED
    frame.loc[missing, "reason"] = "missing_file: " + frame.loc[missing, "uri"]
    frame.loc[missing, "uri"] = ""
    return make_manifest(frame)


def _version(path: Path) -> tuple[int, ...]:
    """Version numbers in a file name: recognition_solution_v2.1.csv -> (2, 1); no version -> ()."""
    return tuple(int(n) for n in re.findall(r"\d+", path.stem))


def _latest(root: Path, pattern: str) -> Path | None:
    """The newest file matching ``pattern`` by the version in its name (``_v2.1`` beats ``_v2`` beats none)."""
    matches = sorted(root.glob(pattern), key=lambda p: (_version(p), p.name))
    if len(matches) > 1:
        logger.info("several %s files in %s; reading %s", pattern, root, matches[-1].name)
    return matches[-1] if matches else None


@dataclass
class _Solution:
    answers: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    usage: dict[str, str] = field(default_factory=dict)
    issues: list[str] = field(default_factory=list)


def _parse_recognition(tokens: list[str]) -> tuple[int, ...] | None:
    if not all(_NON_NEGATIVE_INT.match(t) for t in tokens):
        return None
    return tuple(int(t) for t in tokens)


def _parse_retrieval(tokens: list[str]) -> tuple[str, ...] | None:
    if not all(is_safe_image_id(t) for t in tokens):
        return None
    return tuple(tokens)


def _read_solution(path: Path, task: str) -> _Solution:
    """Parse a recognition or retrieval solution; bad lines are skipped and described in ``issues``."""
    columns = RECOGNITION_COLUMNS if task == "recognition" else RETRIEVAL_COLUMNS
    table = read_csv_table(path, columns)
    solution = _Solution()
    for line, fields in table.malformed:
        solution.issues.append(f"{path.name}:{line}: expected {len(table.header)} fields, got {len(fields)}")
    ids, answers, usages = (table.columns[c] for c in columns)
    for k, line in enumerate(table.lines):
        test_id, usage = ids[k], usages[k]
        where = f"{path.name}:{line}"
        if not is_safe_image_id(test_id):
            solution.issues.append(f"{where}: unsafe_id {test_id!r}")
            continue
        if usage not in USAGES:
            solution.issues.append(f"{where}: Usage {usage!r} is not one of {USAGES}")
            continue
        if test_id in solution.usage:
            solution.issues.append(f"{where}: duplicate_id {test_id!r}")
            continue
        tokens = [] if answers[k] in _EMPTY_LIST_TOKENS else answers[k].split()
        parsed = _parse_recognition(tokens) if task == "recognition" else _parse_retrieval(tokens)
        if parsed is None:
            solution.issues.append(f"{where}: malformed {columns[1]} {answers[k]!r}")
            continue
        solution.answers[test_id] = parsed
        solution.usage[test_id] = usage
    return solution


def _read_retrieval_truth(root: Path) -> tuple[QueryTruth, ...]:
    gnd_files = find_gnd_files(root)
    if len(gnd_files) > 1:
        raise DatasetFormatError(
            f"{root}: several ground-truth pickles {[p.name for p in gnd_files]}; keep one"
        )
    if not gnd_files:
        return ()
    return read_gnd(gnd_files[0])[2]


def read_gldv2(root: str | Path, *, check_files: bool = False) -> LandmarkDataset:
    """Read a GLDv2-layout dataset: split CSVs, solutions, and an optional ``gnd_*.pkl``.

    Args:
        root: directory holding the CSVs (and ``<split>/a/b/c/<id>.jpg`` images).
        check_files: quarantine ok rows whose image file is missing (reason ``missing_file``).

    Returns:
        A dataset with one manifest per split CSV present, solutions, usage, and ``issues`` listing skipped
        solution lines.

    Raises:
        FileNotFoundError: ``root`` is not a directory, or it holds none of train.csv/index.csv/test.csv.
        DatasetFormatError: a CSV missing required columns.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"GLDv2 root {root} is not a directory")
    manifests: dict[str, pd.DataFrame] = {}
    for split, columns in SPLIT_COLUMNS.items():
        path = root / f"{split}.csv"
        if path.is_file():
            manifest = _split_manifest(read_csv_table(path, columns), split)
            manifests[split] = _quarantine_missing_files(manifest, root) if check_files else manifest
    if not manifests:
        raise FileNotFoundError(f"{root} holds none of train.csv, index.csv, test.csv")

    issues: list[str] = []
    recognition, retrieval = _Solution(), _Solution()
    recognition_path = _latest(root, "recognition_solution*.csv")
    if recognition_path is not None:
        recognition = _read_solution(recognition_path, "recognition")
    retrieval_path = _latest(root, "retrieval_solution*.csv")
    if retrieval_path is not None:
        retrieval = _read_solution(retrieval_path, "retrieval")
    issues.extend(recognition.issues + retrieval.issues)
    for split, manifest in manifests.items():
        bad = int((manifest["status"] != STATUS_OK).sum())
        if bad:
            logger.warning("%s: %d of %d rows quarantined", root / f"{split}.csv", bad, len(manifest))
    if issues:
        logger.warning("%s: %d solution lines skipped, e.g. %s", root, len(issues), issues[0])
    return LandmarkDataset(
        root=root,
        manifests=manifests,
        retrieval=_read_retrieval_truth(root),
        retrieval_solution={k: tuple(str(v) for v in vs) for k, vs in retrieval.answers.items()},
        recognition_solution={k: tuple(int(v) for v in vs) for k, vs in recognition.answers.items()},
        usage={**recognition.usage, **retrieval.usage},
        recognition_usage=dict(recognition.usage),
        issues=tuple(issues),
    )


def _split_rows(manifest: pd.DataFrame, split: str) -> list[list[str]]:
    ok = manifest[manifest["status"] == STATUS_OK]
    if split != "train":
        return [[i, u] for i, u in zip(ok["image_id"], ok["url"], strict=True)]
    unlabelled = ok["landmark_id"] < 0
    if unlabelled.any():
        examples = list(ok.loc[unlabelled, "image_id"][:5])
        raise InputError(
            f"GLDv2 train rows need a landmark_id >= 0; {int(unlabelled.sum())} have -1, e.g. {examples}"
        )
    return [[i, u, str(lm)] for i, u, lm in zip(ok["image_id"], ok["url"], ok["landmark_id"], strict=True)]


def _usage_of(test_id: str, usage: Mapping[str, str]) -> str:
    value = usage.get(test_id, DEFAULT_USAGE)
    if value not in USAGES:
        raise InputError(f"usage of {test_id!r} is {value!r}; expected one of {USAGES}")
    return value


def write_gldv2_csvs(
    root: str | Path,
    manifests: Mapping[str, pd.DataFrame],
    *,
    recognition_solution: Mapping[str, Sequence[int]] | None = None,
    retrieval_solution: Mapping[str, Sequence[str]] | None = None,
    usage: Mapping[str, str] | None = None,
    recognition_usage: Mapping[str, str] | None = None,
) -> list[Path]:
    """Write the GLDv2 CSVs (not the images) atomically, one per split and solution given.

    Only ok manifest rows are written. Solutions are written as ``recognition_solution.csv`` and
    ``retrieval_solution.csv``; empty answers are written as an empty field. Ids without a usage get "Public".

    Args:
        root: output directory.
        manifests: split ("train", "index", "test") -> manifest.
        recognition_solution: test id -> landmark ids.
        retrieval_solution: test id -> relevant index ids.
        usage: test id -> Usage for the retrieval solution (and recognition, unless in recognition_usage).
        recognition_usage: test id -> Usage for the recognition solution.

    Returns:
        The paths written.

    Raises:
        ValueError: an unknown split, a train row without landmark, an unsafe id, or a bad Usage value.
    """
    root = Path(root)
    written = []
    for split, manifest in manifests.items():
        if split not in SPLIT_COLUMNS:
            raise InputError(f"unknown GLDv2 split {split!r}; expected one of {SPLITS}")
        rows = _split_rows(make_manifest(manifest), split)
        written.append(write_csv_rows(root / f"{split}.csv", SPLIT_COLUMNS[split], rows))
    usage = usage or {}
    if recognition_solution is not None:
        rec_usage = {**usage, **(recognition_usage or {})}
        rows = [
            [validate_image_id(t), " ".join(str(int(v)) for v in vs), _usage_of(t, rec_usage)]
            for t, vs in recognition_solution.items()
        ]
        written.append(write_csv_rows(root / "recognition_solution.csv", RECOGNITION_COLUMNS, rows))
    if retrieval_solution is not None:
        rows = [
            [validate_image_id(t), " ".join(validate_image_id(v) for v in vs), _usage_of(t, usage)]
            for t, vs in retrieval_solution.items()
        ]
        written.append(write_csv_rows(root / "retrieval_solution.csv", RETRIEVAL_COLUMNS, rows))
    return written


def write_gldv2(dataset: LandmarkDataset, root: str | Path) -> list[Path]:
    """Write a dataset's CSVs (and ``gnd_gldv2.pkl`` when it has revisitop-style ``retrieval``) to ``root``.

    Solutions are written when the dataset has any. Images are not written.

    Returns:
        The paths written.
    """
    root = Path(root)
    written = write_gldv2_csvs(
        root,
        dataset.manifests,
        recognition_solution=dataset.recognition_solution or None,
        retrieval_solution=dataset.retrieval_solution or None,
        usage=dataset.usage,
        recognition_usage=dataset.recognition_usage,
    )
    if dataset.retrieval:
        index = dataset.manifest("index")
        db_ids = list(index.loc[index["status"] == STATUS_OK, "image_id"])
        written.append(write_gnd(root / "gnd_gldv2.pkl", db_ids, dataset.retrieval))
    return written
