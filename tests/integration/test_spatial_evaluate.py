"""`landmark evaluate` with spatial verification switched on: re-ranking by inliers and the recognition inlier
term read local features from ``--local DIR/<split>`` (the `landmark local` output) through one verifier."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from typer.testing import CliRunner

from landmark.cli import app
from landmark.config import Config, RecognizeConfig, RerankConfig
from landmark.stages.evaluate import local_verifier

if TYPE_CHECKING:
    from conftest import TinyWorld

SETTINGS = [
    "--set", "extract.scales=[1.0]",
    "--set", "extract.image_size=128",
    "--set", "extract.workers=0",
    "--set", "local.workers=0",
    "--set", "evaluate.grid_queries=0",
]  # fmt: skip

runner = CliRunner()


def invoke(*args: str) -> str:
    result = runner.invoke(app, [*SETTINGS, *args])
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def test_evaluate_with_spatial_reranking_and_inlier_term(tiny_world: TinyWorld, tmp_path: Path) -> None:
    data = str(tiny_world.root)
    invoke("extract", "--data", data, "--out", str(tmp_path / "features"))
    for split in ("test", "index", "train"):
        invoke("local", "--data", data, "--split", split, "--out", str(tmp_path / "local"))
    spatial = ["--set", "rerank.spatial=true", "--set", "recognize.inliers=true"]
    result = runner.invoke(
        app,
        [*SETTINGS, *spatial, "evaluate", "--data", data, "--features", str(tmp_path / "features"),
         "--local", str(tmp_path / "local"), "--out", str(tmp_path / "eval")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert "spatial" in metrics["rerank"]["steps"]
    assert metrics["rerank"]["seconds"].get("spatial", 0) > 0
    assert "GAP" in metrics["recognition"]

    missing = runner.invoke(
        app,
        [*SETTINGS, *spatial, "evaluate", "--data", data, "--features", str(tmp_path / "features"),
         "--local", str(tmp_path / "nowhere"), "--out", str(tmp_path / "eval2")],
    )  # fmt: skip
    assert missing.exit_code == 0, missing.output  # skipped and said, like the label steps without train
    skipped = json.loads((tmp_path / "eval2" / "metrics.json").read_text())["rerank"]
    assert "spatial" not in skipped["steps"]
    assert any(
        "spatial verification skipped: no local features for test, index, train" in n
        for n in skipped["notes"]
    )


def test_no_verifier_unless_asked(tmp_path: Path) -> None:
    off = Config(rerank=RerankConfig(spatial=False), recognize=RecognizeConfig(inliers=False))
    assert local_verifier(off, tmp_path) == (None, "")
    asked = Config(rerank=RerankConfig(spatial=True), recognize=RecognizeConfig(inliers=False))
    verifier, note = local_verifier(asked, tmp_path)
    assert verifier is None and note.startswith("no local features for test, index in")
