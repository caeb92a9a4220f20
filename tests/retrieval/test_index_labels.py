"""Labels saved with an index (landmark.retrieval.index_labels) and the index stage writing them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from landmark.config import load_config
from landmark.features.store import FeatureWriter
from landmark.retrieval.index_labels import (
    LABELS_FILE,
    read_index_labels,
    read_labelled_set,
    write_index_labels,
    write_labelled_set,
)
from landmark.retrieval.recognize import LabelledSet
from landmark.stages.index import build_index

META = {"model": {"backbone": "tiny"}, "extract": {"image_size": 64}}


def unit(rng: np.random.Generator, n: int, dim: int = 8) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_world(root: Path, *, train_meta: dict[str, object] | None = None) -> None:
    """GLDv2 layout: 5 unlabelled index images, 6 train images (one labelled -1), features of both."""
    rng = np.random.default_rng(0)
    data = root / "data"
    data.mkdir(parents=True)
    (data / "index.csv").write_text("id,url\n" + "".join(f"ix{i},u\n" for i in range(5)))
    labels = [7, 7, 8, 8, 9, -1]
    (data / "train.csv").write_text(
        "id,url,landmark_id\n" + "".join(f"tr{i},u,{lab}\n" for i, lab in enumerate(labels))
    )
    with FeatureWriter(root / "feat" / "index", 8, meta=META) as writer:
        writer.add([f"ix{i}" for i in range(5)], unit(rng, 5))
    with FeatureWriter(root / "feat" / "train", 8, meta=train_meta or META) as writer:
        writer.add([f"tr{i}" for i in range(6)], unit(rng, 6))


def test_round_trips(tmp_path: Path) -> None:
    write_index_labels(tmp_path, "index", [3, -1, 4])
    np.testing.assert_array_equal(read_index_labels(tmp_path, 3), [3, -1, 4])
    with pytest.raises(ValueError, match="holds 3 labels for an index of 4"):
        read_index_labels(tmp_path, 4)
    assert read_labelled_set(tmp_path) is None
    labelled = LabelledSet(np.eye(3, dtype=np.float32), np.array([1, 2, 2]), ("a", "b", "c"))
    assert write_labelled_set(tmp_path, labelled)["train_set"] == {
        "dir": "train_set",
        "images": 3,
        "classes": 2,
    }
    back = read_labelled_set(tmp_path)
    assert back is not None and back.ids == ("a", "b", "c")
    np.testing.assert_array_equal(back.vectors, labelled.vectors)
    np.testing.assert_array_equal(back.labels, [1, 2, 2])
    (tmp_path / LABELS_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="not an index labels file"):
        read_index_labels(tmp_path, 3)
    assert read_index_labels(tmp_path / "nothing", 3) is None


def test_index_stage_writes_labels_and_the_train_set(tmp_path: Path) -> None:
    make_world(tmp_path)
    cfg = load_config(None, ["index.kind=flat"])
    meta = build_index(cfg, tmp_path / "data", tmp_path / "feat", tmp_path / "index")
    assert meta["labels"] == {"file": LABELS_FILE, "known": 0, "unknown": 5}
    assert meta["train_set"] == {"dir": "train_set", "images": 5, "classes": 3}  # the -1 image is left out
    assert json.loads((tmp_path / "index" / "meta.json").read_text())["train_set"]["images"] == 5
    np.testing.assert_array_equal(read_index_labels(tmp_path / "index", 5), [-1] * 5)
    train = read_labelled_set(tmp_path / "index")
    assert train is not None and train.ids == ("tr0", "tr1", "tr2", "tr3", "tr4")
    np.testing.assert_array_equal(train.labels, [7, 7, 8, 8, 9])


def test_train_features_of_another_model_are_not_saved(tmp_path: Path) -> None:
    make_world(tmp_path, train_meta={"model": {"backbone": "other"}, "extract": {"image_size": 64}})
    meta = build_index(
        load_config(None, ["index.kind=flat"]), tmp_path / "data", tmp_path / "feat", tmp_path / "ix"
    )
    assert "not comparable" in meta["train_set"]["skipped"]
    assert read_labelled_set(tmp_path / "ix") is None
