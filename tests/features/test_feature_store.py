from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from landmark.features.store import FeatureStoreError, FeatureWriter, load_features, read_meta, stored_ids


def test_round_trip_across_shards(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((10, 4)).astype(np.float32)
    ids = [f"img{i}" for i in range(10)]
    with FeatureWriter(tmp_path, 4, shard_size=3, meta={"model": "x"}) as writer:
        for s in range(0, 10, 2):
            writer.add(ids[s : s + 2], vectors[s : s + 2])
    # adds of 2 rows flush once 3 are buffered: 4 + 4 rows, then the last 2 on close
    assert len(list(tmp_path.glob("shard-*.npy"))) == 3
    got_ids, got = load_features(tmp_path)
    assert got_ids == ids
    np.testing.assert_array_equal(got, vectors)
    _sub_ids, sub = load_features(tmp_path, ["img7", "img0", "img3"])
    np.testing.assert_array_equal(sub, vectors[[7, 0, 3]])
    assert read_meta(tmp_path)["model"] == "x"


def test_float16_store(tmp_path: Path) -> None:
    with FeatureWriter(tmp_path, 2, dtype="float16") as writer:
        writer.add(["a"], np.array([[0.5, 0.25]]))
    _, got = load_features(tmp_path)
    assert got.dtype == np.float32 and got.tolist() == [[0.5, 0.25]]


def test_partial_shard_is_ignored(tmp_path: Path) -> None:
    with FeatureWriter(tmp_path, 2) as writer:
        writer.add(["a", "b"], np.ones((2, 2)))
    # a crash after the array but before the ids file: the shard is incomplete and must not count
    np.save(tmp_path / "shard-00001.npy", np.zeros((1, 2), dtype=np.float32))
    assert stored_ids(tmp_path) == ["a", "b"]
    with FeatureWriter(tmp_path, 2) as writer:
        writer.add(["c"], np.full((1, 2), 3.0))
    ids, got = load_features(tmp_path)
    assert ids == ["a", "b", "c"] and got[2].tolist() == [3.0, 3.0]


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(FeatureStoreError, match="run `landmark extract`"):
        load_features(tmp_path / "missing")
    with FeatureWriter(tmp_path, 2) as writer:
        writer.add(["a"], np.ones((1, 2)))
        with pytest.raises(ValueError, match="shape"):
            writer.add(["b"], np.ones((1, 3)))
    with pytest.raises(FeatureStoreError, match="no features"):
        load_features(tmp_path, ["zzz"])
    with pytest.raises(FeatureStoreError, match="different dim; cannot append"):
        FeatureWriter(tmp_path, 8)
    with pytest.raises(FeatureStoreError, match="different model"):
        FeatureWriter(tmp_path, 2, meta={"model": {"backbone": "other"}})
