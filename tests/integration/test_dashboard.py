"""The Evidently dashboard shows what it promises: after the drift stage ran for every use and an evaluation was
logged, every panel has a point with the value written, read back through the code path of ``evidently ui``
(the project dashboard, then each panel's series as the UI's ``data_series_batch`` endpoint computes them)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pytest
from monitoring_world import Line, MonitoredWorkspace
from monitoring_world import dashboard_lines as workspace_lines

from landmark.ops.drift import (
    DRIFT_PANELS,
    PANEL_DECODE_FAILURES,
    PANEL_DRIFT_SHARE,
    PANEL_DRIFTED_COUNT,
    PANEL_EVALUATION,
    PURPOSES,
    drift_panel_title,
    setup_monitoring,
)

if TYPE_CHECKING:
    from evidently.sdk.models import DashboardModel

pytestmark = pytest.mark.integration


@pytest.fixture
def monitored(monitored_workspace: MonitoredWorkspace) -> MonitoredWorkspace:
    """The session's workspace: made with the old panels, then filled by the drift stage and ``log_metrics``."""
    return monitored_workspace


def dashboard_lines(monitored: MonitoredWorkspace) -> tuple[DashboardModel, dict[str, list[Line]]]:
    return workspace_lines(monitored.path, monitored.project_id)


def test_every_panel_draws_the_values_written(monitored: MonitoredWorkspace) -> None:
    dashboard, lines = dashboard_lines(monitored)
    empty = [title for title, panel_lines in lines.items() if not panel_lines]
    assert not empty, f"panels without a single point: {empty}"
    for panel in dashboard.panels:
        for index, series in enumerate(panel.values):
            want = monitored.expected(series.metric, series.metric_labels, series.tags)
            drawn = [
                v
                for line in lines[panel.title]
                if line.series == series
                for v in line.values
                if v is not None
            ]
            assert drawn, f"{panel.title!r}: no point for {series.legend!r} (series {index})"
            assert any(math.isclose(v, want, abs_tol=1e-9) for v in drawn), (
                f"{panel.title!r}, {series.legend!r}: drawn {drawn}, written {want}"
            )
    expected_titles = [drift_panel_title(s.title, p) for s in DRIFT_PANELS for p in PURPOSES]
    assert [p.title for p in dashboard.panels] == [*expected_titles, PANEL_EVALUATION]


def test_the_uses_are_told_apart(monitored: MonitoredWorkspace) -> None:
    """The ingest batch drifts and the test split does not, so their panels must show different values."""
    ingest, retrain = monitored.drift["ingest"], monitored.drift["retrain"]
    assert ingest.drift_share > retrain.drift_share
    assert ingest.current_decode_failure_rate > retrain.current_decode_failure_rate
    _, lines = dashboard_lines(monitored)
    for quantity, value in ((PANEL_DRIFT_SHARE, "drift_share"), (PANEL_DECODE_FAILURES, "decode")):
        shown = {p: lines[drift_panel_title(quantity, p)][0].values for p in PURPOSES}
        assert shown["ingest"] != shown["retrain"], f"{quantity} ({value}): both uses show {shown['ingest']}"


def test_old_panels_are_replaced_and_setup_is_idempotent(monitored: MonitoredWorkspace) -> None:
    from evidently.ui.workspace import Workspace

    assert setup_monitoring(monitored.path, monitored.project) == monitored.project_id
    dashboard = Workspace(str(monitored.path)).get_dashboard(monitored.project_id)
    titles = [p.title for p in dashboard.panels]
    assert len(titles) == len(set(titles)) == len(DRIFT_PANELS) * len(PURPOSES) + 1
    assert not {PANEL_DRIFT_SHARE, PANEL_DRIFTED_COUNT, PANEL_DECODE_FAILURES} & set(titles)
    in_tabs = [i for tab in dashboard.tabs for i in tab.panels]
    assert sorted(map(str, in_tabs)) == sorted(str(p.id) for p in dashboard.panels)  # each panel in one tab
