"""The ``index`` stage: a split's feature store streamed into a saved index, and evaluate's use of it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from landmark.config import load_config
from landmark.features.store import FeatureWriter, iter_feature_chunks
from landmark.retrieval.index import load_index, model_version
from landmark.stages.evaluate import open_saved_index
from landmark.stages.index import build_index

META = {"model": {"backbone": "tiny"}, "extract": {"image_size": 64, "batch_size": 4}}


def make_world(root: Path, n: int, dim: int = 16) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(0)
    ids = [f"idx{i:05d}" for i in range(n)]
    (root / "data").mkdir(parents=True)
    (root / "data" / "index.csv").write_text("id,url\n" + "".join(f"{i},http://x/{i}\n" for i in ids))
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with FeatureWriter(root / "feat" / "index", dim, shard_size=50, meta=META) as writer:
        # stored in another order than the manifest: the index must follow the manifest
        order = np.arange(n)[::-1]
        writer.add([ids[i] for i in order], vectors[order])
    return ids, vectors


def test_index_stage_streams_chunks_and_records_the_model(tmp_path: Path) -> None:
    ids, vectors = make_world(tmp_path, 130)
    cfg = load_config(None, ["index.kind=flat", "index.chunk_size=40", "index.shard_size=60"])
    meta = build_index(cfg, tmp_path / "data", tmp_path / "feat", tmp_path / "index")
    assert meta["ntotal"] == 130 and [s["ntotal"] for s in meta["shards"]] == [60, 60, 10]
    assert meta["model_version"] == model_version({"dim": 16, "dtype": "float32", **META})
    index = load_index(tmp_path / "index")
    assert index.ids == ids
    _, idx = index.search(vectors[:5], 1)
    np.testing.assert_array_equal(idx[:, 0], np.arange(5))
    # evaluate accepts it for exactly these ids and refuses another id list
    assert open_saved_index(tmp_path / "index", ids, tmp_path / "feat", "off") is not None
    with pytest.raises(ValueError, match="other images"):
        open_saved_index(tmp_path / "index", ids[::-1], tmp_path / "feat", "off")


def test_index_stage_trains_ivfpq_on_a_sample(tmp_path: Path) -> None:
    make_world(tmp_path, 300)
    cfg = load_config(
        None,
        [
            "index.kind=ivfpq",
            "index.nlist=4",
            "index.nprobe=4",
            "index.pq_m=4",
            "index.pq_nbits=4",
            "index.train_size=100",
        ],
    )
    meta = build_index(cfg, tmp_path / "data", tmp_path / "feat", tmp_path / "index")
    assert meta["kind"] == "ivfpq" and meta["config"]["train_size"] == 100
    assert load_index(tmp_path / "index").ntotal == 300


def test_iter_feature_chunks(tmp_path: Path) -> None:
    ids, vectors = make_world(tmp_path, 7)
    got = list(iter_feature_chunks(tmp_path / "feat" / "index", ids, 3))
    assert [len(c[0]) for c in got] == [3, 3, 1]
    np.testing.assert_allclose(np.concatenate([c[1] for c in got]), vectors)
    with pytest.raises(ValueError, match="chunk_size"):
        list(iter_feature_chunks(tmp_path / "feat" / "index", ids, 0))
