"""Fixtures of the integration tests: a real local HTTP server serving good images and every bad case; a
monitoring workspace filled by the drift stage and ``log_metrics``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from http_images import ImageServer, serve_images, stop_serving
from monitoring_world import MonitoredWorkspace, fill_workspace

if TYPE_CHECKING:
    from conftest import TinyWorld


@pytest.fixture
def image_server() -> Iterator[ImageServer]:
    """The threading HTTP server of :mod:`http_images` on 127.0.0.1, stopped after the test (also on failure)."""
    state, httpd, thread = serve_images()
    try:
        yield state
    finally:
        stop_serving(state, httpd, thread)


@pytest.fixture(scope="session")
def monitored_workspace(
    tiny_world: TinyWorld, tmp_path_factory: pytest.TempPathFactory
) -> MonitoredWorkspace:
    """A workspace made with the dashboard of earlier versions, then filled the way the flows fill it: the drift
    stage for both uses (ingest: a drifting batch with decode failures; retrain: test vs train) and one
    ``log_metrics`` evaluation (see :mod:`monitoring_world`)."""
    return fill_workspace(tiny_world.root, tmp_path_factory.mktemp("monitoring"), legacy_panels=True)
