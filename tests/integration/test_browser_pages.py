"""The web UIs render what they promise, in a real headless Chromium (Selenium + Debian's chromedriver): the
Evidently project dashboard draws every panel of the monitoring workspace, and the Prefect UI's runs page lists a
flow run. Skipped when Chromium, its driver or Selenium is missing; screenshots go to the test's tmp_path."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from monitoring_world import MonitoredWorkspace

from landmark.ops.drift import DRIFT_PANELS, PANEL_EVALUATION, PURPOSES, drift_panel_title
from landmark.ops.webui import (
    chromium_available,
    evidently_ui,
    free_port,
    full_page_screenshot,
    headless_chrome,
    http_get_json,
    http_post_json,
    page_text,
    panel_card,
    run_probe_flow,
    undrawn_panels,
    wait_for,
)
from landmark.platform.prefect_services import api_url, start_prefect_server, stop_prefect_server, ui_url

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(chromium_available() is not None, reason=str(chromium_available())),
]

SERVICES_DIR = Path(__file__).resolve().parents[2] / "build" / "test-services"  # git-ignored, project-local
FLOW_NAME, FLOW_RUN_NAME = "browser-check", "browser-check-run"


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    """Headless Chromium, 1500x1200, quit after the module's tests."""
    driver = headless_chrome(1500, 1200)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def evidently_url(monitored_workspace: MonitoredWorkspace, tmp_path: Path) -> Iterator[str]:
    """``evidently ui`` over the monitoring workspace on a free port; stopped after the test."""
    with evidently_ui(monitored_workspace.path, free_port(), log=tmp_path / "evidently-ui.log") as url:
        yield url


@pytest.fixture
def prefect_port() -> Iterator[int]:
    """A private Prefect server (project-local home and database) on a free port; stopped and its directory
    removed after the test."""
    SERVICES_DIR.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="browser-", dir=SERVICES_DIR))
    port = free_port()
    try:
        start_prefect_server(run_dir, port)
        yield port
    finally:
        stop_prefect_server(run_dir)
        shutil.rmtree(run_dir, ignore_errors=True)


def assert_endpoint_has_points(url: str, project: str) -> None:
    """Every panel of the served dashboard gets points from the server's data endpoint, with the body the UI's
    panel component posts."""
    dashboard = http_get_json(f"{url}/api/v2/dashboards/{project}")
    for panel in dashboard["panels"]:
        keys = ("metric", "tags", "metadata", "metric_labels")
        body = {"series_filter": [{k: v[k] for k in keys} for v in panel["values"]]}
        answer = http_post_json(f"{url}/api/v2/snapshots/{project}/data_series_batch", body)
        values = [v for series in answer["series"] for v in series["values"] if v is not None]
        assert values, f"{panel['title']}: the data endpoint returned no point"


def test_evidently_dashboard_draws_every_panel(
    browser: WebDriver, evidently_url: str, monitored_workspace: MonitoredWorkspace, tmp_path: Path
) -> None:
    titles = [drift_panel_title(s.title, p) for s in DRIFT_PANELS for p in PURPOSES] + [PANEL_EVALUATION]
    project = monitored_workspace.project_id
    assert_endpoint_has_points(evidently_url, project)
    browser.get(f"{evidently_url}/projects/{project}")
    wait_for(browser, lambda d: not undrawn_panels(d, titles), 45, "some dashboard panels drew nothing")
    full_page_screenshot(browser, tmp_path / "evidently_dashboard.png")
    assert not undrawn_panels(browser, titles)
    assert all(panel_card(browser, t).is_displayed() for t in titles)


def test_prefect_runs_page_lists_a_flow_run(browser: WebDriver, prefect_port: int, tmp_path: Path) -> None:
    run_probe_flow(api_url(prefect_port), tmp_path / "prefect-client", FLOW_NAME, FLOW_RUN_NAME)
    browser.get(f"{ui_url(prefect_port)}/runs")
    wait_for(
        browser, lambda d: FLOW_RUN_NAME in page_text(d), 60, f"the runs page does not list {FLOW_RUN_NAME!r}"
    )
    browser.save_screenshot(str(tmp_path / "prefect_runs.png"))
    text = page_text(browser)
    assert FLOW_NAME in text and "Completed" in text  # the flow, and the run's final state
