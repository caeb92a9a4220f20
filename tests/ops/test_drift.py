"""Drift statistics, the Evidently drift report and the monitoring workspace, on hand-made images and vectors."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from landmark.config import DriftConfig
from landmark.data.manifest import make_manifest, quarantined_row
from landmark.ops.drift import (
    DEFAULT_EVAL_METRICS,
    IMAGE_STAT_COLUMNS,
    PANEL_EVALUATION,
    DriftResult,
    ImageRef,
    add_to_workspace,
    drift_frame,
    drift_report,
    embedding_columns,
    embedding_frame,
    fit_embedding_pca,
    image_stats,
    log_metrics,
    manifest_images,
    pixel_stats,
    read_result,
    sample_rows,
    setup_monitoring,
    workspace_runs,
)

CFG = DriftConfig(workers=0)


# --- hand-made images ------------------------------------------------------------------------------------------


def photo(rng: np.random.Generator, width: int, height: int, brightness_shift: float = 0.0) -> Image.Image:
    """A textured colour image whose mean brightness varies from photo to photo (like real photos do)."""
    base = rng.uniform(70, 150, size=3)
    texture = rng.normal(0, 25, size=(height, width, 1))
    pixels = np.clip(base + texture + brightness_shift, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def photo_batch(
    root: Path, name: str, seed: int, n: int = 40, scale: float = 1.0, brightness_shift: float = 0.0
) -> dict[str, Path]:
    """``n`` JPEGs of random size (60-100 px per side, times ``scale``) written under ``root/name``."""
    rng = np.random.default_rng(seed)
    folder = root / name
    folder.mkdir(parents=True)
    paths = {}
    for i in range(n):
        w, h = (round(int(rng.integers(60, 101)) * scale) for _ in range(2))
        path = folder / f"{name}{i:03d}.jpg"
        photo(rng, w, h, brightness_shift).save(path, quality=90)
        paths[f"{name}{i:03d}"] = path
    return paths


@pytest.fixture(scope="module")
def batches(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    """Image statistics of a reference batch, a same-distribution batch and a brightened + enlarged batch."""
    root = tmp_path_factory.mktemp("drift_images")
    return {
        "reference": image_stats(photo_batch(root, "ref", seed=0)),
        "same": image_stats(photo_batch(root, "same", seed=1)),
        "shifted": image_stats(photo_batch(root, "shift", seed=2, scale=1.6, brightness_shift=70)),
    }


# --- pixel and file statistics ---------------------------------------------------------------------------------


def test_pixel_stats_hand_computed() -> None:
    solid = np.full((3, 4, 3), (200, 100, 50), dtype=np.uint8)
    stats = pixel_stats(solid)
    assert stats["brightness"] == pytest.approx(0.299 * 200 + 0.587 * 100 + 0.114 * 50)  # 124.2
    assert stats["contrast"] == pytest.approx(0.0)
    assert stats["saturation"] == pytest.approx((200 - 50) / 200)  # 0.75
    half = np.zeros((2, 2, 3), dtype=np.uint8)
    half[0] = 255  # two white and two black pixels: luma 255 and 0
    stats = pixel_stats(half)
    assert stats["brightness"] == pytest.approx(127.5)
    assert stats["contrast"] == pytest.approx(127.5)
    assert stats["saturation"] == pytest.approx(0.0)  # grey levels and black have no saturation
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        pixel_stats(np.zeros((4, 4), dtype=np.uint8))


def test_image_stats_sizes_and_decode_failures(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    Image.fromarray(np.full((20, 40, 3), (200, 100, 50), dtype=np.uint8)).save(good)
    truncated = tmp_path / "cut.jpg"
    Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8)).save(tmp_path / "full.jpg")
    truncated.write_bytes((tmp_path / "full.jpg").read_bytes()[:200])
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    refs = [
        ImageRef("good", str(good)),
        ImageRef("cut", str(truncated)),
        ImageRef("text", str(text)),
        ImageRef("gone", str(tmp_path / "missing.jpg")),
        ImageRef("bad", None, "quarantined: unsafe_id"),
    ]
    stats = image_stats(refs)
    assert list(stats.index) == ["good", "cut", "text", "gone", "bad"]
    row = stats.loc["good"]
    assert (row["width"], row["height"], row["aspect"]) == (40.0, 20.0, 2.0)
    assert row["megapixels"] == pytest.approx(800 / 1e6)
    assert row["brightness"] == pytest.approx(124.2)
    assert row["saturation"] == pytest.approx(0.75)
    assert row["file_bytes"] == good.stat().st_size
    assert row["decode_failed"] == 0.0
    assert stats["decode_failed"].tolist() == [0.0, 1.0, 1.0, 1.0, 1.0]
    assert stats["failure"].tolist() == [
        "",
        "truncated",
        "not_an_image",
        "unreadable",
        "quarantined: unsafe_id",
    ]
    assert stats.loc["cut", "file_bytes"] == 200  # the bytes of a broken file are still known
    assert stats.loc["cut", ["brightness", "width"]].isna().all()


def test_manifest_images_turn_quarantined_rows_into_failures(tmp_path: Path) -> None:
    manifest = make_manifest(
        [
            {"image_id": "a", "uri": "images/a.jpg"},
            quarantined_row("b", "truncated", "cut at 10 bytes"),
        ]
    )
    refs = manifest_images(manifest, tmp_path)
    assert refs == [
        ImageRef("a", str(tmp_path / "images/a.jpg")),
        ImageRef("b", None, "quarantined: truncated"),
    ]
    s3 = make_manifest([{"image_id": "c", "uri": "s3://bucket/images/c.jpg"}])
    with pytest.raises(ValueError, match="only in object storage"):
        manifest_images(s3, tmp_path)


def test_sample_rows_is_seeded_and_keeps_order() -> None:
    frame = pd.DataFrame({"x": range(100)})
    first = sample_rows(frame, 10, seed=3)
    assert first["x"].tolist() == sample_rows(frame, 10, seed=3)["x"].tolist()
    assert first["x"].tolist() == sorted(first["x"].tolist()) and len(set(first["x"])) == 10
    assert first["x"].tolist() != sample_rows(frame, 10, seed=4)["x"].tolist()
    assert len(sample_rows(frame, 500, seed=0)) == 100


# --- embeddings ----------------------------------------------------------------------------------------------


def test_pca_axes_and_residual_hand_computed() -> None:
    x = np.array([[-3.0, 0.0], [3.0, 0.0], [0.0, 1.0], [0.0, -1.0]])  # variance 18 along x, 2 along y
    pca = fit_embedding_pca(x, 1)
    np.testing.assert_allclose(pca.mean, [0.0, 0.0])
    np.testing.assert_allclose(pca.components, [[1.0, 0.0]], atol=1e-12)
    np.testing.assert_allclose(pca.explained_variance_ratio, [0.9])
    frame = embedding_frame(["q"], np.array([[2.0, 5.0]]), pca)
    assert list(frame.columns) == ["emb_pc01", "emb_residual"] == embedding_columns(1)
    assert frame.loc["q"].tolist() == pytest.approx([2.0, 5.0])
    assert fit_embedding_pca(x, 10).components.shape == (2, 2)  # at most min(n - 1, D) axes
    with pytest.raises(ValueError, match="n >= 2"):
        fit_embedding_pca(x[:1], 2)
    with pytest.raises(ValueError, match="match the ids"):
        embedding_frame(["a", "b"], np.zeros((1, 2)), pca)


def descriptors(
    rng: np.random.Generator, n: int, basis: np.ndarray, shift: np.ndarray | None = None
) -> np.ndarray:
    """Unit vectors near a low-rank subspace (like global descriptors), optionally shifted before normalising."""
    x = rng.normal(size=(n, basis.shape[0])) @ basis + 0.05 * rng.normal(size=(n, basis.shape[1]))
    if shift is not None:
        x = x + shift
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_embedding_drift_detected_when_descriptors_shift() -> None:
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(6, 64))
    reference = descriptors(rng, 300, basis)
    pca = fit_embedding_pca(reference, 4)
    ref_frame = embedding_frame([f"r{i}" for i in range(300)], reference, pca)

    def frame(x: np.ndarray) -> pd.DataFrame:
        return embedding_frame([f"c{i}" for i in range(len(x))], x, pca)

    same, _ = drift_report(ref_frame, frame(descriptors(rng, 200, basis)), CFG)
    assert same.passed and same.drift_share <= 0.2
    # move the descriptors along the reference's first axis (the raw vectors have norm ~20 before normalising)
    along, _ = drift_report(ref_frame, frame(descriptors(rng, 200, basis, shift=10 * pca.components[0])), CFG)
    assert "emb_pc01" in along.drifted_columns
    assert along.column("emb_pc01").score < 1e-6
    # ... or off the subspace the reference lives in: only the residual can see that
    q, _ = np.linalg.qr(basis.T)  # (64, 6) orthonormal basis of the reference subspace
    off = rng.normal(size=64)
    off -= q @ (q.T @ off)
    off_result, _ = drift_report(
        ref_frame, frame(descriptors(rng, 200, basis, shift=10 * off / np.linalg.norm(off))), CFG
    )
    assert "emb_residual" in off_result.drifted_columns


# --- the drift report ----------------------------------------------------------------------------------------


def test_same_distribution_passes(batches: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    result, _ = drift_report(batches["reference"], batches["same"], CFG, out_dir=tmp_path)
    assert result.passed
    assert result.drift_share <= 0.25
    assert [c.column for c in result.columns] == [c for c in IMAGE_STAT_COLUMNS if c != "decode_failed"] + [
        "decode_failed"
    ]
    assert result.column("decode_failed").score == 1.0  # no failures on either side: identical rates
    assert result.reference_rows == result.current_rows == 40
    assert "PASSED" in result.summary
    assert read_result(tmp_path / "drift.json") == result
    assert (tmp_path / "report.html").stat().st_size > 10_000
    evidently = json.loads((tmp_path / "evidently.json").read_text())
    assert any(m["config"]["type"].endswith("DriftedColumnsCount") for m in evidently["metrics"])


def test_brightened_and_enlarged_batch_drifts(batches: dict[str, pd.DataFrame]) -> None:
    result, _ = drift_report(batches["reference"], batches["shifted"], CFG)
    assert {"width", "height", "megapixels", "brightness"} <= set(result.drifted_columns)
    assert not result.passed
    assert result.drift_share > CFG.max_drift_share
    assert result.drift_share == pytest.approx(len(result.drifted_columns) / len(result.columns))
    assert "FAILED" in result.summary and "brightness" in result.summary
    width = result.column("width")
    assert width.drifted and width.score < width.threshold  # a p-value below the bound
    # the same share passes a looser bound: the verdict is share <= bound
    loose, _ = drift_report(batches["reference"], batches["shifted"], replace(CFG, max_drift_share=1.0))
    assert loose.passed and loose.drift_share == result.drift_share


def test_decode_failures_are_counted_and_drift(batches: dict[str, pd.DataFrame]) -> None:
    current = batches["same"].copy()
    failed = current.index[:8]
    current.loc[failed, list(IMAGE_STAT_COLUMNS)] = np.nan
    current.loc[failed, "decode_failed"] = 1.0
    result, _ = drift_report(batches["reference"], current, CFG)
    assert result.reference_decode_failure_rate == 0.0
    assert result.current_decode_failure_rate == pytest.approx(8 / 40)
    assert "decode_failed" in result.drifted_columns  # 20% failures vs none: the Z-test flags the rate
    assert result.column("decode_failed").method == "z"
    assert "current 20.0%" in result.summary


def test_columns_without_values_are_skipped_and_bad_frames_rejected(batches: dict[str, pd.DataFrame]) -> None:
    current = batches["same"].copy()
    current["brightness"] = np.nan  # e.g. a stat that could not be computed for any current image
    result, _ = drift_report(batches["reference"], current, CFG)
    assert result.skipped_columns == ("brightness",)
    assert "brightness" not in [c.column for c in result.columns]
    with pytest.raises(ValueError, match="at least 2 rows"):
        drift_report(batches["reference"], current.iloc[:1], CFG)
    with pytest.raises(ValueError, match="lacks reference columns"):
        drift_report(batches["reference"], current.drop(columns=["width"]), CFG)


def test_drift_frame_joins_embeddings_by_id(batches: dict[str, pd.DataFrame]) -> None:
    stats = batches["reference"].iloc[:3]
    pca = fit_embedding_pca(np.eye(4), 2)
    emb = embedding_frame([stats.index[0], stats.index[2]], np.eye(4)[:2], pca)
    joined = drift_frame(stats, emb)
    assert list(joined.index) == list(stats.index)
    assert joined["emb_pc01"].isna().tolist() == [False, True, False]  # no descriptor: NaN


def test_result_round_trip_through_json() -> None:
    data = {
        "drift_share": 0.25,
        "max_drift_share": 0.5,
        "passed": True,
        "drifted_columns": ["width"],
        "columns": [
            {"column": "width", "method": "K-S p_value", "score": 0.01, "threshold": 0.05, "drifted": True},
            {"column": "height", "method": "K-S p_value", "score": 0.5, "threshold": 0.05, "drifted": False},
            {"column": "aspect", "method": "K-S p_value", "score": 0.6, "threshold": 0.05, "drifted": False},
            {
                "column": "brightness",
                "method": "K-S p_value",
                "score": 0.7,
                "threshold": 0.05,
                "drifted": False,
            },
        ],
        "skipped_columns": [],
        "reference_rows": 10,
        "current_rows": 8,
        "reference_decode_failure_rate": 0.0,
        "current_decode_failure_rate": 0.125,
        "timestamp": "2025-01-01T00:00:00+00:00",
        "summary": "s",
        "metadata": {"purpose": "ingest"},
    }
    result = DriftResult.from_dict(json.loads(json.dumps(data)))
    assert result.to_dict() == data
    with pytest.raises(ValueError, match="not a drift result"):
        DriftResult.from_dict({"drift_share": 0.1})


# --- the monitoring workspace ----------------------------------------------------------------------------------


def test_snapshots_and_metrics_land_in_the_workspace(
    batches: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    from evidently.ui.workspace import Workspace

    workspace = tmp_path / "ws"
    project_id = setup_monitoring(workspace, "landmark")
    assert setup_monitoring(workspace, "landmark") == project_id  # idempotent: same project, same panels
    ws = Workspace(str(workspace))
    panels = ws.get_dashboard(project_id).panels
    # 3 drift quantities x 3 uses (Evidently 0.7 draws one use per panel) + the evaluation panel
    assert len(panels) == 10 and len({p.title for p in panels}) == 10
    for tab in ws.get_dashboard(project_id).tabs:
        assert len(tab.panels) == len(set(tab.panels))  # no panel shown twice

    when = datetime(2025, 1, 2, tzinfo=UTC)
    _, snapshot = drift_report(
        batches["reference"],
        batches["same"],
        CFG,
        timestamp=when,
        tags=["ingest"],
        metadata={"purpose": "ingest"},
    )
    (drift_id,) = add_to_workspace(snapshot, workspace, "landmark")
    metrics_id = log_metrics(
        {"recognition.GAP": 48.5, "gldv2_retrieval.mAP@100": 30.25}, workspace, "landmark"
    )

    assert [p.name for p in ws.list_projects()] == ["landmark"]
    assert {str(r) for r in ws.list_runs(project_id)} == {drift_id, metrics_id}
    assert set(workspace_runs(workspace, "landmark")) == {drift_id, metrics_id}
    stored = ws.get_run(project_id, drift_id)
    assert stored is not None and set(stored.tags) == {"drift", "ingest"}
    logged = ws.get_run(project_id, metrics_id)
    assert logged is not None and "evaluation" in logged.tags
    evaluation = next(p for p in ws.get_dashboard(project_id).panels if p.title == PANEL_EVALUATION)
    shown = [v.metric_labels["column"] for v in evaluation.values]
    assert shown == [*DEFAULT_EVAL_METRICS, "gldv2_retrieval.mAP@100"]  # a new metric gets its own line
    with pytest.raises(ValueError, match="finite number"):
        log_metrics({"recognition.GAP": float("nan")}, workspace, "landmark")
    assert workspace_runs(tmp_path / "nowhere", "landmark") == []


def test_a_new_batch_is_compared_with_the_images_before_it() -> None:
    from landmark.stages.drift import ImageSet, without_images_of

    catalog = ImageSet("catalog", pd.DataFrame({"image_id": ["a", "b", "c", "d"]}), Path("."))
    batch = ImageSet("batch", pd.DataFrame({"image_id": ["c", "d"]}), Path("."))
    before = without_images_of(catalog, batch)
    assert before.manifest["image_id"].tolist() == ["a", "b"]
    assert "without the current images" in before.label
    other = ImageSet("other", pd.DataFrame({"image_id": ["x"]}), Path("."))
    assert without_images_of(catalog, other) is catalog
    with pytest.raises(ValueError, match="every reference image is also a current one"):
        without_images_of(batch, catalog)
