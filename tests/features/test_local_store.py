"""The local feature store: round trip, compactness, resume, partial shards, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from landmark.features.local import LocalFeatures
from landmark.features.local_store import (
    LocalFeatureReader,
    LocalFeatureWriter,
    LocalStoreError,
    load_local,
    local_bytes_per_image,
    stored_local_ids,
)

DIM = 16


def random_features(n: int, seed: int) -> LocalFeatures:
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(n, DIM)).astype(np.float32)
    return LocalFeatures(
        locations=rng.uniform(0, 2000, (n, 2)),
        scales=rng.uniform(1, 30, n),
        scores=rng.uniform(0, 1, n),
        descriptors=d / np.linalg.norm(d, axis=1, keepdims=True),
    )


@pytest.mark.parametrize("location_dtype", ["int16", "float16"])
def test_round_trip(tmp_path: Path, location_dtype: str) -> None:
    feats = {f"img{k}": random_features(n, k) for k, n in enumerate([5, 0, 17, 3])}
    with LocalFeatureWriter(tmp_path, DIM, location_dtype=location_dtype, shard_size=3) as writer:  # type: ignore[arg-type]
        for image_id, f in feats.items():
            assert writer.add(image_id, f)
    assert stored_local_ids(tmp_path) == list(feats)
    assert len(list(tmp_path.glob("shard-*.ids.txt"))) == 2
    reader = LocalFeatureReader(tmp_path)
    tolerance = 0.5 if location_dtype == "int16" else 1.0  # float16 spacing at 1024-2048 is 1 px
    for image_id, f in feats.items():
        got = reader.load(image_id)
        assert got.descriptors.dtype == np.float32 and got.descriptors.shape == f.descriptors.shape
        np.testing.assert_allclose(got.locations, f.locations, atol=tolerance)
        np.testing.assert_allclose(got.scales, f.scales, rtol=1e-3)
        np.testing.assert_allclose(got.scores, f.scores, atol=1e-3)
        np.testing.assert_allclose(got.descriptors, f.descriptors, atol=2e-3)
        if len(got):
            np.testing.assert_allclose(np.linalg.norm(got.descriptors, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(load_local(tmp_path, "img2").scales, feats["img2"].scales, rtol=1e-3)


def test_bytes_per_image_is_compact(tmp_path: Path) -> None:
    with LocalFeatureWriter(tmp_path, DIM) as writer:
        for k in range(4):
            writer.add(f"img{k}", random_features(100, k))
    per_image = local_bytes_per_image(tmp_path)
    # float16 descriptors (2 * DIM) + int16 locations (4) + float16 scale/score (4) per keypoint, plus headers
    payload = 100 * (2 * DIM + 8)
    assert payload <= per_image < payload + 300
    assert LocalFeatureReader(tmp_path).bytes_per_image() == per_image


def test_resume_skips_stored_ids(tmp_path: Path) -> None:
    with LocalFeatureWriter(tmp_path, DIM, shard_size=2) as writer:
        writer.add("a", random_features(4, 0))
        writer.add("b", random_features(4, 1))
    writer = LocalFeatureWriter(tmp_path, DIM, shard_size=2)
    assert writer.missing(["a", "c", "b", "d"]) == ["c", "d"]
    assert not writer.add("a", random_features(9, 5))  # already stored: untouched
    assert writer.add("c", random_features(2, 2))
    assert not writer.add("c", random_features(2, 2))  # already buffered
    writer.flush()
    assert stored_local_ids(tmp_path) == ["a", "b", "c"]
    assert len(load_local(tmp_path, "a")) == 4


def test_partial_shard_is_ignored(tmp_path: Path) -> None:
    with LocalFeatureWriter(tmp_path, DIM) as writer:
        writer.add("a", random_features(3, 0))
    # A run killed after writing arrays of shard 1 but before its ids file.
    for part in ("desc", "loc", "aux", "offsets"):
        (tmp_path / f"shard-00001.{part}.npy").write_bytes(b"garbage")
    (tmp_path / "shard-00001.ids.txt.tmp").write_text("b")
    assert stored_local_ids(tmp_path) == ["a"]
    reader = LocalFeatureReader(tmp_path)
    assert "b" not in reader and len(reader) == 1
    with LocalFeatureWriter(tmp_path, DIM) as writer:  # the rerun overwrites the partial shard
        assert writer.missing(["a", "b"]) == ["b"]
        writer.add("b", random_features(2, 1))
    assert stored_local_ids(tmp_path) == ["a", "b"]
    assert len(load_local(tmp_path, "b")) == 2


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'int8'"):
        LocalFeatureWriter(tmp_path, DIM, location_dtype="int8")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="got 0"):
        LocalFeatureWriter(tmp_path, 0)
    writer = LocalFeatureWriter(tmp_path, DIM)
    with pytest.raises(ValueError, match="'a\\\\nb'"):
        writer.add("a\nb", random_features(2, 0))
    with pytest.raises(ValueError, match="expected 16-d"):
        writer.add("x", LocalFeatures(np.zeros((1, 2)), np.ones(1), np.ones(1), np.ones((1, 8))))
    far = random_features(1, 0)
    with pytest.raises(ValueError, match="outside the int16 range"):
        writer.add("far", LocalFeatures(far.locations + 40000, far.scales, far.scores, far.descriptors))
    with pytest.raises(LocalStoreError, match="location_dtype"):
        LocalFeatureWriter(tmp_path, DIM, location_dtype="float16")
    with pytest.raises(LocalStoreError, match=r"missing local\.json"):
        LocalFeatureReader(tmp_path / "nowhere")
    with pytest.raises(LocalStoreError, match="'nope'"):
        load_local(tmp_path, "nope")
    with pytest.raises(ValueError, match=r"\(3,\)"):
        LocalFeatures(np.zeros((2, 2)), np.ones(3), np.ones(2), np.ones((2, 4)))
