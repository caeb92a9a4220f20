"""Live traffic is monitored: queries served over real HTTP on 127.0.0.1 land in the query log (statistics as the
drift report computes them, descriptors as extraction computes them, no image bytes), the serving drift compares
the logged window with the train split (descriptors too, when the model matches) and its dashboard panels draw
the values, read back through Evidently's API."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from monitoring_world import dashboard_lines
from PIL import Image
from serving_world import SERVE_OVERRIDES, ServingWorld, build_serving_world
from typer.testing import CliRunner

from landmark.cli import app as cli_app
from landmark.features.global_desc import describe_image as describe_global
from landmark.ops.drift import (
    DECODE_FAILED,
    DRIFT_PANELS,
    IMAGE_STAT_COLUMNS,
    ImageRef,
    describe_image,
    drift_panel_title,
    setup_monitoring,
)
from landmark.serving.api import BackgroundServer, ServingState, create_app
from landmark.serving.bundle import ServedModel, load_local
from landmark.serving.query_log import QueryLog, numbered_files, read_window
from landmark.serving.service import ModelSlot
from landmark.stages.drift import drift

pytestmark = pytest.mark.integration

ROTATE, KEEP = 4, 3


@dataclass(frozen=True)
class Traffic:
    """What the client sent and what the server logged."""

    images: list[Path]  # the photos sent, in order (the bad upload follows them)
    log_dir: Path
    statuses: list[int]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> ServingWorld:
    return build_serving_world(tmp_path_factory.mktemp("serving-monitoring"))


@pytest.fixture(scope="module")
def served(world: ServingWorld) -> ServedModel:
    return load_local(world.cfg, world.version)


def serve(served: ServedModel, world: ServingWorld, **parts: Any) -> BackgroundServer:
    state = ServingState(ModelSlot(served), world.cfg.serve, **parts)
    return BackgroundServer(create_app(state)).start()


def query_photos(world: ServingWorld) -> list[Path]:
    rows = world.truth[world.truth["split"] == "test"]
    return [world.image("test", image_id) for image_id in rows["image_id"]]


@pytest.fixture(scope="module")
def traffic(
    world: ServingWorld, served: ServedModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Traffic]:
    """Ten photos of the test split (searched and recognised in turn), one truncated upload and one request
    without an image, served with a query log of files of 4 rows, 3 kept."""
    log_dir = tmp_path_factory.mktemp("queries")
    log = QueryLog(log_dir, rotate_rows=ROTATE, keep_files=KEEP, flush_s=0.2).start()
    server = serve(served, world, query_log=log)
    images = query_photos(world)[:10]
    statuses = []
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            for i, path in enumerate(images):
                endpoint = "/search?top=3" if i % 2 == 0 else "/recognize"
                response = client.post(
                    endpoint, files={"image": (path.name, path.read_bytes(), "image/jpeg")}
                )
                statuses.append(response.status_code)
            truncated = images[0].read_bytes()[:300]
            statuses.append(client.post("/search", files={"image": ("cut.jpg", truncated)}).status_code)
            statuses.append(
                client.post("/search", data={"nothing": "here"}).status_code
            )  # never reaches the log
    finally:
        server.stop()
        log.close()
    yield Traffic(images, log_dir, statuses)


def test_every_query_is_logged_with_the_drift_statistics_and_its_descriptor(
    traffic: Traffic, served: ServedModel
) -> None:
    assert traffic.statuses == [200] * 10 + [422, 400]
    window = read_window(traffic.log_dir, 100)
    stats = window.stats
    assert len(stats) == 11 and [n for n, _ in numbered_files(traffic.log_dir)] == [1, 2, 3]
    assert list(stats["endpoint"]) == ["search", "recognize"] * 5 + ["search"]
    assert set(stats["version"]) == {served.version} and set(stats["model_id"]) == {served.model_id}
    for (query_id, row), path in zip(stats.iloc[:10].iterrows(), traffic.images, strict=True):
        expected = describe_image(ImageRef(path.stem, str(path)))  # the drift report's statistics of the file
        for column in IMAGE_STAT_COLUMNS:
            assert row[column] == pytest.approx(expected[column], rel=1e-9), column
        image = np.asarray(Image.open(path).convert("RGB"))
        want = describe_global(served.model, image, served.extract, served.device)
        np.testing.assert_allclose(window.vectors[str(query_id)], want, atol=1e-5)
    bad = stats.iloc[10]
    assert (
        bad[DECODE_FAILED] == 1.0 and bad["failure"] in ("truncated", "corrupt") and bad["file_bytes"] == 300
    )
    assert stats.index[10] not in window.vectors  # no descriptor for an image that did not decode
    # no image bytes: only the numbered statistics and descriptor files
    assert {p.suffix for p in traffic.log_dir.iterdir()} == {".parquet", ".npy"}


def test_serving_drift_lands_on_its_own_dashboard_panels(
    traffic: Traffic, world: ServingWorld, tmp_path: Path
) -> None:
    workspace = tmp_path / "workspace"
    summary = drift(
        world.cfg,
        world.data,
        traffic.log_dir,
        tmp_path / "report",
        purpose="serving",
        reference_features=world.features,
        workspace=workspace,
    )
    result = summary.result
    assert result.current_rows == 11 and result.metadata["purpose"] == "serving"
    assert result.current_decode_failure_rate == pytest.approx(1 / 11)
    assert summary.embedding_columns > 0 and "emb_residual" in [c.column for c in result.columns]
    assert "query log" in result.metadata["current"] and (tmp_path / "report" / "report.html").is_file()
    _, lines = dashboard_lines(workspace, setup_monitoring(workspace, world.cfg.drift.project))
    expected = {
        "share": result.drift_share,
        "count": float(len(result.drifted_columns)),
        DECODE_FAILED: result.current_decode_failure_rate,
    }
    for spec in DRIFT_PANELS:
        title = drift_panel_title(spec.title, "serving")
        [line] = lines[title]
        assert "serving" in line.series.tags
        want = expected[spec.labels.get("value_type", spec.labels.get("column", ""))]
        assert [v for v in line.values if v is not None] == [pytest.approx(want)], title
    assert all(not lines[drift_panel_title(s.title, "ingest")] for s in DRIFT_PANELS)  # only serving ran


def test_cli_serving_drift_compares_descriptors_only_of_the_same_model(
    traffic: Traffic, world: ServingWorld, tmp_path: Path
) -> None:
    other = tmp_path / "other-features" / "train"
    shutil.copytree(world.features / "train", other)
    meta = json.loads((other / "store.json").read_text())
    meta["weights_sha1"] = "0" * 40  # descriptors of another model
    (other / "store.json").write_text(json.dumps(meta))
    base = [arg for override in SERVE_OVERRIDES for arg in ("--set", override)]
    args = [
        *base,
        "--set",
        f"serve.log_dir={traffic.log_dir}",
        "drift",
        "--purpose",
        "serving",
        "--reference",
        str(world.data),
        "--workspace",
        str(tmp_path / "workspace"),
        "--out",
        str(tmp_path / "out"),
    ]
    runner = CliRunner()
    matched = runner.invoke(cli_app, [*args, "--reference-features", str(world.features)], terminal_width=200)
    assert matched.exit_code == 0, matched.output
    assert "embeddings:" in matched.output and "10 current images have descriptors" in matched.output
    mismatched = runner.invoke(
        cli_app, [*args, "--reference-features", str(other.parent)], terminal_width=200
    )
    assert mismatched.exit_code == 0, mismatched.output
    assert "descriptors not compared" in mismatched.output and "000000000000" in mismatched.output
    written = json.loads((tmp_path / "out" / "drift.json").read_text())
    assert not [c for c in written["columns"] if c["column"].startswith("emb_")]
    wrong = runner.invoke(cli_app, [*args, "--current-features", str(world.features)])
    assert wrong.exit_code == 1 and "query log holds" in wrong.output
