"""Fixtures of the integration tests: a real local HTTP server serving good images and every bad case."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from http_images import ImageServer, serve_images, stop_serving


@pytest.fixture
def image_server() -> Iterator[ImageServer]:
    """The threading HTTP server of :mod:`http_images` on 127.0.0.1, stopped after the test (also on failure)."""
    state, httpd, thread = serve_images()
    try:
        yield state
    finally:
        stop_serving(state, httpd, thread)
