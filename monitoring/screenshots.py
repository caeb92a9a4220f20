"""Regenerate the UI screenshots under docs/: the Evidently project dashboard and the Prefect flow-runs page.

Usage (from the project root; needs Chromium + chromedriver and Selenium, see tests/integration/test_browser_pages.py)::

    .venv/bin/python monitoring/screenshots.py [--out docs] [--workdir build/screenshots] [--only evidently|prefect]

``evidently_dashboard.png``: a scratch workspace filled with four days of snapshots made by the same functions the
drift stage uses (``image_stats`` -> ``drift_report`` -> ``add_to_workspace``) on a small synthetic world: an
ingested batch that gets brighter, larger and less decodable day by day against the train split, and the test
split against the train split; plus ``log_metrics`` evaluations. The evaluation numbers are illustrative
placeholders that show the panel, not measurements. ``prefect_ui.png``: a private Prefect server on a free port
with two runs of a tiny probe flow, its runs page. Every server is stopped before the script exits.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from PIL import Image

from landmark.config import DriftConfig, SynthConfig
from landmark.ops.drift import (
    DRIFT_PANELS,
    PANEL_EVALUATION,
    PURPOSES,
    add_to_workspace,
    drift_panel_title,
    drift_report,
    image_stats,
    log_metrics,
    setup_monitoring,
)
from landmark.ops.webui import (
    chromium_available,
    evidently_ui,
    free_port,
    full_page_screenshot,
    headless_chrome,
    page_text,
    run_probe_flow,
    undrawn_panels,
    wait_for,
)
from landmark.platform.prefect_services import api_url, start_prefect_server, stop_prefect_server, ui_url

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

PROJECT = "landmark"
DAYS = 4
START = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)
WORLD = SynthConfig(
    num_landmarks=6,
    facets_min=1,
    facets_max=2,
    train_per_landmark=8,
    index_per_landmark=4,
    queries=8,
    index_distractors=4,
    test_distractors=4,
    image_size=192,
    facet_size=256,
    workers=0,
)
# illustrative evaluation values per day (placeholders that show the panel, not measurements)
EVALUATIONS = [
    {"revisitop.medium.mAP": 52.4 + 3.1 * day, "recognition.GAP": 41.0 + 2.6 * day} for day in range(DAYS)
]


def synthetic_world(root: Path) -> dict[str, dict[str, Path]]:
    """A small synthetic world under ``root`` (generated once); image id -> path for its train and test splits."""
    from landmark.data.formats import read_dataset
    from landmark.data.synthetic import generate_world

    if not (root / "synth_meta.parquet").is_file():
        generate_world(WORLD, root, seed=5, progress=False)
    dataset = read_dataset(root)
    return {split: dict(dataset.image_paths(split)) for split in ("train", "test")}


def ingested_batch(train: dict[str, Path], folder: Path, day: int) -> dict[str, Path]:
    """Day ``day``'s batch: 16 train photos brightened by 25 levels and enlarged by 15% per day, ``day`` of them
    cut so that they no longer decode."""
    folder.mkdir(parents=True, exist_ok=True)
    batch = {}
    for i, source in enumerate(list(train.values())[:16]):
        target = folder / f"day{day}-{i:02d}.jpg"
        image = Image.open(source).convert("RGB")
        pixels = np.clip(np.asarray(image, dtype=np.int16) + 25 * day, 0, 255).astype(np.uint8)
        size = round(image.width * (1 + 0.15 * day))
        Image.fromarray(pixels).resize((size, size)).save(target, quality=90)
        if i < day:
            target.write_bytes(target.read_bytes()[:20])  # truncated: no longer decodes
        batch[target.stem] = target
    return batch


def fill_workspace(workspace: Path, world: dict[str, dict[str, Path]], scratch: Path) -> str:
    """Four days of drift snapshots for both uses and of evaluations; returns the project id."""
    cfg = DriftConfig(workers=0)
    reference = image_stats(world["train"])
    frames: dict[str, pd.DataFrame] = {"retrain": image_stats(world["test"])}
    for day in range(DAYS):
        frames["ingest"] = image_stats(ingested_batch(world["train"], scratch / f"batch{day}", day))
        when = START + timedelta(days=day)
        for purpose in PURPOSES:
            _, snapshot = drift_report(
                reference, frames[purpose], cfg, timestamp=when, tags=[purpose], metadata={"purpose": purpose}
            )
            add_to_workspace(snapshot, workspace, PROJECT)
        log_metrics(EVALUATIONS[day], workspace, PROJECT, timestamp=when + timedelta(hours=1))
    return setup_monitoring(workspace, PROJECT)


def dashboard_screenshot(workspace: Path, project_id: str, target: Path, log: Path) -> Path:
    """Serve ``workspace``, wait until every panel drew its points, save the full dashboard page."""
    titles = [drift_panel_title(s.title, p) for s in DRIFT_PANELS for p in PURPOSES] + [PANEL_EVALUATION]
    with evidently_ui(workspace, free_port(), log=log) as url, browser() as driver:
        driver.get(f"{url}/projects/{project_id}")
        wait_for(driver, lambda d: not undrawn_panels(d, titles), 60, "some panels drew nothing")
        return full_page_screenshot(driver, target)


def prefect_screenshot(run_dir: Path, target: Path) -> Path:
    """A private Prefect server with two runs of the probe flow; its runs page."""
    port = free_port()
    try:
        start_prefect_server(run_dir, port)
        for run in ("probe-run-1", "probe-run-2"):
            run_probe_flow(api_url(port), run_dir / "client", "screenshot-probe", run)
        with browser(height=1150) as driver:
            driver.get(f"{ui_url(port)}/runs")
            wait_for(driver, lambda d: "probe-run-2" in page_text(d), 60, "the runs page lists no run")
            target.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(target))
            return target
    finally:
        stop_prefect_server(run_dir)


@contextmanager
def browser(width: int = 1500, height: int = 1000) -> Iterator[WebDriver]:
    """A headless Chromium, quit on exit."""
    driver = headless_chrome(width, height)
    try:
        yield driver
    finally:
        driver.quit()


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, make the screenshots, print their paths; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs"), help="where the PNGs go (default: docs)")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path("build/screenshots"),
        help="scratch dir (default: build/screenshots)",
    )
    parser.add_argument("--only", choices=("evidently", "prefect"), default=None, help="make one screenshot")
    args = parser.parse_args(argv)
    missing = chromium_available()
    if missing:
        print(f"error: {missing}", file=sys.stderr)
        return 1
    work = args.workdir.resolve()
    if args.only in (None, "evidently"):
        workspace = work / "workspace"
        shutil.rmtree(workspace, ignore_errors=True)
        project_id = fill_workspace(workspace, synthetic_world(work / "world"), work / "batches")
        path = dashboard_screenshot(
            workspace, project_id, args.out / "evidently_dashboard.png", work / "ui.log"
        )
        print(f"wrote {path}")
    if args.only in (None, "prefect"):
        shutil.rmtree(work / "prefect", ignore_errors=True)
        path = prefect_screenshot(work / "prefect", args.out / "prefect_ui.png")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
