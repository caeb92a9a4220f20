"""`landmark local` + `landmark clean` through the CLI on the session's tiny synthetic world with SIFT: the
cleaned manifest passes the cleaning gate, injected noise goes, a rerun is idempotent, and local extraction
resumes after a partial run."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from landmark.cli import app
from landmark.config import load_config
from landmark.features.local_store import LocalFeatureReader, LocalStoreError, stored_local_ids
from landmark.stages.local import local

if TYPE_CHECKING:
    from conftest import TinyWorld

SETTINGS = [
    "--set", "model.pretrained=none",  # with k >= the train size every same-label image is a candidate anyway
    "--set", "extract.scales=[1.0]",
    "--set", "extract.image_size=128",
    "--set", "extract.workers=0",
    "--set", "local.image_size=0",
    "--set", "local.workers=0",
    "--set", "clean.min_inliers=10",
    "--set", "clean.workers=0",
]  # fmt: skip

runner = CliRunner()


def invoke(*args: str) -> str:
    result = runner.invoke(app, [*SETTINGS, *args])
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())  # rich wraps long lines


@pytest.fixture(scope="module")
def cleaned(tiny_world: TinyWorld, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clean")
    data = str(tiny_world.root)
    invoke("extract", "--data", data, "--split", "train", "--out", str(root / "boot"))
    out = invoke("local", "--data", data, "--split", "train", "--out", str(root / "local"))
    assert "extracted 36 of 36 train images" in out
    out = invoke(
        "clean", "--data", data, "--features", str(root / "boot"), "--local", str(root / "local"),
        "--out", str(root / "clean"),
    )  # fmt: skip
    assert "cleaning gate passed" in out
    return root


def test_outputs_and_gate(cleaned: Path, tiny_world: TinyWorld) -> None:
    from landmark.data.manifest import read_manifest

    manifest = read_manifest(cleaned / "clean" / "train.parquet")
    dropped = pd.read_parquet(cleaned / "clean" / "dropped.parquet")
    report = pd.read_parquet(cleaned / "clean" / "class_report.parquet")
    summary = json.loads((cleaned / "clean" / "clean.json").read_text())
    gate = json.loads((cleaned / "clean" / "validate_clean.json").read_text())
    assert gate["passed"] and summary["gate"]["passed"]
    assert len(manifest) == 36  # every row stays; dropped ones are quarantined with their reason
    quarantined = manifest[manifest["status"] == "quarantined"]
    assert sorted(quarantined["image_id"]) == sorted(dropped["image_id"])
    assert quarantined["reason"].str.match(r"^clean_(unverified|small_class|no_label): ").all()
    assert set(dropped["clean_reason"]) <= {"unverified", "small_class", "no_label"}
    assert summary["kept"] + summary["dropped"] == 36 == summary["images"]
    assert summary["kept"] == int(report["images_kept"].sum()) == int((manifest["status"] == "ok").sum())
    pairs = summary["pairs"]
    assert pairs["unique"] + pairs["saved_by_dedup"] == pairs["directed"]
    assert pairs["verified"] + pairs["skipped_decided"] == pairs["unique"]
    assert 0 < pairs["verified"] <= pairs["unique"] and pairs["verify_rounds"] >= 1
    assert summary["bootstrap"]["kind"] == "pretrained"
    assert summary["bootstrap"]["model"]["pretrained"] == "none"
    # the injected noise is what goes: every junk and wrong-label image is dropped
    meta = tiny_world.meta.set_index("image_id")
    noisy = set(meta.index[(meta["split"] == "train") & (meta["noise"] != "none")])
    assert noisy and noisy <= set(dropped["image_id"])
    assert summary["kept"] >= 0.6 * (36 - len(noisy))


def test_rerun_is_idempotent(cleaned: Path, tiny_world: TinyWorld) -> None:
    first = {
        n: pd.read_parquet(cleaned / "clean" / n)
        for n in ("train.parquet", "dropped.parquet", "class_report.parquet")
    }
    out = invoke("local", "--data", str(tiny_world.root), "--split", "train", "--out", str(cleaned / "local"))
    assert "extracted 0 of 36 train images (36 already stored)" in out
    invoke(
        "clean", "--data", str(tiny_world.root), "--features", str(cleaned / "boot"),
        "--local", str(cleaned / "local"), "--out", str(cleaned / "clean"),
    )  # fmt: skip
    for name, frame in first.items():
        pd.testing.assert_frame_equal(pd.read_parquet(cleaned / "clean" / name), frame)


def test_local_resumes_after_a_partial_run(cleaned: Path, tiny_world: TinyWorld, tmp_path: Path) -> None:
    cfg = load_config(None, SETTINGS[1::2])
    full = LocalFeatureReader(cleaned / "local" / "train")
    first = local(cfg, tiny_world.root, tmp_path, shard_size=8, limit=20, progress=False)
    assert (first.extracted, first.already_stored) == (20, 0)
    store = tmp_path / "train"
    # a run killed mid-shard leaves arrays without an ids file: that shard does not count
    (store / "shard-00002.ids.txt").unlink()
    assert len(stored_local_ids(store)) == 16
    second = local(cfg, tiny_world.root, tmp_path, shard_size=8, progress=False)
    assert (second.extracted, second.already_stored, second.images) == (20, 16, 36)
    resumed = LocalFeatureReader(store)
    assert sorted(resumed.ids()) == sorted(full.ids())
    for image_id in full.ids()[::5]:
        a, b = full.load(image_id), resumed.load(image_id)
        np.testing.assert_array_equal(a.locations, b.locations)
        np.testing.assert_array_equal(a.descriptors, b.descriptors)
    other = dataclasses.replace(cfg, local=dataclasses.replace(cfg.local, max_features=50))
    with pytest.raises(LocalStoreError, match="different max_features"):
        local(other, tiny_world.root, tmp_path, progress=False)


def test_clean_fails_clearly_without_local_features(
    cleaned: Path, tiny_world: TinyWorld, tmp_path: Path
) -> None:
    shutil.copytree(cleaned / "local", tmp_path / "local")
    for path in (tmp_path / "local" / "train").glob("shard-*.ids.txt"):
        path.unlink()  # as if every shard had been cut short
    result = runner.invoke(
        app,
        [*SETTINGS, "clean", "--data", str(tiny_world.root), "--features", str(cleaned / "boot"),
         "--local", str(tmp_path / "local"), "--out", str(tmp_path / "out")],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "have no local features" in " ".join(result.output.split())


def test_failed_gate_stops_with_a_clear_error(cleaned: Path, tiny_world: TinyWorld, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [*SETTINGS, "--set", "validate.clean_max_dropped_share=0.01", "clean", "--data", str(tiny_world.root),
         "--features", str(cleaned / "boot"), "--local", str(cleaned / "local"), "--out", str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "data quality gate 'cleaning' FAILED" in result.output
    summary = json.loads((tmp_path / "clean.json").read_text())
    assert summary["gate"]["passed"] is False and summary["dropped"] >= 1  # outputs are kept for inspection
