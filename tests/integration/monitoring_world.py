"""A monitoring workspace filled the way the flows fill it: ``landmark.stages.drift.drift`` for every use (ingest:
a brighter, larger new batch with decode failures; retrain: test vs train of the tiny world; serving: a query
log of the test photos and one upload that did not decode) and ``landmark.ops.drift.log_metrics`` for an evaluation,
plus what each panel of the dashboard must therefore show, and the dashboard's lines as ``evidently ui`` serves
them."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from landmark.config import Config, DriftConfig
from landmark.data.formats import read_dataset
from landmark.data.images import decode_image
from landmark.data.manifest import make_manifest, quarantined_row, write_manifest
from landmark.ops.drift import (
    DECODE_FAILED,
    DRIFT_TAG,
    EVALUATION_TAG,
    PURPOSES,
    DriftResult,
    decoded_row,
    failed_row,
    log_metrics,
    setup_monitoring,
)
from landmark.serving.query_log import LoggedQuery, QueryLog
from landmark.stages.drift import drift

if TYPE_CHECKING:
    from evidently.sdk.models import DashboardModel, PanelMetric

PROJECT = "landmark"
EVALUATION = {"revisitop.medium.mAP": 61.25, "recognition.GAP": 48.5}


@dataclass(frozen=True)
class MonitoredWorkspace:
    """A workspace with one drift snapshot per use and one evaluation snapshot."""

    path: Path
    project: str
    project_id: str
    drift: dict[str, DriftResult]  # purpose -> the result stored as that use's snapshot
    evaluation: dict[str, float]  # the metrics logged

    def expected(self, metric: str, labels: dict[str, str], tags: list[str]) -> float:
        """The value a dashboard series (Evidently metric, its labels, its tags) must show for these runs.

        Raises:
            KeyError: a series these runs do not explain (a new panel needs a line here).
        """
        name = metric.rsplit(":", 1)[-1]
        purposes = [p for p in PURPOSES if p in tags]
        if DRIFT_TAG in tags and len(purposes) == 1:
            result = self.drift[purposes[0]]
            if name == "DriftedColumnsCount" and labels == {"value_type": "share"}:
                return result.drift_share
            if name == "DriftedColumnsCount" and labels == {"value_type": "count"}:
                return float(len(result.drifted_columns))
            if name == "MeanValue" and labels == {"column": DECODE_FAILED}:
                return result.current_decode_failure_rate
        if EVALUATION_TAG in tags and name == "MeanValue" and labels.get("column") in self.evaluation:
            return self.evaluation[labels["column"]]
        raise KeyError(f"no expected value for series {name} {labels} tagged {tags}")


def brighter_copy(source: Path, target: Path) -> None:
    """``source`` brightened by 90 levels and enlarged to 300x300 (drifts brightness, width, height...)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.asarray(Image.open(source).convert("RGB"), dtype=np.int16) + 90
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).resize((300, 300)).save(target, quality=90)


def ingestion_root(world: Path, root: Path, n_new: int = 10) -> Path:
    """An ingestion root (``manifests/train.parquet`` + ``images/``) whose newest batch holds ``n_new`` brighter,
    larger copies of train photos, one of them cut (no longer decodes), and one quarantined row."""
    train = list(read_dataset(world).image_paths("train").values())
    old = [{"image_id": f"old{i}", "uri": str(p), "batch_id": "b1"} for i, p in enumerate(train[:6])]
    new = []
    for i, path in enumerate(train[6 : 6 + n_new]):
        brighter_copy(path, root / "images" / f"new{i}.jpg")
        new.append({"image_id": f"new{i}", "uri": f"images/new{i}.jpg", "batch_id": "b2"})
    (root / "images" / "new0.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut")
    new.append(quarantined_row("new99", "truncated", "cut at 5 bytes", batch_id="b2"))
    write_manifest(make_manifest(old + new), root / "manifests" / "train.parquet")
    return root


def query_log(world: Path, root: Path) -> Path:
    """A query log as ``landmark serve`` writes it: the test photos (no descriptors) and one upload the decoder
    refused, in files of 4 rows."""
    log = QueryLog(root, rotate_rows=4, keep_files=10, flush_s=60.0)
    for i, path in enumerate(read_dataset(world).image_paths("test").values()):
        data = path.read_bytes()
        stats = decoded_row(f"q{i}", decode_image(data), len(data))
        log.append(LoggedQuery(f"q{i}", "search", "v1", "model", stats))
    log.append(LoggedQuery("bad", "search", "v1", "model", failed_row("bad", "not_an_image", 20.0)))
    log.close()
    return root


