"""The golden real-photo gate: IMC sets built from the shared photos, a deliberately damaged candidate (a random
backbone) is rejected for losing on real photos, while a candidate as good as production passes; results are
cached per model. Real photos, real extraction, a real SeaweedFS registry."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from landmark.config import Config, ExtractConfig, ModelConfig, PromoteConfig

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory, imc_root: Path) -> Config:
    base = Config()
    work = tmp_path_factory.mktemp("golden")
    return dataclasses.replace(
        base,
        device="cpu",
        paths=dataclasses.replace(base.paths, imc=str(imc_root), golden=str(work / "golden")),
        extract=ExtractConfig(image_size=96, scales=(1.0,), batch_size=16, workers=0),
        promote=dataclasses.replace(base.promote, golden=("imc",), golden_queries=2, golden_tolerance=1.0),
    )


def _model_dir(path: Path, model_cfg: ModelConfig) -> Path:
    from landmark.models.global_model import create_global_model
    from landmark.models.model_dir import save_model_dir

    return save_model_dir(path, create_global_model(model_cfg), model_cfg, [], {})


def _promote(cfg: Config, tmp: Path, candidate: Path, golden_dir: Path, object_store):  # type: ignore[no-untyped-def]
    from landmark.stages.promote import promote

    metrics = {"revisitop": {"medium": {"mAP": 50.0}}, "recognition": {"GAP": 50.0}}
    files = {"metrics.json": metrics, "quality.json": {"passed": True}}
    files["drift.json"] = {"drift_share": 0.0, "max_drift_share": 0.5, "passed": True}
    for name, content in files.items():
        (tmp / name).write_text(json.dumps(content))
    (tmp / "index").mkdir(exist_ok=True)
    (tmp / "index" / "meta.json").write_text("{}")
    promote_cfg = dataclasses.replace(cfg.promote, prefix=f"golden-{tmp.name}")
    return promote(
        dataclasses.replace(cfg, promote=promote_cfg),
        candidate,
        tmp / "index",
        tmp / "metrics.json",
        tmp / "quality.json",
        tmp / "drift.json",
        production_metrics_path=tmp / "metrics.json",
        golden_path=golden_dir / "candidate" / "golden.json",
        production_golden_path=golden_dir / "production" / "golden.json",
        store=object_store,
    )


def test_a_damaged_candidate_is_rejected_for_losing_on_real_photos(
    cfg: Config, tmp_path: Path, object_store
) -> None:  # type: ignore[no-untyped-def]
    from landmark.models.model_dir import write_pretrained_dir
    from landmark.stages.golden import golden

    production = write_pretrained_dir(cfg.model, tmp_path / "production")
    scores = golden(cfg, production, tmp_path / "out" / "production", progress=False)
    assert sorted(scores["sets"]) == [
        "imc_brandenburg_gate",
        "imc_grand_place_brussels",
        "imc_sagrada_familia",
    ]
    assert all(s["queries"] == 2 and s["medium"] > 50 for s in scores["sets"].values()), scores
    damaged = _model_dir(tmp_path / "damaged", ModelConfig(pretrained="none", embedding_dim=0))
    worse = golden(cfg, damaged, tmp_path / "out" / "candidate", progress=False)
    assert all(worse["sets"][n]["medium"] < scores["sets"][n]["medium"] - 5 for n in scores["sets"]), worse
    summary = _promote(cfg, tmp_path, damaged, tmp_path / "out", object_store)
    assert summary.outcome == "rejected"
    failed = [r for r in summary.decision.reasons if "loses more than 1 points on real photos" in r]
    assert len(failed) == 3, summary.decision.reasons
    assert {row["set"] for row in summary.decision.golden} == set(scores["sets"])
    # the same model again: every set comes from the cache
    again = golden(cfg, production, tmp_path / "again", progress=False)
    assert again["sets"] == scores["sets"] and again["cached"] == sorted(scores["sets"])
    # the default protocol (every eligible photo a query, kept in the database) rebuilds the sets, no stale score
    # is reused, and the queries are not extracted again: they are database photos described whole
    every = dataclasses.replace(cfg, promote=dataclasses.replace(cfg.promote, golden_queries="all"))
    loo = golden(every, production, tmp_path / "loo", progress=False)
    assert loo["cached"] == [] and [s["queries"] for s in loo["sets"].values()] == [348, 233, 82]
    assert not (tmp_path / "loo" / "imc_sagrada_familia" / "features" / "test").exists()
    assert all(s["medium"] > 50 for s in loo["sets"].values()), loo


def test_a_candidate_as_good_as_production_passes_the_golden_check(
    cfg: Config, tmp_path: Path, object_store
) -> None:  # type: ignore[no-untyped-def]
    from landmark.models.model_dir import write_pretrained_dir
    from landmark.stages.golden import golden

    production = write_pretrained_dir(cfg.model, tmp_path / "production")
    golden(cfg, production, tmp_path / "out" / "production", progress=False)
    same = _model_dir(tmp_path / "same", dataclasses.replace(cfg.model, embedding_dim=0))
    golden(cfg, same, tmp_path / "out" / "candidate", progress=False)
    summary = _promote(cfg, tmp_path, same, tmp_path / "out", object_store)
    golden_reasons = [r for r in summary.decision.reasons if r.startswith("golden ")]
    assert len(golden_reasons) == 3 and all(r.endswith(": ok") for r in golden_reasons), golden_reasons
    assert all(abs(row["delta"]) < 0.01 for row in summary.decision.golden)


def test_without_imc_photos_the_gate_notes_it(cfg: Config, tmp_path: Path) -> None:
    from landmark.models.model_dir import write_pretrained_dir
    from landmark.ops.gate import golden_checks
    from landmark.stages.golden import golden

    missing = dataclasses.replace(cfg, paths=dataclasses.replace(cfg.paths, imc=str(tmp_path / "nowhere")))
    result = golden(
        missing, write_pretrained_dir(cfg.model, tmp_path / "p"), tmp_path / "out", progress=False
    )
    assert result["sets"] == {} and "no IMC photos" in result["notes"][0]
    (ok, reason), *_ = golden_checks(result, result, 1.0)
    assert ok and "no golden set" in reason


def test_promote_config_rejects_bad_golden_settings() -> None:
    with pytest.raises(ValueError, match="golden_tolerance"):
        PromoteConfig(golden_tolerance=-1.0)
    with pytest.raises(ValueError, match="golden_queries must be 'all' or >= 1, got 0"):
        PromoteConfig(golden_queries=0)
    assert PromoteConfig().golden_queries == "all"
    with pytest.raises(ValueError, match="golden has duplicates"):
        PromoteConfig(golden=("imc", "imc"))
