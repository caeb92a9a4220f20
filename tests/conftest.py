"""Shared test fixtures and environment: no analytics, project-local temp dirs, shared data location."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data" / "imc2022-landmarks"

for _key, _value in {
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}.items():
    os.environ.setdefault(_key, _value)


@pytest.fixture(scope="session")
def imc_root() -> Path:
    """The shared IMC landmark photos; tests using it skip when the folder is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared IMC photos not found at {SHARED_DATA}")
    return SHARED_DATA
