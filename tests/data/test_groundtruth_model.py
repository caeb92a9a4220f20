"""QueryTruth and LandmarkDataset: coercion, validation and path resolution."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from landmark.data.groundtruth import LandmarkDataset, QueryTruth
from landmark.data.manifest import make_manifest, quarantined_row


def test_query_truth_stores_tuples_and_floats() -> None:
    truth = QueryTruth("q1", ["a", "b"], ["c"], [], bbox=(1, 2, 3, 4))  # type: ignore[arg-type]
    assert truth.easy == ("a", "b")
    assert truth.junk == ()
    assert truth.bbox == (1.0, 2.0, 3.0, 4.0)
    assert truth.positives == ("a", "b", "c")
    assert hash(truth) == hash(QueryTruth("q1", ("a", "b"), ("c",), (), (1.0, 2.0, 3.0, 4.0)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        truth.query_id = "q2"  # type: ignore[misc]


@pytest.mark.parametrize("bbox", [(0.0, 0.0, 0.0, 5.0), (0.0, 9.0, 5.0, 1.0), (0.0, 0.0, float("inf"), 1.0)])
def test_query_truth_rejects_bad_boxes(bbox: tuple[float, float, float, float]) -> None:
    with pytest.raises(ValueError, match="bbox"):
        QueryTruth("q1", (), (), (), bbox=bbox)


def test_query_truth_rejects_non_string_ids() -> None:
    with pytest.raises(ValueError, match="easy"):
        QueryTruth("q1", (3,), (), ())  # type: ignore[arg-type]


def dataset(root: Path) -> LandmarkDataset:
    train = make_manifest(
        [
            {"image_id": "abc", "uri": "train/abc.jpg", "landmark_id": 0},
            {"image_id": "def", "uri": "/elsewhere/def.jpg", "landmark_id": 1},
            quarantined_row("ghi", "corrupt", "truncated"),
        ]
    )
    truth = [QueryTruth("abc", ("def",), (), ())]
    return LandmarkDataset(root=root, manifests={"train": train}, retrieval=truth)  # type: ignore[arg-type]


def test_dataset_paths_and_lookups(tmp_path: Path) -> None:
    data = dataset(tmp_path)
    assert data.splits == ("train",)
    assert data.ok_ids("train") == ("abc", "def")
    assert data.image_path("train", "abc") == tmp_path / "train" / "abc.jpg"
    assert data.image_path("train", "def") == Path("/elsewhere/def.jpg")
    assert data.image_paths("train") == {
        "abc": tmp_path / "train" / "abc.jpg",
        "def": Path("/elsewhere/def.jpg"),
    }
    assert data.retrieval == (QueryTruth("abc", ("def",), (), ()),)
    assert data.query("abc").easy == ("def",)
    with pytest.raises(KeyError, match="ghi"):
        data.image_path("train", "ghi")  # quarantined rows have no usable path
    with pytest.raises(KeyError, match="'test'"):
        data.manifest("test")
    with pytest.raises(KeyError, match="zzz"):
        data.query("zzz")


def test_dataset_defaults_are_independent(tmp_path: Path) -> None:
    first = LandmarkDataset(root=tmp_path, manifests={})
    second = LandmarkDataset(root=str(tmp_path), manifests={})  # type: ignore[arg-type]
    first.usage["x"] = "Public"
    assert second.usage == {}
    assert second.root == tmp_path
