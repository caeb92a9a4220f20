"""FAISS index kinds, sharded build, merge of per-shard results, save/load metadata and atomic replacement."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from landmark.config import IndexConfig
from landmark.retrieval.index import (
    INDEX_KINDS,
    ShardedIndex,
    build_exact_index,
    build_in_memory,
    check_compatible,
    create_empty_index,
    gpu_available,
    load_index,
    merge_topk,
    model_version,
    read_index_meta,
    resolve_kind,
    search,
    to_search_device,
    train_index,
    write_index,
)

SMALL_IVF = IndexConfig(kind="ivfpq", nlist=8, pq_m=8, pq_nbits=4, nprobe=8, train_size=64)


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered(rng: np.random.Generator, n: int, d: int, clusters: int) -> np.ndarray:
    centres = unit(rng, clusters, d)
    x = centres[rng.integers(0, clusters, n)] + 0.15 * rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def chunks(vectors: np.ndarray, size: int) -> Iterator[tuple[list[str], np.ndarray]]:
    for s in range(0, len(vectors), size):
        yield [f"img{i:04d}" for i in range(s, min(s + size, len(vectors)))], vectors[s : s + size]


def test_exact_search_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    db, q = unit(rng, 50, 16), unit(rng, 5, 16)
    sims, idx = search(build_exact_index(db), q, 10)
    expected = np.argsort(-(q @ db.T), axis=1)[:, :10]
    np.testing.assert_array_equal(idx, expected)
    np.testing.assert_allclose(sims, np.take_along_axis(q @ db.T, expected, 1), rtol=1e-5)
    assert search(build_exact_index(db), q, 500)[1].shape == (5, 50)  # k clipped to the index size


def test_search_bad_input() -> None:
    index = build_exact_index(np.eye(4, dtype=np.float32))
    with pytest.raises(ValueError, match="dim"):
        search(index, np.zeros((1, 3)), 1)
    with pytest.raises(ValueError, match="k must be"):
        search(index, np.zeros((1, 4)), 0)
    with pytest.raises(ValueError, match="2-d"):
        search(index, np.zeros(4), 1)


def test_merge_topk_orders_by_similarity_then_position() -> None:
    sims = [np.array([[0.9, 0.5]]), np.array([[0.9, 0.7]]), np.array([[0.8, -np.inf]])]
    idx = [np.array([[7, 1]]), np.array([[3, 4]]), np.array([[5, -1]])]
    out_sims, out_idx = merge_topk(sims, idx, 4)
    np.testing.assert_array_equal(out_idx, [[3, 7, 5, 4]])  # 0.9 tie: position 3 before 7; -1 last
    np.testing.assert_allclose(out_sims, [[0.9, 0.9, 0.8, 0.7]])
    with pytest.raises(ValueError):
        merge_topk([], [], 1)


@pytest.mark.parametrize("kind", sorted(INDEX_KINDS))
def test_registry_kinds_build_and_search(kind: str) -> None:
    rng = np.random.default_rng(1)
    db = clustered(rng, 300, 16, 8)
    index = build_in_memory(db, replace(SMALL_IVF, kind=kind), seed=0)  # type: ignore[arg-type]
    assert index.meta["kind"] == kind and index.ntotal == 300 and index.dim == 16
    sims, idx = index.search(db[:20], 10)
    assert sims.shape == idx.shape == (20, 10)
    # a stored vector finds itself first (IVF-PQ approximates, so allow a few misses)
    assert np.mean(idx[:, 0] == np.arange(20)) >= (1.0 if kind == "flat" else 0.6)


def test_create_empty_index_errors() -> None:
    with pytest.raises(ValueError, match="unknown index kind"):
        create_empty_index("hnsw", 16, IndexConfig())
    with pytest.raises(ValueError, match="must divide"):
        create_empty_index("ivfpq", 10, SMALL_IVF)
    index = create_empty_index("ivfpq", 16, SMALL_IVF)
    with pytest.raises(ValueError, match="training vectors"):
        train_index(index, "ivfpq", np.zeros((3, 16), np.float32), SMALL_IVF)


def test_resolve_kind_auto_switches_at_the_configured_size() -> None:
    cfg = IndexConfig(kind="auto", ivfpq_min_vectors=1000)
    assert resolve_kind(cfg, 999) == "flat" and resolve_kind(cfg, 1000) == "ivfpq"
    assert resolve_kind(replace(cfg, kind="flat"), 10**9) == "flat"


def test_gpu_path_is_a_no_op_without_gpu() -> None:
    index = build_exact_index(np.eye(4, dtype=np.float32))
    if not gpu_available():
        assert to_search_device(index, "auto") is index
    assert to_search_device(index, "off") is index


def test_sharded_build_equals_exact_search_and_records_meta(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    db, q = unit(rng, 23, 8), unit(rng, 4, 8)
    cfg = IndexConfig(kind="flat", shard_size=10)
    meta = write_index(
        tmp_path / "idx",
        chunks(db, 6),
        dim=8,
        kind="flat",
        cfg=cfg,
        meta={"model_version": "abc", "split": "index"},
    )
    assert [s["ntotal"] for s in meta["shards"]] == [10, 10, 3]
    loaded = load_index(tmp_path / "idx")
    assert loaded.ids == [f"img{i:04d}" for i in range(23)]
    assert loaded.meta["model_version"] == "abc" and loaded.meta["kind"] == "flat"
    assert read_index_meta(tmp_path / "idx")["config"]["shard_size"] == 10
    sims, idx = loaded.search(q, 23)
    exact_sims, exact_idx = search(build_exact_index(db), q, 23)
    np.testing.assert_array_equal(idx, exact_idx)
    np.testing.assert_allclose(sims, exact_sims, rtol=1e-5)


def test_ivfpq_sharded_save_load_and_nprobe(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    db = clustered(rng, 400, 16, 8)
    write_index(
        tmp_path / "ivf",
        chunks(db, 128),
        dim=16,
        kind="ivfpq",
        cfg=replace(SMALL_IVF, shard_size=150),
        train_sample=db[:200],
    )
    loaded = load_index(tmp_path / "ivf", nprobe=8)
    assert len(loaded.shards) == 3 and loaded.ntotal == 400
    _, idx = loaded.search(db[:50], 10)
    _, exact = search(build_exact_index(db), db[:50], 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(idx, exact, strict=True)])
    assert recall > 0.4  # 4-bit PQ over 8 sub-vectors: coarse, but far above chance (10 / 400)
    with pytest.raises(ValueError, match="train_sample"):
        write_index(tmp_path / "x", chunks(db, 128), dim=16, kind="ivfpq", cfg=SMALL_IVF)


def test_failed_build_leaves_the_previous_index(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    good = unit(rng, 12, 8)
    target = tmp_path / "idx"
    write_index(
        target,
        chunks(good, 5),
        dim=8,
        kind="flat",
        cfg=IndexConfig(shard_size=5),
        meta={"model_version": "v1"},
    )

    def crashing() -> Iterator[tuple[list[str], np.ndarray]]:
        yield ["n0"], good[:1]
        raise RuntimeError("killed halfway")

    with pytest.raises(RuntimeError, match="killed"):
        write_index(
            target,
            crashing(),
            dim=8,
            kind="flat",
            cfg=IndexConfig(shard_size=5),
            meta={"model_version": "v2"},
        )
    loaded = load_index(target)
    assert loaded.meta["model_version"] == "v1" and loaded.ntotal == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]  # no temp dir left behind


def test_interrupted_swap_is_repaired(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    target = tmp_path / "idx"
    write_index(
        target,
        chunks(unit(rng, 6, 8), 6),
        dim=8,
        kind="flat",
        cfg=IndexConfig(),
        meta={"model_version": "v1"},
    )
    # a crash right after the old index was moved aside and before the new one was renamed in
    target.rename(tmp_path / ".idx.previous")
    assert load_index(target).meta["model_version"] == "v1"
    assert not (tmp_path / ".idx.previous").exists()


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="landmark index"):
        load_index(tmp_path / "missing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "meta.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="format"):
        load_index(tmp_path / "bad")


def test_model_version_and_compatibility() -> None:
    meta = {
        "dim": 8,
        "dtype": "float32",
        "model": {"backbone": "b", "gem_p": 3.0},
        "extract": {"image_size": 64},
    }
    version = model_version(meta)
    assert len(version) == 12 and version == model_version(json.loads(json.dumps(meta)))
    # batch size and workers do not change descriptors; the model does
    assert model_version({**meta, "extract": {"image_size": 64, "batch_size": 1, "workers": 4}}) == version
    assert model_version({**meta, "model": {"backbone": "b", "gem_p": 4.0}}) != version
    assert model_version({"model_version": "prod-7"}) == "prod-7"
    check_compatible({"model_version": version}, meta)
    with pytest.raises(ValueError, match="rebuild the index"):
        check_compatible({"model_version": "other"}, meta)


def test_sharded_index_validates_ids() -> None:
    with pytest.raises(ValueError, match="ids"):
        ShardedIndex([build_exact_index(np.eye(4, dtype=np.float32))], ["a"])
