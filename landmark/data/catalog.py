"""The catalog: the ingestion root read as a dataset, and the validated view every later stage reads.

A catalog directory holds

- ``manifests/<split>.parquet``: every row ingestion ever wrote (ok and quarantined, see
  :mod:`landmark.data.ingest`);
- ``groundtruth/retrieval.parquet``: revisited-Oxford/Paris-style truth per query (query_id, easy, hard, junk,
  bbox) and ``groundtruth/solution.parquet``: GLDv2-style solutions per test image (retrieval, recognition,
  usage), merged from every source batch that carried them (a later batch's row for the same id wins);
- images under ``images/`` (local store) or ``s3://`` uris (the S3 store), content-addressed by SHA-1.

The *validated view* (``paths.catalog``, written by ``landmark validate`` once the gate passed) is a catalog
holding only the ok rows and the ground truth, plus ``catalog.json`` naming the directory its relative uris
resolve against (the ingestion root). Its bytes change only when the ok rows or the truth change, so DVC stages
that depend on it rerun only when there is something new to learn from.

Reading a catalog (:func:`read_catalog`) returns ok rows only, and ground truth restricted to what is in the
catalog: a query needs to be an ok test image, its positives and junk are cut to ok index images, and a query
left without positives is dropped (its landmark's index photos have not arrived yet).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from landmark.data.atomic import atomic_directory, atomic_path
from landmark.data.groundtruth import DATASET_SPLITS, DatasetFormatError, LandmarkDataset, QueryTruth
from landmark.data.manifest import STATUS_OK, manifest_path, read_manifest, write_manifest

MANIFESTS_DIR = "manifests"
GROUNDTRUTH_DIR = "groundtruth"
RETRIEVAL_FILE = "retrieval.parquet"
SOLUTION_FILE = "solution.parquet"
VIEW_FILE = "catalog.json"
BBOX_FIELDS = ("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1")

RETRIEVAL_COLUMNS = ("query_id", "easy", "hard", "junk", *BBOX_FIELDS)
SOLUTION_COLUMNS = ("image_id", "retrieval", "recognition", "usage", "recognition_usage")


def is_catalog(root: str | Path) -> bool:
    """True when ``root`` holds ``manifests/*.parquet`` (an ingestion root or a validated view)."""
    manifests = Path(root) / MANIFESTS_DIR
    return manifests.is_dir() and any(manifests.glob("*.parquet"))


# --- ground truth tables ------------------------------------------------------------------------------------


def retrieval_table(queries: Iterable[QueryTruth]) -> pd.DataFrame:
    """One row per query: ids as lists of strings, the bbox as four floats (NaN = whole image)."""
    rows = []
    for q in queries:
        box = q.bbox if q.bbox is not None else (np.nan,) * 4
        rows.append(
            {"query_id": q.query_id, "easy": list(q.easy), "hard": list(q.hard), "junk": list(q.junk)}
            | dict(zip(BBOX_FIELDS, box, strict=True))
        )
    return pd.DataFrame(rows, columns=list(RETRIEVAL_COLUMNS))


def solution_table(dataset: LandmarkDataset) -> pd.DataFrame:
    """One row per test id that has a GLDv2 retrieval or recognition solution (None where it has not)."""
    ids = sorted(set(dataset.retrieval_solution) | set(dataset.recognition_solution))
    rows = [
        {
            "image_id": i,
            "retrieval": list(dataset.retrieval_solution[i]) if i in dataset.retrieval_solution else None,
            "recognition": [int(v) for v in dataset.recognition_solution[i]]
            if i in dataset.recognition_solution
            else None,
            "usage": dataset.usage.get(i, ""),
            "recognition_usage": dataset.recognition_usage.get(i, ""),
        }
        for i in ids
    ]
    return pd.DataFrame(rows, columns=list(SOLUTION_COLUMNS))


def _read_table(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    if not path.is_file():
        return pd.DataFrame(columns=list(columns))
    frame = pd.read_parquet(path)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DatasetFormatError(f"{path}: missing columns {missing}")
    return frame[list(columns)]


def _merge(old: pd.DataFrame, new: pd.DataFrame, key: str) -> pd.DataFrame:
    """Rows of ``old`` and ``new``, one per ``key`` (``new`` wins), sorted by key for stable bytes."""
    frames = [f for f in (old, new) if not f.empty]
    if not frames:
        return new.iloc[0:0]
    merged = pd.concat(frames, ignore_index=True).drop_duplicates(subset=key, keep="last")
    return merged.sort_values(key, kind="stable").reset_index(drop=True)


def _write_table(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def merge_groundtruth(root: str | Path, dataset: LandmarkDataset) -> dict[str, int]:
    """Add the ground truth ``dataset`` carries to the catalog at ``root`` (same id: the new row wins).

    Returns:
        Rows now stored per table (``retrieval``, ``solution``).
    """
    truth_dir = Path(root) / GROUNDTRUTH_DIR
    counts = {}
    for name, new, key, columns in (
        (RETRIEVAL_FILE, retrieval_table(dataset.retrieval), "query_id", RETRIEVAL_COLUMNS),
        (SOLUTION_FILE, solution_table(dataset), "image_id", SOLUTION_COLUMNS),
    ):
        path = truth_dir / name
        old = _read_table(path, columns)
        if new.empty and path.is_file():
            counts[name.removesuffix(".parquet")] = len(old)
            continue
        merged = _merge(old, new, key)
        _write_table(merged, path)
        counts[name.removesuffix(".parquet")] = len(merged)
    return counts


def groundtruth_counts(root: str | Path) -> dict[str, int]:
    """Rows in the catalog's ground-truth tables (``retrieval``, ``solution``; 0 for a missing table)."""
    truth_dir = Path(root) / GROUNDTRUTH_DIR
    return {
        name.removesuffix(".parquet"): len(_read_table(truth_dir / name, columns))
        for name, columns in ((RETRIEVAL_FILE, RETRIEVAL_COLUMNS), (SOLUTION_FILE, SOLUTION_COLUMNS))
    }


def _ids(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if value is not None else ()


def _bbox(row: Mapping[Any, Any]) -> tuple[float, float, float, float] | None:
    box = tuple(float(row[c]) for c in BBOX_FIELDS)
    return None if any(np.isnan(v) for v in box) else (box[0], box[1], box[2], box[3])


def restrict_queries(
    table: pd.DataFrame, test_ids: set[str], index_ids: set[str]
) -> tuple[QueryTruth, ...]:
    """Queries that are ok test images, their positives/junk cut to ok index images; queries left without a
    positive are dropped (nothing in the catalog to find yet)."""
    queries = []
    for row in table.to_dict("records"):
        if row["query_id"] not in test_ids:
            continue
        easy = tuple(i for i in _ids(row["easy"]) if i in index_ids)
        hard = tuple(i for i in _ids(row["hard"]) if i in index_ids)
        if not easy and not hard:
            continue
        junk = tuple(i for i in _ids(row["junk"]) if i in index_ids)
        queries.append(QueryTruth(str(row["query_id"]), easy, hard, junk, _bbox(row)))
    return tuple(queries)


def restrict_solutions(
    table: pd.DataFrame, test_ids: set[str], index_ids: set[str]
) -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[int, ...]], dict[str, str], dict[str, str]]:
    """(retrieval_solution, recognition_solution, usage, recognition_usage) of the ok test images; retrieval
    answers are cut to ok index images, and a landmark query left with none is dropped from retrieval."""
    retrieval: dict[str, tuple[str, ...]] = {}
    recognition: dict[str, tuple[int, ...]] = {}
    usage: dict[str, str] = {}
    recognition_usage: dict[str, str] = {}
    for row in table.to_dict("records"):
        image_id = str(row["image_id"])
        if image_id not in test_ids:
            continue
        if row["retrieval"] is not None:
            given = _ids(row["retrieval"])
            kept = tuple(i for i in given if i in index_ids)
            if kept or not given:
                retrieval[image_id] = kept
                if row["usage"]:
                    usage[image_id] = str(row["usage"])
        if row["recognition"] is not None:
            recognition[image_id] = tuple(int(v) for v in row["recognition"])
            if row["recognition_usage"]:
                recognition_usage[image_id] = str(row["recognition_usage"])
    return retrieval, recognition, usage, recognition_usage


# --- reading --------------------------------------------------------------------------------------------------


def images_root(root: str | Path) -> Path:
    """The directory relative uris resolve against: ``catalog.json``'s ``images_root`` in a view, else ``root``."""
    root = Path(root)
    view = root / VIEW_FILE
    if not view.is_file():
        return root
    relative = json.loads(view.read_text()).get("images_root", ".")
    return (root / relative).resolve()


def read_catalog(root: str | Path) -> LandmarkDataset:
    """Read a catalog (ingestion root or validated view) as a dataset of its ok rows with their ground truth.

    Raises:
        FileNotFoundError: ``root`` is not a directory.
        DatasetFormatError: no ``manifests/*.parquet``, or a malformed ground-truth table.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"catalog {root} is not a directory")
    if not is_catalog(root):
        raise DatasetFormatError(f"{root} is not a catalog: no {MANIFESTS_DIR}/*.parquet (run `landmark ingest`)")
    manifests: dict[str, pd.DataFrame] = {}
    ordered = sorted((root / MANIFESTS_DIR).glob("*.parquet"), key=_split_order)
    for path in ordered:
        frame = read_manifest(path)
        manifests[path.stem] = frame[frame["status"] == STATUS_OK].reset_index(drop=True)
    ok = {split: set(frame["image_id"].astype(str)) for split, frame in manifests.items()}
    test_ids, index_ids = ok.get("test", set()), ok.get("index", set())
    truth_dir = root / GROUNDTRUTH_DIR
    queries = restrict_queries(_read_table(truth_dir / RETRIEVAL_FILE, RETRIEVAL_COLUMNS), test_ids, index_ids)
    retrieval, recognition, usage, recognition_usage = restrict_solutions(
        _read_table(truth_dir / SOLUTION_FILE, SOLUTION_COLUMNS), test_ids, index_ids
    )
    return LandmarkDataset(
        root=images_root(root),
        manifests=manifests,
        retrieval=queries,
        retrieval_solution=retrieval,
        recognition_solution=recognition,
        usage=usage,
        recognition_usage=recognition_usage,
    )


def _split_order(path: Path) -> tuple[int, str]:
    name = path.stem
    return (DATASET_SPLITS.index(name) if name in DATASET_SPLITS else len(DATASET_SPLITS), name)


# --- the validated view -----------------------------------------------------------------------------------------


def publish_view(source: str | Path, view: str | Path) -> dict[str, int]:
    """Write the validated view of the catalog at ``source`` to ``view`` (atomically replaced).

    The view holds the ok rows of every manifest (all columns, in manifest order), the ground-truth tables
    as they are, and ``catalog.json`` pointing back at ``source`` for relative image uris. Nothing that varies
    between runs (times of the run, absolute paths) goes into it: the same ok rows give the same bytes.

    Returns:
        Ok rows per split.
    """
    source, view = Path(source).resolve(), Path(view)
    view.parent.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    with atomic_directory(view) as tmp:
        for path in sorted((source / MANIFESTS_DIR).glob("*.parquet")):
            frame = read_manifest(path)
            ok = frame[frame["status"] == STATUS_OK].reset_index(drop=True)
            write_manifest(ok, manifest_path(tmp / MANIFESTS_DIR, path.stem))
            counts[path.stem] = len(ok)
        for name in (RETRIEVAL_FILE, SOLUTION_FILE):
            table = source / GROUNDTRUTH_DIR / name
            if table.is_file():
                (tmp / GROUNDTRUTH_DIR).mkdir(exist_ok=True)
                (tmp / GROUNDTRUTH_DIR / name).write_bytes(table.read_bytes())
        relative = os.path.relpath(source, view.resolve().parent / view.name)
        (tmp / VIEW_FILE).write_text(json.dumps({"images_root": relative}, indent=2) + "\n")
    return counts


# --- images in the object store ---------------------------------------------------------------------------------


def cache_key(sha1: str, uri: str) -> str:
    """``<sha1[:2]>/<sha1><ext>`` of a stored object (the extension of its uri)."""
    suffix = Path(uri).suffix
    return f"{sha1[:2]}/{sha1}{suffix}"


def localize_remote_images(
    dataset: LandmarkDataset,
    fetch: Callable[[str], bytes],
    cache_dir: str | Path,
    *,
    progress: bool = True,
) -> LandmarkDataset:
    """Rows whose uri is ``s3://...`` are streamed once into ``cache_dir`` (by content hash, checked on the way
    in) and point there; the rest of the dataset is unchanged.

    Args:
        fetch: returns the bytes of an ``s3://`` uri (e.g. :meth:`landmark.platform.storage.ObjectStore.get_uri`).

    Raises:
        DatasetFormatError: the bytes fetched for a row do not hash to its recorded SHA-1.
    """
    cache_dir = Path(cache_dir).resolve()
    manifests = {}
    todo: list[tuple[str, str, Path]] = []
    for split, frame in dataset.manifests.items():
        remote = frame["uri"].astype(str).str.startswith("s3://")
        if not remote.any():
            manifests[split] = frame
            continue
        frame = frame.copy()
        for row in frame.index[remote.to_numpy()]:
            uri, sha1 = str(frame.at[row, "uri"]), str(frame.at[row, "sha1"])
            local = cache_dir / cache_key(sha1, uri)
            if not local.is_file():
                todo.append((uri, sha1, local))
            frame.at[row, "uri"] = str(local)
        manifests[split] = frame
    for uri, sha1, local in tqdm(todo, desc="images from the store", unit="img", disable=not progress):
        data = fetch(uri)
        if hashlib.sha1(data).hexdigest() != sha1:
            raise DatasetFormatError(f"{uri}: content does not match its recorded sha1 {sha1}")
        with atomic_path(local) as tmp:
            tmp.write_bytes(data)
    if not todo and all(manifests[s] is dataset.manifests[s] for s in manifests):
        return dataset
    return dataclasses.replace(dataset, manifests=manifests)
