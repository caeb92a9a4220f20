"""The evaluate stage on a hand-made GLDv2-layout world with known descriptors (no model involved):
retrieval + re-ranking + recognition metrics, plots, the saved-index path and the missing-train fallback."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from landmark.config import Config, load_config
from landmark.data.gldv2 import image_relpath
from landmark.data.groundtruth import QueryTruth
from landmark.data.revisitop import write_gnd
from landmark.features.store import FeatureWriter
from landmark.retrieval.metrics import global_average_precision
from landmark.retrieval.recognize import LabelPrediction, operating_point, recognition_metrics
from landmark.stages.evaluate import evaluate
from landmark.stages.index import build_index

META = {"model": {"backbone": "handmade"}, "extract": {"image_size": 32}}
DIM = 8


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 landmarks (ids 10, 11, 12) as clusters; index 4 each + 4 distractors; test 2 each + 3 non-landmark."""
    root = tmp_path_factory.mktemp("world")
    rng = np.random.default_rng(0)
    centres = np.eye(DIM)[:3]

    def around(c: np.ndarray, n: int, spread: float) -> np.ndarray:
        return unit_rows(c + spread * rng.standard_normal((n, DIM)))

    train_ids = [f"tr{i:03d}" for i in range(15)]
    index_ids = [f"ix{i:03d}" for i in range(16)]
    test_ids = [f"te{i:03d}" for i in range(9)]
    vectors = {
        "train": np.vstack([around(c, 5, 0.2) for c in centres]),
        "index": np.vstack([around(c, 4, 0.3) for c in centres] + [unit_rows(rng.standard_normal((4, DIM)))]),
        "test": np.vstack([around(c, 2, 0.3) for c in centres] + [unit_rows(rng.standard_normal((3, DIM)))]),
    }
    ids = {"train": train_ids, "index": index_ids, "test": test_ids}
    train_labels = np.repeat([10, 11, 12], 5)
    (root / "train.csv").write_text(
        "id,url,landmark_id\n"
        + "".join(f"{i},u,{lab}\n" for i, lab in zip(train_ids, train_labels, strict=True))
    )
    for split in ("index", "test"):
        (root / f"{split}.csv").write_text("id,url\n" + "".join(f"{i},u\n" for i in ids[split]))
    test_labels = [10, 10, 11, 11, 12, 12, None, None, None]
    index_of = {lab: index_ids[4 * k : 4 * k + 4] for k, lab in enumerate((10, 11, 12))}
    (root / "recognition_solution.csv").write_text(
        "id,landmarks,Usage\n"
        + "".join(f"{t},{lab or ''},Public\n" for t, lab in zip(test_ids, test_labels, strict=True))
    )
    (root / "retrieval_solution.csv").write_text(
        "id,images,Usage\n"
        + "".join(
            f"{t},{' '.join(index_of[lab])},Public\n"
            for t, lab in zip(test_ids, test_labels, strict=True)
            if lab
        )
    )
    truths = [
        QueryTruth(t, easy=index_of[lab][:3], hard=index_of[lab][3:], junk=[])
        for t, lab in zip(test_ids, test_labels, strict=True)
        if lab
    ]
    write_gnd(root / "gnd_world.pkl", index_ids, truths)
    for split in ("train", "index", "test"):
        with FeatureWriter(root / "feat" / split, DIM, meta=META) as writer:
            writer.add(ids[split], vectors[split])
        for k, image_id in enumerate(ids[split]):
            path = root / image_relpath(split, image_id)
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((24, 32, 3), 20 * k % 256, dtype=np.uint8)).save(path)
    return root


def cfg_for_test() -> Config:
    cfg = load_config(
        None, ["evaluate.grid_queries=2", "evaluate.grid_results=3", "recognize.target_fpr=0.0"]
    )
    return replace(cfg, index=replace(cfg.index, kind="flat"))


