"""The query log: rows and descriptors written as numbered files, rotated, bounded, read back as a window."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from landmark.config import ServeConfig
from landmark.ops.drift import IMAGE_STAT_COLUMNS, decoded_row, failed_row
from landmark.serving.query_log import (
    LoggedQuery,
    QueryLog,
    numbered_files,
    read_file,
    read_window,
)


def query(i: int, dim: int | None = 4, model: str = "m1", image: bytes | None = None) -> LoggedQuery:
    """Query ``i``: a 10 x (10 + i) grey image with descriptor e_(i mod dim), or a decode failure (dim None)."""
    query_id = f"q{i:03d}"
    if dim is None:
        return LoggedQuery(
            query_id, "search", "v1", model, failed_row(query_id, "truncated", 12.0), None, image
        )
    rgb = np.full((10, 10 + i, 3), i, dtype=np.uint8)
    vector = np.zeros(dim, np.float32)
    vector[i % dim] = 1.0
    return LoggedQuery(query_id, "search", "v1", model, decoded_row(query_id, rgb, 100 + i), vector, image)


def make_log(root: Path, rotate: int = 3, keep: int = 10, images: bool = False) -> QueryLog:
    return QueryLog(root, rotate_rows=rotate, keep_files=keep, flush_s=60.0, keep_images=images)


def test_rows_are_rotated_into_numbered_files(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    for i in range(7):
        log.append(query(i))
    log.flush()
    files = numbered_files(tmp_path)
    assert [n for n, _ in files] == [1, 2, 3]
    table, vectors = read_file(files[0][1].with_suffix(""))
    assert list(table["query_id"]) == ["q000", "q001", "q002"] and vectors.shape == (3, 4)
    assert np.array_equal(vectors[1], [0, 1, 0, 0])
    assert list(table["width"]) == [10.0, 11.0, 12.0] and list(table["file_bytes"]) == [100.0, 101.0, 102.0]
    assert len(read_file(files[2][1].with_suffix(""))[0]) == 1  # the open file, written as it is


def test_the_open_file_grows_and_a_restart_starts_a_new_number(tmp_path: Path) -> None:
    log = make_log(tmp_path, rotate=5)
    log.append(query(0))
    log.flush()
    log.append(query(1))
    log.flush()
    [(number, path)] = numbered_files(tmp_path)
    assert number == 1 and len(read_file(path.with_suffix(""))[0]) == 2
    log.close()
    again = make_log(tmp_path, rotate=5)
    again.append(query(2))
    again.close()
    assert [n for n, _ in numbered_files(tmp_path)] == [1, 2]  # file 1 of the earlier process is untouched
    assert len(read_file(path.with_suffix(""))[0]) == 2


def test_only_the_last_files_are_kept(tmp_path: Path) -> None:
    log = make_log(tmp_path, rotate=2, keep=2, images=True)
    for i in range(9):
        log.append(query(i, image=b"jpeg bytes %d" % i))
        log.flush()
    log.close()
    files = numbered_files(tmp_path)
    assert [n for n, _ in files] == [4, 5]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "queries-000004.images",
        "queries-000004.npy",
        "queries-000004.parquet",
        "queries-000005.images",
        "queries-000005.npy",
        "queries-000005.parquet",
    ]
    assert (tmp_path / "queries-000005.images" / "q008.bin").read_bytes() == b"jpeg bytes 8"


def test_no_image_bytes_are_kept_by_default(tmp_path: Path) -> None:
    log = QueryLog.from_config(ServeConfig(log_rotate_rows=2), tmp_path)
    for i in range(3):
        log.append(query(i, image=b"secret photo"))
    log.close()
    assert not log.keep_images
    assert not [p for p in tmp_path.rglob("*") if p.suffix in (".bin", ".images")]
    assert all(b"secret photo" not in p.read_bytes() for p in tmp_path.iterdir())


def test_a_new_descriptor_dimension_starts_a_new_file(tmp_path: Path) -> None:
    log = make_log(tmp_path, rotate=10)
    log.append(query(0, dim=4, model="m1"))
    log.append(query(1, dim=4, model="m1"))
    log.append(query(2, dim=None, model="m1"))  # a decode failure fits any file
    log.append(query(3, dim=6, model="m2"))
    log.close()
    files = numbered_files(tmp_path)
    shapes = [read_file(p.with_suffix(""))[1].shape for _, p in files]
    assert shapes == [(3, 4), (1, 6)]


def test_the_window_holds_the_last_rows_with_their_descriptors(tmp_path: Path) -> None:
    log = make_log(tmp_path, rotate=3)
    for i in range(8):
        log.append(query(i, dim=None if i == 6 else 4))
    log.close()
    window = read_window(tmp_path, 5)
    assert list(window.stats.index) == ["q003", "q004", "q005", "q006", "q007"]
    assert window.files == ("queries-000002.parquet", "queries-000003.parquet")
    assert (
        window.stats.loc["q006", "decode_failed"] == 1.0
        and window.stats.loc["q006", "failure"] == "truncated"
    )
    assert math.isnan(window.stats.loc["q006", "brightness"])
    assert set(IMAGE_STAT_COLUMNS) <= set(window.stats.columns)
    ids, vectors = window.descriptors("m1")
    assert ids == ["q003", "q004", "q005", "q007"] and vectors.shape == (4, 4)
    assert np.array_equal(vectors[0], [0, 0, 0, 1]) and window.models() == ["m1"]
    assert window.descriptors("other") == ([], pytest.approx(np.zeros((0, 0))))
    assert len(read_window(tmp_path, 100).stats) == 8


def test_a_reader_never_sees_more_descriptors_than_rows(tmp_path: Path) -> None:
    log = make_log(tmp_path, rotate=10)
    for i in range(3):
        log.append(query(i))
    log.flush()
    stem = numbered_files(tmp_path)[0][1].with_suffix("")
    np.save(stem.with_suffix(".npy"), np.ones((5, 4), np.float32))  # as if rewritten between two reads
    table, vectors = read_file(stem)
    assert len(table) == vectors.shape[0] == 3


def test_a_missing_log_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no query log"):
        read_window(tmp_path / "nothing", 10)
    with pytest.raises(ValueError, match="rotate_rows"):
        QueryLog(tmp_path, rotate_rows=0, keep_files=1, flush_s=1.0)
