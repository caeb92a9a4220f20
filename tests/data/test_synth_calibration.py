"""Calibration of the default synthetic world: off-the-shelf descriptors find it neither trivial nor hopeless.

Generates the DEFAULT world (the one `make demo` uses) and evaluates the pretrained backbone + GeM on it with
the default extraction settings, so a change to the generator or the defaults that breaks calibration fails.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from landmark.config import load_config
from landmark.stages.evaluate import evaluate
from landmark.stages.extract import extract
from landmark.stages.synth import synth

REPO_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


@pytest.mark.slow
def test_default_world_medium_map_is_in_range(tmp_path_factory: pytest.TempPathFactory) -> None:
    cfg = load_config(REPO_PARAMS)
    root = tmp_path_factory.mktemp("calibration")
    synth(cfg, root / "world", progress=False)
    extract(cfg, root / "world", root / "features", splits=("index", "test"), progress=False)
    metrics = evaluate(cfg, root / "world", root / "features", root / "eval")["revisitop"]
    assert 30.0 <= metrics["medium"]["mAP"] <= 85.0, metrics
    # hard queries are harder than easy ones, as in the revisited benchmarks
    assert metrics["hard"]["mAP"] < metrics["easy"]["mAP"], metrics
