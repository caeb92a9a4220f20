"""The catalog as a dataset: ground truth restricted to what is in it, the validated view, S3 images cached by
content hash, and ingestion of an inbox of daily batches."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from landmark.config import Config, FeedConfig
from landmark.data.catalog import (
    localize_remote_images,
    merge_groundtruth,
    publish_view,
    read_catalog,
    restrict_queries,
    restrict_solutions,
    retrieval_table,
)
from landmark.data.formats import detect_format, read_dataset
from landmark.data.groundtruth import DatasetFormatError, LandmarkDataset, QueryTruth
from landmark.data.manifest import make_manifest, manifest_path, write_manifest
from landmark.data.synthetic.feed import write_feed
from landmark.stages.ingest import ingest_source


def _jpeg(value: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full((40, 48, 3), value, dtype=np.uint8)).save(out, format="JPEG")
    return out.getvalue()


def test_queries_keep_only_ok_images_and_drop_those_without_positives() -> None:
    table = retrieval_table(
        [
            QueryTruth("q1", ["a", "b"], ["c"], ["d", "e"], (1.0, 2.0, 30.0, 40.0)),
            QueryTruth("q2", ["x"], [], ["a"]),  # its only positive has not arrived
            QueryTruth("q3", ["a"], [], []),  # not an ok test image
        ]
    )
    queries = restrict_queries(table, test_ids={"q1", "q2"}, index_ids={"a", "c", "d"})
    assert queries == (QueryTruth("q1", ("a",), ("c",), ("d",), (1.0, 2.0, 30.0, 40.0)),)


def test_solutions_are_cut_to_the_catalog() -> None:
    table = pd.DataFrame(
        {
            "image_id": ["t1", "t2", "t3", "t4"],
            "retrieval": [["a", "x"], ["x"], [], None],
            "recognition": [[1], [2], [], [4]],
            "usage": ["Public", "Public", "Ignored", ""],
            "recognition_usage": ["Public", "Private", "Public", "Public"],
        }
    )
    retrieval, recognition, usage, recognition_usage = restrict_solutions(table, {"t1", "t2", "t3"}, {"a"})
    assert retrieval == {"t1": ("a",), "t3": ()}  # t2 lost every answer; t3 is a non-landmark query
    assert recognition == {"t1": (1,), "t2": (2,), "t3": ()}
    assert usage == {"t1": "Public", "t3": "Ignored"}
    assert recognition_usage == {"t1": "Public", "t2": "Private", "t3": "Public"}


def test_ground_truth_merges_by_id_with_the_newer_row_winning(tmp_path: Path) -> None:
    first = LandmarkDataset(tmp_path, {}, retrieval=[QueryTruth("q", ["a"], [], [])])
    second = LandmarkDataset(
        tmp_path, {}, retrieval=[QueryTruth("q", ["a", "b"], [], []), QueryTruth("p", [], ["c"], [])]
    )
    assert merge_groundtruth(tmp_path, first) == {"retrieval": 1, "solution": 0}
    assert merge_groundtruth(tmp_path, second) == {"retrieval": 2, "solution": 0}
    stored = pd.read_parquet(tmp_path / "groundtruth" / "retrieval.parquet")
    assert stored["query_id"].tolist() == ["p", "q"]  # sorted: the same truth gives the same bytes
    assert list(stored.set_index("query_id").loc["q", "easy"]) == ["a", "b"]


def _catalog(root: Path) -> None:
    rows = {
        "train": [
            {"image_id": "t1", "landmark_id": 1, "uri": "images/t1.jpg", "sha1": "1" * 40},
            {"image_id": "t2", "landmark_id": 1, "status": "quarantined", "reason": "truncated: cut"},
        ],
        "index": [{"image_id": "a", "uri": "images/a.jpg", "sha1": "2" * 40}],
        "test": [{"image_id": "q", "uri": "images/q.jpg", "sha1": "3" * 40}],
    }
    for split, split_rows in rows.items():
        write_manifest(make_manifest(split_rows), manifest_path(root / "manifests", split))
    merge_groundtruth(root, LandmarkDataset(root, {}, retrieval=[QueryTruth("q", ["a", "gone"], [], [])]))


def test_the_view_holds_the_ok_rows_and_reads_like_the_catalog(tmp_path: Path) -> None:
    source, view = tmp_path / "data" / "ingest", tmp_path / "build" / "catalog"
    _catalog(source)
    assert detect_format(source) == "catalog"
    assert publish_view(source, view) == {"index": 1, "test": 1, "train": 1}
    first = (view / "manifests" / "train.parquet").read_bytes()
    publish_view(source, view)
    assert (view / "manifests" / "train.parquet").read_bytes() == first  # same rows, same bytes
    for root in (source, view):
        dataset = read_dataset(root)
        assert dataset.splits == ("train", "index", "test")
        assert dataset.ok_ids("train") == ("t1",)
        assert dataset.root == source.resolve() or dataset.root == source
        assert dataset.image_path("train", "t1") == dataset.root / "images" / "t1.jpg"
        assert dataset.retrieval == (QueryTruth("q", ("a",), (), ()),)


def test_a_directory_without_manifests_is_not_a_catalog(tmp_path: Path) -> None:
    with pytest.raises(DatasetFormatError, match="not a catalog"):
        read_catalog(tmp_path)


def test_remote_images_are_streamed_once_into_the_cache_and_checked(tmp_path: Path, object_store) -> None:  # type: ignore[no-untyped-def]
    data = _jpeg(90)
    sha1 = hashlib.sha1(data).hexdigest()
    uri = object_store.put_bytes(f"images/{sha1[:2]}/{sha1}.jpg", data, "image/jpeg")
    manifest = make_manifest([{"image_id": "r", "landmark_id": 3, "uri": uri, "sha1": sha1}])
    dataset = LandmarkDataset(tmp_path, {"train": manifest})
    fetched: list[str] = []

    def fetch(u: str) -> bytes:
        fetched.append(u)
        return object_store.get_bytes(u.split("/", 3)[3])

    local = localize_remote_images(dataset, fetch, tmp_path / "cache", progress=False)
    path = local.image_path("train", "r")
    assert path == (tmp_path / "cache" / sha1[:2] / f"{sha1}.jpg").resolve()
    assert path.read_bytes() == data and fetched == [uri]
    localize_remote_images(dataset, fetch, tmp_path / "cache", progress=False)
    assert fetched == [uri]  # cached by content hash: not fetched again
    wrong = LandmarkDataset(
        tmp_path, {"train": make_manifest([{**manifest.iloc[0].to_dict(), "sha1": "0" * 40}])}
    )
    with pytest.raises(DatasetFormatError, match="does not match its recorded sha1"):
        localize_remote_images(wrong, fetch, tmp_path / "cache2", progress=False)


def test_an_inbox_is_ingested_batch_by_batch(tmp_path: Path, tiny_world) -> None:  # type: ignore[no-untyped-def]
    feed = FeedConfig(days=2, shift_day=-1, corrupt_day=1, corrupt_images=2)
    cfg = Config(feed=feed)
    inbox, catalog = tmp_path / "inbox", tmp_path / "catalog"
    write_feed(tiny_world.root, inbox, feed, tiny_world.seed, 1)
    first = ingest_source(cfg, str(inbox), catalog, progress=False)
    assert first.inbox_batches == ["day-000"] and first.quarantined == {}
    write_feed(tiny_world.root, inbox, feed, tiny_world.seed, 2)
    second = ingest_source(cfg, str(inbox), catalog, progress=False)
    assert second.inbox_batches == ["day-001"] and second.skipped_batches == 1
    assert second.quarantined == {"truncated": 2}
    again = ingest_source(cfg, str(inbox), catalog, progress=False)
    assert again.inbox_batches == [] and again.added == 0 and again.batches == []
    world = read_dataset(tiny_world.root)
    dataset = read_dataset(catalog)
    assert set(dataset.ok_ids("index")) == set(world.ok_ids("index"))
    assert len(dataset.ok_ids("train")) == len(world.ok_ids("train")) - 2
    assert first.added + second.added == sum(len(dataset.ok_ids(s)) for s in dataset.splits)
    truth = {q.query_id: q for q in world.retrieval}
    for query in dataset.retrieval:  # every query of the world, its truth intact (all its images are in)
        assert query == truth[query.query_id]
    assert {q.query_id for q in dataset.retrieval} == {q.query_id for q in world.retrieval}
