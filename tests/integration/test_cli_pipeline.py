"""End to end through the CLI on a tiny synthetic world: synth -> extract -> evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from landmark.cli import app

TINY = [
    "--set", "synth.num_landmarks=4",
    "--set", "synth.train_per_landmark=2",
    "--set", "synth.index_per_landmark=4",
    "--set", "synth.queries=6",
    "--set", "synth.index_distractors=6",
    "--set", "synth.test_distractors=2",
    "--set", "synth.image_size=160",
    "--set", "synth.facet_size=256",
    "--set", "synth.workers=0",
    "--set", "extract.image_size=160",
    "--set", "extract.workers=0",
]  # fmt: skip

runner = CliRunner()


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    for args in (
        ["synth", "--out", str(root / "synth")],
        [
            "extract",
            "--data",
            str(root / "synth"),
            "--out",
            str(root / "feat"),
            "--split",
            "index",
            "--split",
            "test",
        ],
        [
            "evaluate",
            "--data",
            str(root / "synth"),
            "--features",
            str(root / "feat"),
            "--out",
            str(root / "eval"),
        ],
    ):
        result = runner.invoke(app, [*TINY, *args])
        assert result.exit_code == 0, result.output
    return root


def test_evaluate_writes_revisitop_outputs(pipeline: Path) -> None:
    metrics = json.loads((pipeline / "eval" / "metrics.json").read_text())
    ranks = np.load(pipeline / "eval" / "ranks.npy")
    assert ranks.shape == (metrics["n_database"], metrics["n_queries"])
    assert metrics["n_database"] == 4 * 4 + 6 and metrics["n_queries"] == 6
    # every column is a permutation of the database
    assert all(sorted(ranks[:, q]) == list(range(ranks.shape[0])) for q in range(ranks.shape[1]))
    for protocol in ("easy", "medium", "hard"):
        assert 0.0 <= metrics["revisitop"][protocol]["mAP"] <= 100.0
    # pretrained descriptors retrieve far better than chance on the synthetic world
    assert metrics["revisitop"]["medium"]["mAP"] > 30.0


def test_extract_is_resumable_and_idempotent(pipeline: Path) -> None:
    args = ["extract", "--data", str(pipeline / "synth"), "--out", str(pipeline / "feat"), "--split", "test"]
    result = runner.invoke(app, [*TINY, *args])
    assert result.exit_code == 0, result.output
    assert "extracted 0 new descriptors" in result.output


def test_changed_model_extracts_the_store_anew(pipeline: Path) -> None:
    """Descriptors of another model are not comparable: the split is extracted anew (all of it), and a rerun
    with that model is incremental again (nothing new)."""
    from landmark.features.store import read_meta, stored_ids

    args = [
        "extract",
        "--data",
        str(pipeline / "synth"),
        "--out",
        str(pipeline / "feat_model"),
        "--split",
        "test",
    ]
    assert runner.invoke(app, [*TINY, *args]).exit_code == 0
    store = pipeline / "feat_model" / "test"
    ids = stored_ids(store)
    result = runner.invoke(app, [*TINY, "--set", "model.gem_p=4.0", *args])
    assert result.exit_code == 0, result.output
    assert f"extracted {len(ids)} new descriptors" in result.output
    assert sorted(stored_ids(store)) == sorted(ids)
    assert read_meta(store)["model"]["gem_p"] == 4.0  # type: ignore[index]
    again = runner.invoke(app, [*TINY, "--set", "model.gem_p=4.0", *args])
    assert "extracted 0 new descriptors" in again.output


def test_user_errors_are_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["evaluate", "--data", str(tmp_path / "nope"), "--features", str(tmp_path)])
    assert result.exit_code == 1
    assert "error:" in result.output and "Traceback" not in result.output
    bad = runner.invoke(app, ["--set", "extract.batch_sise=3", "extract"])
    assert bad.exit_code == 1 and "extract.batch_sise" in bad.output


def test_help_everywhere() -> None:
    for command in (
        [],
        ["synth"],
        ["extract"],
        ["evaluate"],
        ["clean"],
        ["drift"],
        ["promote"],
        ["train-delf"],
    ):
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output