def fill_workspace(world: Path, workdir: Path, *, legacy_panels: bool = False) -> MonitoredWorkspace:
    """Run the drift stage for every use and log one evaluation into ``workdir/workspace``.

    Args:
        legacy_panels: first save a dashboard with the panel layout of earlier versions (one panel holding both
            uses), as a workspace made before the fix has.
    """
    workspace = workdir / "workspace"
    if legacy_panels:
        save_legacy_dashboard(workspace)
    cfg = Config(drift=DriftConfig(workers=0, embedding_components=0))
    results = {
        "ingest": drift(
            cfg,
            world,
            ingestion_root(world, workdir / "ingest"),
            workdir / "ingest-report",
            purpose="ingest",
            workspace=workspace,
        ).result,
        "retrain": drift(
            cfg, world, world, workdir / "retrain-report", purpose="retrain", workspace=workspace
        ).result,
        "serving": drift(
            cfg,
            world,
            query_log(world, workdir / "queries"),
            workdir / "serving-report",
            purpose="serving",
            workspace=workspace,
        ).result,
    }
    log_metrics(EVALUATION, workspace, PROJECT, tags=["candidate"])
    return MonitoredWorkspace(
        workspace, PROJECT, setup_monitoring(workspace, PROJECT), results, dict(EVALUATION)
    )


def save_legacy_dashboard(workspace: Path) -> None:
    """The project with the dashboard of earlier versions: each drift quantity in one panel, one series per use."""
    from evidently.sdk.models import DashboardModel, DashboardTabModel, PanelMetric
    from evidently.sdk.panels import line_plot_panel
    from evidently.ui.workspace import Workspace

    from landmark.ops.drift import PANEL_DECODE_FAILURES, PANEL_DRIFT_SHARE, PANEL_DRIFTED_COUNT

    def both_uses(metric: str, labels: dict[str, str]) -> list[PanelMetric]:
        return [
            PanelMetric(metric=metric, metric_labels=labels, tags=[DRIFT_TAG, p], legend=p)
            for p in ("ingest", "retrain")
        ]

    panels = [
        line_plot_panel(PANEL_DRIFT_SHARE, both_uses("DriftedColumnsCount", {"value_type": "share"})),
        line_plot_panel(PANEL_DRIFTED_COUNT, both_uses("DriftedColumnsCount", {"value_type": "count"})),
        line_plot_panel(PANEL_DECODE_FAILURES, both_uses("MeanValue", {"column": DECODE_FAILED})),
    ]
    ws = Workspace(str(workspace))
    project = ws.create_project(PROJECT)
    tab = DashboardTabModel(title="Drift", panels=[p.id for p in panels])
    ws.save_dashboard(project.id, DashboardModel(tabs=[tab], panels=panels))


@dataclass(frozen=True)
class Line:
    """One series of a panel as the UI draws it: the panel series (legend, tags...) it belongs to, its values."""

    series: PanelMetric
    values: list[float | None]


async def _dashboard_lines(workspace: Path, project_id: str) -> tuple[DashboardModel, dict[str, list[Line]]]:
    """The dashboard and, per panel title, its lines: what ``evidently ui`` serves for this workspace."""
    from uuid import UUID

    from evidently.ui.service.base import SeriesFilter
    from evidently.ui.service.storage.local import create_local_project_manager
    from evidently.ui.service.type_aliases import ZERO_UUID

    manager = create_local_project_manager(str(workspace), autorefresh=False)
    project = UUID(project_id)
    dashboard = await manager.get_project_dashboard(ZERO_UUID, project)
    lines: dict[str, list[Line]] = {}
    for panel in dashboard.panels:
        # the body the UI's panel component posts to /api/v2/snapshots/{project}/data_series_batch
        filters = [
            SeriesFilter(metric=v.metric, tags=v.tags, metadata=v.metadata, metric_labels=v.metric_labels)
            for v in panel.values
        ]
        response = await manager.get_data_series(ZERO_UUID, project, filters, None, None)
        lines[panel.title] = [Line(panel.values[s.filter_index], list(s.values)) for s in response.series]
    return dashboard, lines


def dashboard_lines(workspace: Path, project_id: str) -> tuple[DashboardModel, dict[str, list[Line]]]:
    """The dashboard of a workspace's project and its lines, per panel title (see :func:`_dashboard_lines`)."""
    return asyncio.run(_dashboard_lines(workspace, project_id))
