"""Shared test fixtures and environment: no analytics, project-local temp dirs, shared data location."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from landmark.config import SynthConfig
from landmark.training.loop import TrainItem

if TYPE_CHECKING:
    from landmark.platform.infra import SeaweedInfo
    from landmark.platform.storage import ObjectStore, S3Settings

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


# --- Object store (data platform) -----------------------------------------------------------------------------
SERVICES_DIR = (
    REPO_ROOT / "build" / "test-services"
)  # project-local, git-ignored; short enough for unix sockets


@pytest.fixture(scope="session")
def seaweed() -> Iterator[SeaweedInfo]:
    """A real SeaweedFS S3 server on 127.0.0.1 (free ports, project-local data dir), stopped at session end."""
    from landmark.platform.infra import start_seaweed, stop_seaweed

    SERVICES_DIR.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="seaweed-", dir=SERVICES_DIR))
    try:
        yield start_seaweed(run_dir)
    finally:
        stop_seaweed(run_dir)
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture
def s3_settings(seaweed: SeaweedInfo) -> S3Settings:
    """Settings for a fresh, test-private bucket on the session's SeaweedFS (the bucket is not created)."""
    from landmark.platform.storage import S3Settings, read_credentials_file

    return S3Settings(
        endpoint=seaweed.endpoint,
        bucket=f"test-{uuid.uuid4().hex[:12]}",
        region="us-east-1",
        credentials=read_credentials_file(seaweed.credentials_file),
        timeout_s=5.0,
        retries=1,
    )


@pytest.fixture
def object_store(s3_settings: S3Settings) -> ObjectStore:
    """An :class:`ObjectStore` on a fresh, existing, test-private bucket."""
    from landmark.platform.storage import ObjectStore

    store = ObjectStore(s3_settings)
    store.ensure_bucket()
    return store


@dataclass(frozen=True)
class TinyWorld:
    """A small synthetic world generated once per session (6 landmarks, 192 px photos)."""

    root: Path
    meta: pd.DataFrame  # synth_meta.parquet: the ground truth of every photo
    cfg: SynthConfig
    seed: int


TINY_WORLD = SynthConfig(
    num_landmarks=6,
    facets_min=1,
    facets_max=2,
    train_per_landmark=6,
    index_per_landmark=6,
    queries=6,
    index_distractors=4,
    test_distractors=2,
    image_size=192,
    facet_size=256,
    workers=0,
)


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> TinyWorld:
    """The tiny synthetic world shared by the geometry and local-feature tests (generated once)."""
    from landmark.data.synthetic import generate_world

    root = tmp_path_factory.mktemp("tiny_world")
    generate_world(TINY_WORLD, root, seed=11, progress=False)
    return TinyWorld(root, pd.read_parquet(root / "synth_meta.parquet"), TINY_WORLD, 11)


def make_stripe_items(root: Path, per_class: int, phase_max: float) -> list[TrainItem]:
    """4 classes x ``per_class`` images of coloured stripes (class = orientation + colour), each with a seeded
    phase in [0, phase_max) and per-pixel noise, written as PNGs under ``root``."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:72, 0:96]
    out = []
    for label in range(4):
        angle = label * np.pi / 4
        colour = np.array([[255, 60, 60], [60, 255, 60], [60, 60, 255], [230, 230, 60]][label])
        for k in range(per_class):
            phase = rng.uniform(0, phase_max)
            stripes = 0.5 + 0.5 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) / 3.0 + phase)
            image = stripes[..., None] * colour + rng.normal(0, 20, (72, 96, 3))
            path = root / f"c{label}_{k}.png"
            Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path)
            out.append(TrainItem(path, label, 96, 72))
    return out


@pytest.fixture(scope="session")
def stripe_items() -> Callable[[Path, int, float], list[TrainItem]]:
    """:func:`make_stripe_items`, for test modules' own image sets."""
    return make_stripe_items


@pytest.fixture(scope="module")
def items(tmp_path_factory: pytest.TempPathFactory) -> list[TrainItem]:
    """4 classes x 8 stripe images."""
    return make_stripe_items(tmp_path_factory.mktemp("train_images"), 8, 2 * np.pi)