def test_evaluate_writes_all_metrics_and_plots(world: Path, tmp_path: Path) -> None:
    metrics = evaluate(cfg_for_test(), world, world / "feat", tmp_path)
    assert metrics["rerank"]["steps"] == ["dba", "alpha_qe", "sort_step", "insert_step"]
    assert metrics["n_queries"] == 6 and metrics["n_database"] == 16 and metrics["n_test"] == 9
    # well-separated clusters: every re-ranked list starts with the query's 4 index images
    assert metrics["revisitop"]["medium"]["mAP"] == pytest.approx(100.0)
    assert metrics["gldv2_retrieval"]["mAP@100"] == pytest.approx(100.0)
    assert metrics["gldv2_retrieval"]["queries"] == 6
    rec = metrics["recognition"]
    assert rec["top1"] == pytest.approx(100.0) and rec["landmark_queries"] == 6 and rec["queries"] == 9
    assert 0.0 < rec["GAP"] <= 100.0 and rec["threshold"] is not None
    # the threshold comes from the calibration share; the operating point is measured on the rest
    assert rec["calibration"]["queries"] + rec["at_threshold"]["queries"] == 9
    assert {"fpr_non_landmark", "precision", "recall", "accepted"} <= set(rec["at_threshold"])
    ranks = np.load(tmp_path / "ranks.npy")
    assert ranks.shape == (16, 6)
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    plots = tmp_path / "plots"
    for name in ("pr_easy.csv", "pr_medium.csv", "pr_hard.csv", "precision_recall.png", "results_grid.png"):
        assert (plots / name).is_file(), name
    assert (plots / "pr_medium.csv").read_text().splitlines()[0] == "recall,precision"


def test_evaluate_with_a_saved_index_and_without_train_features(world: Path, tmp_path: Path) -> None:
    cfg = cfg_for_test()
    build_index(cfg, world, world / "feat", tmp_path / "index")
    no_dba = replace(cfg, rerank=replace(cfg.rerank, dba=False))
    metrics = evaluate(
        no_dba, world, world / "feat", tmp_path / "a", index_dir=tmp_path / "index", plots=False
    )
    assert metrics["index"] == {"saved": str(tmp_path / "index"), "query_search": "saved"}
    assert not (tmp_path / "a" / "plots").exists()
    # a feature root without train/: label steps and recognition are skipped, and metrics.json says so
    features = tmp_path / "feat"
    for split in ("index", "test"):
        (features / split).mkdir(parents=True)
        for f in (world / "feat" / split).iterdir():
            (features / split / f.name).write_bytes(f.read_bytes())
    metrics = evaluate(cfg, world, features, tmp_path / "b", plots=False)
    assert metrics["rerank"]["steps"] == ["dba", "alpha_qe"]
    assert "sort/insert steps skipped" in metrics["rerank"]["notes"][0]
    assert "no train features" in metrics["recognition"]["skipped"]


def test_recognition_metrics_and_operating_point_by_hand() -> None:
    solution = {"a": (1,), "b": (2,), "n1": (), "n2": ()}
    prediction = LabelPrediction(np.array([1, 3, 5, 6]), np.array([0.9, 0.8, 0.7, 0.2]))
    report = recognition_metrics(
        prediction, ["a", "b", "n1", "n2"], solution, target_fpr=0.0, calibration_fraction=0.5, seed=0
    )
    assert report["GAP"] == pytest.approx(50.0)  # a right (P 1), then b, n1, n2 wrong: 1 / 2 landmark queries
    assert report["top1"] == pytest.approx(50.0)
    point = operating_point({"a": (1, 0.9), "b": (3, 0.8), "n1": (5, 0.7)}, solution, threshold=0.75)
    assert point == {
        "queries": 4,
        "accepted": 2,
        "fpr_non_landmark": 0.0,
        "precision": 50.0,
        "recall": 50.0,
        "GAP": pytest.approx(100.0 * global_average_precision({"a": (1, 0.9), "b": (3, 0.8)}, solution)),
    }
