"""Ingestion from a local folder, the synthetic generator and an S3 prefix; the CLI; an abandoned batch."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from http_images import make_image
from typer.testing import CliRunner

from landmark.cli import app
from landmark.config import Config, IngestConfig, SynthConfig
from landmark.data.ingest import ItemOutcome, batch_summary_path, journal_path
from landmark.data.manifest import read_manifest, reason_code
from landmark.platform.storage import ObjectStore
from landmark.stages.ingest import ingest

pytestmark = pytest.mark.integration

TINY_SYNTH = SynthConfig(
    num_landmarks=3,
    train_per_landmark=3,
    index_per_landmark=2,
    queries=2,
    index_distractors=2,
    test_distractors=1,
    image_size=96,
    facet_size=128,
    workers=0,
)


def folder_dataset(root: Path, seed: int = 0) -> Path:
    """paris/{p1,p2}.jpg, rome/r1.png, rome/r2.jpg (not an image), rome/"bad id!.jpg" (unsafe id)."""
    for name in ("paris", "rome"):
        (root / name).mkdir(parents=True)
    (root / "paris" / "p1.jpg").write_bytes(make_image(seed + 1))
    (root / "paris" / "p2.jpg").write_bytes(make_image(seed + 2))
    (root / "rome" / "r1.png").write_bytes(make_image(seed + 3, fmt="PNG"))
    (root / "rome" / "r2.jpg").write_bytes(b"GIF? no: plain text pretending to be a photo")
    (root / "rome" / "bad id!.jpg").write_bytes(make_image(seed + 4))
    return root


def local_config(workers: int = 2) -> Config:
    return dataclasses.replace(Config(), ingest=IngestConfig(store="local", workers=workers))


def test_local_folder_into_the_data_dir(tmp_path: Path) -> None:
    source = folder_dataset(tmp_path / "photos")
    out = tmp_path / "ingest"
    summary = ingest(local_config(), str(source), out, progress=False)
    manifest = read_manifest(out / "manifests" / "train.parquet")
    status = {
        i: (s, reason_code(r) if r else "")
        for i, s, r in zip(manifest["image_id"], manifest["status"], manifest["reason"], strict=True)
    }
    assert status == {
        "p1": ("ok", ""),
        "p2": ("ok", ""),
        "r1": ("ok", ""),
        "r2": ("quarantined", "not_an_image"),
        "bad id!": ("quarantined", "unsafe_id"),
    }
    ok = manifest[manifest["status"] == "ok"].set_index("image_id")
    assert ok.loc["p1", "landmark_id"] == 0 and ok.loc["r1", "landmark_id"] == 1
    assert ok.loc["p1", "url"] == (source / "paris" / "p1.jpg").resolve().as_uri()
    assert (out / ok.loc["r1", "uri"]).read_bytes() == (source / "rome" / "r1.png").read_bytes()
    assert ok.loc["r1", "uri"].endswith(".png")
    assert summary.added == 3 and summary.quarantined == {"not_an_image": 1, "unsafe_id": 1}
    assert json.loads(batch_summary_path(out, summary.batch_id).read_text())["added"] == 3
    assert ingest(local_config(), str(source), out, progress=False).added == 0


def test_synthetic_generator_source(tmp_path: Path) -> None:
    cfg = dataclasses.replace(local_config(), synth=TINY_SYNTH, seed=5)
    summary = ingest(cfg, "synth", tmp_path / "ingest", progress=False)
    manifest = read_manifest(tmp_path / "ingest" / "manifests" / "train.parquet")
    assert summary.added == len(manifest) == 3 * 3 and summary.quarantined_total == 0
    assert manifest["url"].str.startswith("synth://train/").all()
    assert ingest(cfg, "synth", tmp_path / "ingest", progress=False).added == 0  # same seed, same world


def test_s3_prefix_into_both_stores(tmp_path: Path, object_store: ObjectStore) -> None:
    uploads = {
        "src/7/x1.jpg": make_image(11),
        "src/7/x2.jpg": make_image(12),
        "src/flat.png": make_image(13, fmt="PNG"),
        "src/notes.txt": b"skipped: not an image suffix",
        "src/8/broken.jpg": b"not a jpeg at all",
    }
    for key, data in uploads.items():
        object_store.put_bytes(key, data)
    cfg = dataclasses.replace(
        Config(),
        ingest=IngestConfig(store="both", workers=2),
        storage=dataclasses.replace(
            Config().storage, bucket=object_store.bucket, endpoint=object_store.settings.endpoint
        ),
    )
    summary = ingest(
        cfg,
        f"s3://{object_store.bucket}/src/",
        tmp_path / "ingest",
        object_store=object_store,
        progress=False,
    )
    manifest = read_manifest(tmp_path / "ingest" / "manifests" / "train.parquet").set_index("image_id")
    assert summary.added == 3 and summary.quarantined == {"not_an_image": 1}
    assert manifest.loc["x1", "landmark_id"] == 7 and manifest.loc["flat", "landmark_id"] == -1
    assert manifest.loc["x1", "url"] == f"s3://{object_store.bucket}/src/7/x1.jpg"
    for image_id in ("x1", "x2", "flat"):
        uri = manifest.loc[image_id, "uri"]
        assert uri.startswith("images/")  # "both": the manifest points at the local copy ...
        assert object_store.get_bytes(uri) == (tmp_path / "ingest" / uri).read_bytes()  # ... mirrored in S3


def test_abandoned_batch_is_committed_before_another_source(tmp_path: Path) -> None:
    first = folder_dataset(tmp_path / "first")
    second = folder_dataset(tmp_path / "second", seed=100)
    for path in (second / "paris").iterdir():
        path.rename(path.with_name("s" + path.name))
    out = tmp_path / "ingest"
    seen: list[ItemOutcome] = []

    def crash_after_two(outcome: ItemOutcome) -> None:
        seen.append(outcome)
        if len(seen) == 2:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        ingest(local_config(workers=1), str(first), out, on_outcome=crash_after_two, progress=False)
    assert journal_path(out, "train").is_file()

    summary = ingest(local_config(), str(second), out, progress=False)
    manifest = read_manifest(out / "manifests" / "train.parquet")
    partial = [
        json.loads(p.read_text()) for p in (out / "batches").glob("*.json") if p.stem != summary.batch_id
    ]
    assert len(partial) == 1 and partial[0]["partial"] is True
    assert set(manifest["batch_id"]) == {partial[0]["batch_id"], summary.batch_id}
    assert (manifest["batch_id"] == partial[0]["batch_id"]).sum() == 2  # the two finished items, kept
    assert {o.image_id for o in seen} <= set(manifest["image_id"])
    assert not journal_path(out, "train").exists()


def test_cli_ingest_writes_a_summary(tmp_path: Path) -> None:
    source = folder_dataset(tmp_path / "photos")
    result = CliRunner().invoke(
        app,
        [
            "--set",
            "ingest.workers=2",
            "ingest",
            str(source),
            "--out",
            str(tmp_path / "out"),
            "--summary",
            str(tmp_path / "s.json"),
        ],
        terminal_width=200,
    )
    assert result.exit_code == 0, result.output
    assert "quarantined: not_an_image" in result.output
    assert json.loads((tmp_path / "s.json").read_text())["added"] == 3
    missing = CliRunner().invoke(app, ["ingest", str(tmp_path / "nope.csv")])
    assert missing.exit_code == 1 and "cannot tell what source" in missing.output
