"""Manifest schema: defaults, dtype coercion, validation rules, atomic parquet round trips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from landmark.data.manifest import (
    MANIFEST_COLUMNS,
    MANIFEST_DTYPES,
    ManifestError,
    empty_manifest,
    format_reason,
    has_bbox,
    is_safe_uri,
    make_manifest,
    ok_rows,
    quarantine,
    quarantined_row,
    quarantined_rows,
    read_manifest,
    read_manifests,
    reason_code,
    resolve_uri,
    row_bbox,
    safe_uri_mask,
    write_manifest,
    write_manifests,
)


def sample_rows() -> list[dict[str, object]]:
    return [
        {
            "image_id": "0123abcd",
            "landmark_id": 7,
            "uri": "train/0/1/2/0123abcd.jpg",
            "url": "http://x/a.jpg",
            "width": 640,
            "height": 480,
            "sha1": "ab" * 20,
            "batch_id": "b1",
            "ingested_at": "2024-05-01T12:00:00Z",
        },
        {"image_id": "q1", "uri": "jpg/q1.jpg", "bbox_x0": 1, "bbox_y0": 2, "bbox_x1": 30.5, "bbox_y1": 40},
        quarantined_row("../etc/passwd", "unsafe_id", "'../etc/passwd'", url="http://x/b.jpg"),
    ]


def test_defaults_and_dtypes() -> None:
    frame = make_manifest(sample_rows())
    assert tuple(frame.columns) == MANIFEST_COLUMNS
    assert {c: str(t) for c, t in frame.dtypes.items()} == MANIFEST_DTYPES
    assert list(frame["landmark_id"]) == [7, -1, -1]
    assert list(frame["width"]) == [640, -1, -1]
    assert list(frame["status"]) == ["ok", "ok", "quarantined"]
    assert list(frame["reason"]) == ["", "", "unsafe_id: '../etc/passwd'"]
    assert list(frame["uri"]) == ["train/0/1/2/0123abcd.jpg", "jpg/q1.jpg", ""]
    assert frame.loc[0, "ingested_at"] == pd.Timestamp("2024-05-01 12:00:00", tz="UTC")
    assert pd.isna(frame.loc[1, "ingested_at"])
    assert list(has_bbox(frame)) == [False, True, False]
    assert row_bbox(frame.loc[1]) == (1.0, 2.0, 30.5, 40.0)
    assert row_bbox(frame.loc[0]) is None
    assert isinstance(frame.loc[0, "image_id"], str)


def test_empty_manifest_has_the_schema() -> None:
    frame = empty_manifest()
    assert len(frame) == 0
    assert {c: str(t) for c, t in frame.dtypes.items()} == MANIFEST_DTYPES


def test_integral_floats_and_numeric_strings_are_accepted() -> None:
    frame = make_manifest([{"image_id": "abc", "uri": "a.jpg", "landmark_id": 3.0, "width": "12"}])
    assert frame.loc[0, "landmark_id"] == 3
    assert frame.loc[0, "width"] == 12


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"image_id": "abc", "uri": "a.jpg", "landmark_id": 2.5}, "landmark_id"),
        ({"image_id": "abc", "uri": "a.jpg", "landmark_id": "x"}, "landmark_id"),
        ({"image_id": "abc", "uri": "a.jpg", "landmark_id": -2}, ">= -1"),
        ({"image_id": "abc", "uri": "a.jpg", "width": 2**40}, "int32"),
        ({"image_id": "abc", "uri": "a.jpg", "status": "bad"}, "status"),
        ({"image_id": "abc", "uri": "a.jpg", "status": "quarantined"}, "need a reason"),
        ({"image_id": "abc", "uri": "a.jpg", "reason": "why"}, "empty reason"),
        ({"image_id": "a/b", "uri": "a.jpg"}, "'a/b'"),
        ({"image_id": "", "uri": "a.jpg"}, "unsafe image ids"),
        ({"image_id": "abc", "uri": ""}, "non-empty uri"),
        ({"image_id": "abc", "uri": "../outside.jpg"}, "uri"),
        ({"image_id": 123, "uri": "a.jpg"}, "strings"),
        ({"image_id": "abc", "uri": "a.jpg", "ingested_at": "yesterday-ish"}, "timestamps"),
        ({"image_id": "abc", "uri": "a.jpg", "bbox_x0": 1.0}, "all NaN or all set"),
        (
            {"image_id": "abc", "uri": "a.jpg", "bbox_x0": 5, "bbox_y0": 0, "bbox_x1": 4, "bbox_y1": 9},
            "x1 > x0",
        ),
        ({"image_id": "abc", "uri": "a.jpg", "colour": "red"}, "unknown manifest columns"),
    ],
)
def test_invalid_rows_raise_manifest_error(row: dict[str, object], message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        make_manifest([row])


def test_duplicate_ok_ids_are_rejected_but_quarantined_duplicates_are_kept() -> None:
    with pytest.raises(ManifestError, match=r"duplicate image ids.*'abc'"):
        make_manifest([{"image_id": "abc", "uri": "a.jpg"}, {"image_id": "abc", "uri": "b.jpg"}])
    frame = make_manifest(
        [{"image_id": "abc", "uri": "a.jpg"}, quarantined_row("abc", "duplicate_id", "'abc' (line 3)")]
    )
    assert list(frame["status"]) == ["ok", "quarantined"]
    assert list(ok_rows(frame)["image_id"]) == ["abc"]
    assert list(quarantined_rows(frame)["reason"]) == ["duplicate_id: 'abc' (line 3)"]


def test_uri_forms() -> None:
    frame = make_manifest(
        [
            {"image_id": "a01", "uri": "/abs/a01.jpg"},
            {"image_id": "a02", "uri": "s3://bucket/a02.jpg"},
            {"image_id": "a03", "uri": "rel/dir/a03.jpg"},
        ]
    )
    assert resolve_uri("/root", str(frame.loc[0, "uri"])) == Path("/abs/a01.jpg")
    assert resolve_uri("/root", str(frame.loc[2, "uri"])) == Path("/root/rel/dir/a03.jpg")
    with pytest.raises(ValueError, match="object storage"):
        resolve_uri("/root", str(frame.loc[1, "uri"]))
    with pytest.raises(ValueError, match="unsafe"):
        resolve_uri("/root", "a/../../etc/passwd")


def test_write_read_round_trip_keeps_everything(tmp_path: Path) -> None:
    frame = make_manifest(sample_rows())
    path = write_manifest(frame, tmp_path / "sub" / "train.parquet")
    back = read_manifest(path)
    pd.testing.assert_frame_equal(back, frame)
    assert sorted(p.name for p in path.parent.iterdir()) == ["train.parquet"]  # no temp files left


def test_failed_write_leaves_the_old_file(tmp_path: Path) -> None:
    path = write_manifest(make_manifest(sample_rows()), tmp_path / "train.parquet")
    before = path.read_bytes()
    bad = make_manifest(sample_rows()).astype({"status": object})
    bad.loc[0, "status"] = "broken"
    with pytest.raises(ManifestError):
        write_manifest(bad, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["train.parquet"]


def test_read_manifest_rejects_non_parquet(tmp_path: Path) -> None:
    path = tmp_path / "x.parquet"
    path.write_text("not parquet")
    with pytest.raises(ManifestError, match="not a readable parquet manifest"):
        read_manifest(path)
    with pytest.raises(FileNotFoundError):
        read_manifest(tmp_path / "missing.parquet")


def test_manifests_per_split(tmp_path: Path) -> None:
    manifests = {
        "train": make_manifest([{"image_id": "abc", "uri": "a.jpg", "landmark_id": 1}]),
        "index": make_manifest([{"image_id": "def", "uri": "d.jpg"}]),
    }
    paths = write_manifests(manifests, tmp_path)
    assert {k: p.name for k, p in paths.items()} == {"train": "train.parquet", "index": "index.parquet"}
    back = read_manifests(tmp_path)
    assert sorted(back) == ["index", "train"]
    pd.testing.assert_frame_equal(back["train"], manifests["train"])


def test_quarantine_by_ids_and_by_mask() -> None:
    frame = make_manifest([{"image_id": f"img{i}", "uri": f"img{i}.jpg"} for i in range(4)])
    by_id = quarantine(frame, ["img1", "img3"], "corrupt", "truncated JPEG")
    assert list(by_id["status"]) == ["ok", "quarantined", "ok", "quarantined"]
    assert by_id.loc[1, "reason"] == "corrupt: truncated JPEG"
    assert list(frame["status"]) == ["ok"] * 4  # the input is not modified
    by_mask = quarantine(frame, pd.Series([True, False, False, False]), "too_large")
    assert list(by_mask["reason"]) == ["too_large", "", "", ""]
    with pytest.raises(ManifestError, match="img9"):
        quarantine(frame, ["img9"], "corrupt")


def test_reason_helpers() -> None:
    assert format_reason("unsafe_id", "'a/b'") == "unsafe_id: 'a/b'"
    assert format_reason("empty") == "empty"
    assert reason_code("unsafe_id: 'a/b': more") == "unsafe_id"
    assert reason_code("empty") == "empty"
    with pytest.raises(ValueError, match="lower_snake_case"):
        format_reason("Bad Code")


def test_frame_input_is_coerced() -> None:
    frame = pd.DataFrame(
        {"image_id": ["abc", "def"], "uri": ["a.jpg", "d.jpg"], "landmark_id": [np.nan, 4.0]}
    )
    out = make_manifest(frame)
    assert list(out["landmark_id"]) == [-1, 4]
    assert out["landmark_id"].dtype == np.int64


URI_CASES = [
    ("a.jpg", True),
    ("dir/sub/img.png", True),
    ("/abs/x", True),
    ("s3://b/../k", True),  # object keys are not file paths
    ("a/..b/c", True),
    ("x/...", True),
    ("..a/b", True),
    ("a/b..", True),
    ("/a\\b", True),
    ("", False),
    ("../x", False),
    ("a/../b", False),
    ("a/..", False),
    ("..", False),
    ("a\\b", False),
    ("C:\\x", False),
    ("a\x00b", False),
]


def test_vectorised_uri_check_matches_the_scalar_rule() -> None:
    uris = [uri for uri, _ in URI_CASES]
    expected = [safe for _, safe in URI_CASES]
    assert [is_safe_uri(u) for u in uris] == expected
    assert safe_uri_mask(pd.Series(uris, dtype=object)).tolist() == expected
    assert safe_uri_mask(pd.Series([], dtype=object)).tolist() == []
