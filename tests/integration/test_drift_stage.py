"""``landmark drift`` end to end on the tiny synthetic world: the retrain use through the CLI (with feature stores),
the ingest use on an ingestion manifest with two batches, and bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from landmark.cli import app
from landmark.config import Config, DriftConfig
from landmark.data.formats import read_dataset
from landmark.data.manifest import make_manifest, quarantined_row, write_manifest
from landmark.features.store import FeatureWriter
from landmark.ops.drift import workspace_runs
from landmark.stages.drift import drift, select_batch

if TYPE_CHECKING:
    from conftest import TinyWorld

pytestmark = pytest.mark.integration

runner = CliRunner()
QUIET = ["--set", "drift.workers=0"]


def fake_store(root: Path, ids: list[str], seed: int) -> None:
    """A feature store of unit random vectors for ``ids`` (the drift stage only needs vectors keyed by id)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(len(ids), 32)).astype(np.float32)
    with FeatureWriter(root, 32) as writer:
        writer.add(ids, x / np.linalg.norm(x, axis=1, keepdims=True))


def test_cli_retrain_test_vs_train_end_to_end(tiny_world: TinyWorld, tmp_path: Path) -> None:
    dataset = read_dataset(tiny_world.root)
    features = tmp_path / "features"
    for seed, split in enumerate(("train", "test")):
        fake_store(features / split, list(dataset.ok_ids(split)), seed)
    out, workspace = tmp_path / "drift", tmp_path / "ws"
    args = ["drift", "--reference", str(tiny_world.root), "--current", str(tiny_world.root)]
    args += ["--reference-features", str(features), "--current-features", str(features)]
    result = runner.invoke(app, [*QUIET, *args, "--out", str(out), "--workspace", str(workspace)])
    assert result.exit_code == 0, result.output
    assert (
        "drift PASSED" in result.output or "drift FAILED" in result.output
    )  # the verdict, exit 0 either way
    report = json.loads((out / "drift.json").read_text())
    assert 0.0 <= report["drift_share"] <= 1.0 and report["max_drift_share"] == DriftConfig().max_drift_share
    assert report["passed"] == (report["drift_share"] <= report["max_drift_share"])
    assert report["reference_rows"] == len(dataset.ok_ids("train"))
    assert report["current_rows"] == len(dataset.manifest("test"))
    columns = {c["column"] for c in report["columns"]}
    assert {"brightness", "width", "decode_failed", "emb_pc01", "emb_residual"} <= columns
    assert report["metadata"] == {
        "purpose": "retrain",
        "reference": f"{tiny_world.root} [train]",
        "current": f"{tiny_world.root} [test]",
    }
    assert (out / "report.html").is_file() and (out / "evidently.json").is_file()
    assert len(workspace_runs(workspace, "landmark")) == 1

    again = runner.invoke(
        app, [*QUIET, *args, "--out", str(out), "--workspace", str(workspace), "--no-snapshot"]
    )
    assert again.exit_code == 0, again.output
    assert len(workspace_runs(workspace, "landmark")) == 1  # --no-snapshot stores nothing


def brighter_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.asarray(Image.open(source).convert("RGB"), dtype=np.int16) + 90
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).resize((300, 300)).save(target, quality=90)


def test_ingest_newest_batch_vs_training_data(tiny_world: TinyWorld, tmp_path: Path) -> None:
    dataset = read_dataset(tiny_world.root)
    train = dataset.image_paths("train")
    ingest_root = tmp_path / "ingest"
    old = [
        {"image_id": f"old{i}", "uri": str(p), "batch_id": "b1"}
        for i, p in enumerate(list(train.values())[:8])
    ]
    new = []
    for i, path in enumerate(list(train.values())[8:20]):
        brighter_copy(path, ingest_root / "images" / f"new{i}.jpg")
        new.append({"image_id": f"new{i}", "uri": f"images/new{i}.jpg", "batch_id": "b2"})
    (ingest_root / "images" / "new0.jpg").write_bytes(
        b"\xff\xd8\xff\xe0 cut"
    )  # a file that no longer decodes
    new.append(quarantined_row("new99", "truncated", "cut at 5 bytes", batch_id="b2"))
    write_manifest(make_manifest(old + new), ingest_root / "manifests" / "train.parquet")

    cfg = Config(drift=DriftConfig(workers=0, embedding_components=0))
    summary = drift(
        cfg, tiny_world.root, ingest_root, tmp_path / "out", purpose="ingest", log_to_workspace=False
    )
    result = summary.result
    assert result.current_rows == 13  # only the newest batch (b2): 12 images + 1 quarantined row
    assert result.current_decode_failure_rate == pytest.approx(2 / 13)
    assert result.metadata["current"].endswith("train.parquet batch b2")
    assert {"brightness", "width", "height"} <= set(result.drifted_columns)
    assert not result.passed
    assert summary.snapshot_id is None and summary.workspace is None


def test_select_batch() -> None:
    manifest = make_manifest(
        [
            {"image_id": "a", "uri": "a.jpg", "batch_id": "b1"},
            {"image_id": "b", "uri": "b.jpg", "batch_id": "b2"},
        ]
    )
    assert select_batch(manifest, "latest")[0]["image_id"].tolist() == ["b"]
    assert select_batch(manifest, "b1")[0]["image_id"].tolist() == ["a"]
    assert len(select_batch(manifest, "all")[0]) == 2
    with pytest.raises(ValueError, match="no rows of batch 'b9'"):
        select_batch(manifest, "b9")


def test_cli_bad_input_is_one_line_error(tiny_world: TinyWorld, tmp_path: Path) -> None:
    base = [*QUIET, "drift", "--reference", str(tiny_world.root), "--out", str(tmp_path / "out")]
    one_side = runner.invoke(
        app, [*base, "--current", str(tiny_world.root), "--reference-features", str(tmp_path)]
    )
    assert one_side.exit_code == 1
    assert "both sides" in one_side.output and "Traceback" not in one_side.output
    missing = runner.invoke(app, [*base, "--current", str(tmp_path / "nowhere")])
    assert missing.exit_code == 1 and "neither a manifest file nor a directory" in missing.output
    assert missing.output.strip().count("\n") == 0  # one line, however long the path
    purpose = runner.invoke(app, [*base, "--current", str(tiny_world.root), "--purpose", "nightly"])
    assert purpose.exit_code == 1 and "purpose must be one of" in purpose.output
