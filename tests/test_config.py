from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from landmark.config import Config, ConfigError, config_to_dict, load_config

REPO_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_repo_params_load_and_match_defaults() -> None:
    cfg = load_config(REPO_PARAMS)
    # params.yaml spells out the defaults: one source of truth for both. One exception: the project distills on
    # the shared IMC photos, the library (and every test that builds a config) does not depend on them.
    assert cfg.train.distill_real and all("imc2022-landmarks" in f for f in cfg.train.distill_real)
    assert Config().train.distill_real == ()
    assert cfg == replace(Config(), train=replace(Config().train, distill_real=cfg.train.distill_real))


def test_config_is_frozen() -> None:
    cfg = load_config(None)
    with pytest.raises(AttributeError):
        cfg.seed = 3  # type: ignore[misc]


def test_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, "extract:\n  batch_sise: 4\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "extract.batch_sise" in message and str(path) in message


def test_unknown_section(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'trian'"):
        load_config(write(tmp_path, "trian: {}\n"))


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("seed: abc\n", "seed must be an integer"),
        ("seed: true\n", "seed must be an integer"),
        ("device: tpu\n", "device must be one of"),
        ("extract:\n  batch_size: 0\n", "batch_size must be >= 1"),
        ("extract:\n  scales: [1.0, -2]\n", "scales must be positive"),
        ("synth:\n  label_noise: 1.5\n", "label_noise must be in [0, 1]"),
        ("synth:\n  jpeg_quality: [90, 10]\n", "jpeg_quality"),
        ("synth:\n  jpeg_quality: [90]\n", "list of 2 items"),
        ("model: 3\n", "model must be a mapping"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("a: [\n", "not valid YAML"),
    ],
)
def test_bad_values_are_rejected_with_the_key(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert fragment in str(info.value)


def test_overrides_apply_and_are_typed(tmp_path: Path) -> None:
    cfg = load_config(
        write(tmp_path, "seed: 1\n"),
        ["seed=7", "extract.scales=[1.0]", "model.backbone=resnet18", "synth.label_noise=0.2"],
    )
    assert cfg.seed == 7
    assert cfg.extract.scales == (1.0,)
    assert cfg.model.backbone == "resnet18"
    assert cfg.synth.label_noise == pytest.approx(0.2)
    assert cfg.extract.batch_size == Config().extract.batch_size  # untouched keys keep defaults


def test_int_accepted_for_float_but_not_reverse() -> None:
    assert load_config(None, ["model.gem_p=4"]).model.gem_p == 4.0
    with pytest.raises(ConfigError, match="an integer"):
        load_config(None, ["seed=1.5"])


@pytest.mark.parametrize("bad", ["seed", "=3", "extract.scales.x=1"])
def test_malformed_overrides(bad: str) -> None:
    with pytest.raises(ConfigError):
        load_config(None, [bad])


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config("/nonexistent/params.yaml")


def test_config_to_dict_round_trips(tmp_path: Path) -> None:
    import yaml

    cfg = load_config(None, ["seed=5", "extract.scales=[1.0, 2.0]"])
    path = write(tmp_path, yaml.safe_dump(config_to_dict(cfg)))
    assert load_config(path) == cfg


def test_renamed_key_names_the_new_one(tmp_path: Path) -> None:
    path = write(tmp_path, "clean:\n  inlier_threshold: 4\n")
    with pytest.raises(ConfigError, match=r"'clean.inlier_threshold' was renamed 'clean.min_inliers'"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"renamed 'clean.min_inliers'"):
        load_config(None, ["clean.inlier_threshold=4"])
    assert load_config(None, ["clean.min_inliers=4"]).clean.min_inliers == 4
