"""DELF: model shapes, receptive-field geometry, PCA, a tiny two-phase training run, pyramid extraction, the
model directory, and the delf-tf backend on a tiny SavedModel exported by the test."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import torch
from torch import nn

from landmark.config import Config, DelfConfig
from landmark.data.images import decode_image
from landmark.features.delf import DelfExtractor, select_top
from landmark.features.local import create_local_extractor, local_extractor_names
from landmark.models.delf import (
    create_delf_model,
    fit_pca,
    original_centres,
    receptive_field,
)
from landmark.models.delf_dir import load_delf_dir, save_delf_dir
from landmark.models.model_dir import ModelDirError

if TYPE_CHECKING:  # a type only: importing conftest at run time would pick another conftest module
    from conftest import TinyWorld

TINY_DELF = DelfConfig(
    image_size=128,
    batch_size=8,
    descriptor_epochs=1,
    attention_epochs=6,
    warmup_steps=2,
    augmentation="none",
    scales=(0.7071067811865476, 1.0),
    max_features=200,
    pca_images=4,
    workers=0,
)


@pytest.fixture(scope="module")
def lite0() -> nn.Module:
    return create_delf_model("efficientnet_lite0", "packaged", num_classes=4).eval()


def test_model_shapes_and_nonnegative_attention(lite0: nn.Module) -> None:
    images = torch.rand(2, 3, 96, 130)
    with torch.no_grad():
        features, attention = lite0(images)
        assert features.shape == (2, 112, 6, 9)  # ceil(96 / 16), ceil(130 / 16)
        assert attention.shape == (2, 1, 6, 9)
        assert (attention >= 0).all()
        assert lite0.attention_logits(features).shape == (2, 4)
        assert lite0.gap_logits(features).shape == (2, 4)
    with pytest.raises(ValueError, match="num_classes"):
        create_delf_model("efficientnet_lite0", "none", num_classes=1)


def test_receptive_field_of_hand_checked_chains() -> None:
    # conv k3 s2 p0: centre(i) = 2i + 1; then conv k3 s2 p0: 1 + 2 * (2i + 1) = 4i + 3.
    chain = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2))
    assert receptive_field(chain) == receptive_field(chain).__class__(stride=4, offset=3.0)
    # conv k7 s2 p3 (offset 0), maxpool k3 s2 p0 (+2 * 1): centre(i) = 2 + 4i.
    stem = nn.Sequential(nn.Conv2d(3, 4, 7, 2, 3), nn.MaxPool2d(3, 2))
    rf = receptive_field(stem)
    assert (rf.stride, rf.offset) == (4, 2.0)
    np.testing.assert_array_equal(
        rf.centres(2, 3).numpy(), [[2, 2], [6, 2], [10, 2], [2, 6], [6, 6], [10, 6]]
    )
    with pytest.raises(ValueError, match="fixed geometry"):
        receptive_field(nn.Conv2d(3, 4, 3, padding="same"))


def test_receptive_field_centre_of_efficientnet_cell(lite0: nn.Module) -> None:
    rf = lite0.receptive_field
    assert (rf.stride, rf.offset) == (16, 0.0)  # every layer pads (k - 1) / 2
    # The input pixels that influence cell (i, j) = (13, 12) (a +-169 px window, inside this 448 px image)
    # are centred on (x, y) = (16 * 12, 16 * 13).
    x = torch.rand(1, 3, 448, 448, requires_grad=True)
    lite0.features(x)[0, :, 13, 12].sum().backward()
    assert x.grad is not None
    ys, xs = torch.nonzero(x.grad[0].abs().sum(0) > 0, as_tuple=True)
    assert xs.min() > 0 and ys.max() < 447  # the window is not clipped by the border
    assert (xs.min() + xs.max()).item() / 2 == 192.0 and (ys.min() + ys.max()).item() / 2 == 208.0
    centres = rf.centres(28, 28).view(28, 28, 2)
    assert centres[13, 12].tolist() == [192.0, 208.0]
    # Pyramid scale 0.5 of a 240 x 320 image: cell (2, 3) centre (48, 32) -> ((48 + 0.5) * 2 - 0.5, 64.5).
    mapped = original_centres(torch.tensor([[48.0, 32.0]]), resized=(120, 160), original=(240, 320))
    assert mapped.tolist() == [[96.5, 64.5]]


def test_stride8_map_is_the_dilated_stride16_map_on_a_finer_grid(lite0: nn.Module) -> None:
    dense = create_delf_model("efficientnet_lite0", "packaged", num_classes=4, feature_stride=8).eval()
    dense.load_state_dict(lite0.state_dict())  # the same parameters (and input normalisation) at both strides
    assert (dense.receptive_field.stride, dense.receptive_field.offset) == (8, 0.0)
    images = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        coarse, dense_map = lite0.features(images), dense.features(images)
    assert coarse.shape == (1, 112, 6, 8) and dense_map.shape == (1, 112, 12, 16)
    # Atrous evaluation: every other cell of the dense map is the stride-16 cell at the same centre.
    torch.testing.assert_close(dense_map[:, :, ::2, ::2], coarse, rtol=1e-4, atol=1e-4)
    assert dense.receptive_field.centres(12, 16)[17].tolist() == [8.0, 8.0]  # cell (1, 1)
    with pytest.raises(ValueError, match="feature_stride must be one of"):
        create_delf_model("efficientnet_lite0", "none", num_classes=4, feature_stride=4)


def test_pca_is_40d_unit_norm_and_reproducible() -> None:
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(300, 112)).astype(np.float32) * np.linspace(3, 0.1, 112, dtype=np.float32)
    pca = fit_pca(raw, 40)
    assert pca.components.shape == (40, 112) and pca.mean.shape == (112,)
    np.testing.assert_allclose(pca.components @ pca.components.T, np.eye(40), atol=1e-5)
    assert (np.diff(pca.variances) <= 0).all()
    reduced = pca.transform(raw)
    assert reduced.shape == (300, 40) and reduced.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(reduced, axis=1), 1.0, rtol=1e-5)
    again = fit_pca(raw, 40)
    np.testing.assert_array_equal(again.components, pca.components)
    whitened = fit_pca(raw, 40, whiten=True).transform(raw)
    np.testing.assert_allclose(np.linalg.norm(whitened, axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="more than 40 descriptors"):
        fit_pca(raw[:40], 40)
    with pytest.raises(ValueError, match=r"\(N, 112\)"):
        pca.transform(raw[:, :50])


def test_select_top_keeps_threshold_and_budget() -> None:
    scores = np.array([0.5, 2.0, 1.0, 2.0, 0.1], np.float32)
    assert select_top(scores, 3, 0.4).tolist() == [1, 3, 2]  # ties keep the lower index first
    assert select_top(scores, 10, 1.0).tolist() == [1, 3, 2]
    assert select_top(scores, 10, 5.0).tolist() == []


@pytest.fixture(scope="module")
def trained(tiny_world: TinyWorld, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from landmark.stages.train_delf import train_delf

    out = tmp_path_factory.mktemp("delf") / "model"
    cfg = dataclasses.replace(Config(), seed=3, device="cpu", delf=TINY_DELF)
    summary = train_delf(cfg, tiny_world.root, out, progress=False)
    assert summary.classes == 6 and summary.images >= 30
    assert summary.attention_last_loss < 0.8 * summary.attention_first_loss
    return out


def test_tiny_training_reduces_the_loss_and_writes_the_model(trained: Path) -> None:
    metrics = json.loads((trained / "metrics.json").read_text())["train"]
    attention = metrics["attention_phase"]
    assert attention["last_epoch_loss"] < 0.8 * attention["first_epoch_loss"]
    assert metrics["descriptor_phase"]["steps"] >= 1
    with open(trained / "train_log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == list(range(1, len(rows) + 1))
    assert {r["phase"] for r in rows} == {"descriptor", "attention"}
    assert len(rows) == metrics["descriptor_phase"]["steps"] + attention["steps"]
    loaded = load_delf_dir(trained)
    assert loaded.config == TINY_DELF and loaded.pca.dim == 40 and len(loaded.labels) == 6


def test_extraction_is_deterministic_and_follows_the_contract(trained: Path, tiny_world: TinyWorld) -> None:
    extractor = create_local_extractor("delf", model_dir=trained, max_features=150)
    image = decode_image(next((tiny_world.root / "train").rglob("*.jpg")))
    feats = extractor(image)
    again = extractor(image)
    assert 0 < len(feats) <= 150 and feats.dim == 40
    for name in ("locations", "scales", "scores", "descriptors"):
        np.testing.assert_array_equal(getattr(feats, name), getattr(again, name))
    h, w = image.shape[:2]
    assert (
        (feats.locations >= 0).all()
        and (feats.locations[:, 0] < w).all()
        and (feats.locations[:, 1] < h).all()
    )
    assert set(np.unique(feats.scales).tolist()) <= {np.float32(s) for s in TINY_DELF.scales}
    assert (np.diff(feats.scores) <= 0).all() and (feats.scores >= 0).all()
    np.testing.assert_allclose(np.linalg.norm(feats.descriptors, axis=1), 1.0, rtol=1e-5)
    grey = extractor(image[:, :, 1])  # (H, W) input is accepted as grey
    assert grey.dim == 40
    strict = create_local_extractor("delf", model_dir=trained, score_threshold=1e9)
    none = strict(image)
    assert len(none) == 0 and none.descriptors.shape == (0, 40)


def test_model_dir_round_trip_and_clear_errors(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_delf_model("efficientnet_lite0", "none", num_classes=3).eval()
    rng = np.random.default_rng(1)
    pca = fit_pca(rng.normal(size=(100, 112)), 40)
    cfg = DelfConfig(scales=(1.0,), max_features=50)
    save_delf_dir(tmp_path / "m", model, pca, cfg, [7, 3, 9], {"train": {"steps": 0}})
    loaded = load_delf_dir(tmp_path / "m")
    assert loaded.labels == (7, 3, 9) and loaded.config == cfg and loaded.metrics == {"train": {"steps": 0}}
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[key], value, rtol=0, atol=0)
    np.testing.assert_array_equal(loaded.pca.components, pca.components)
    image = (rng.random((100, 140, 3)) * 255).astype(np.uint8)
    ours = DelfExtractor(model, pca, (1.0,), 0.0, 50)(image)
    theirs = create_local_extractor("delf", model_dir=tmp_path / "m")(image)
    np.testing.assert_array_equal(ours.descriptors, theirs.descriptors)
    np.testing.assert_array_equal(ours.locations, theirs.locations)
    # The stride is an extraction setting: the same weights load dilated, keypoints on an 8-px grid.
    dense = load_delf_dir(tmp_path / "m", feature_stride=8)
    assert dense.config == dataclasses.replace(cfg, feature_stride=8) and dense.model.feature_stride == 8
    fine = create_local_extractor("delf", model_dir=tmp_path / "m", feature_stride=8)(image)
    assert len(fine) == 50 and fine.dim == 40
    assert np.all(fine.locations % 8 == 0)  # cell centres 8 * k at scale 1
    with pytest.raises(ValueError, match="feature_stride must be 8 or 16"):
        load_delf_dir(tmp_path / "m", feature_stride=4)

    with pytest.raises(ModelDirError, match="not found"):
        load_delf_dir(tmp_path / "nope")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**config, "kind": None}))
    with pytest.raises(ModelDirError, match="not a DELF model directory"):
        load_delf_dir(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    np.savez(tmp_path / "m" / "pca.npz", mean=pca.mean, components=pca.components[:, :50],
             variances=pca.variances, whiten=np.array(False))  # fmt: skip
    with pytest.raises(ModelDirError, match=r"pca\.npz"):
        load_delf_dir(tmp_path / "m")
    (tmp_path / "m" / "pca.npz").unlink()
    with pytest.raises(ModelDirError, match=r"missing pca\.npz"):
        load_delf_dir(tmp_path / "m")
    assert {"delf", "delf-tf", "sift"} <= set(local_extractor_names())
    with pytest.raises(ValueError, match="needs model_dir"):
        create_local_extractor("delf")
    with pytest.raises(ValueError, match="bad parameters"):
        create_local_extractor("delf", model_dir=tmp_path / "m", colour=True)


def test_cli_train_delf_reports_a_missing_dataset(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from landmark.cli import app

    result = CliRunner().invoke(
        app, ["train-delf", "--data", str(tmp_path / "missing"), "--out", str(tmp_path)]
    )
    assert result.exit_code == 1
    assert "error" in result.output and "Traceback" not in result.output


def _export_fake_delf(path: Path, image_dtype: str = "uint8") -> None:
    """A SavedModel with the official DELF serving signature and deterministic outputs:
    n = min(max_feature_num, 4) features; locations (y, x) = (10 + i, 20 + 2 i);
    descriptor i = [i + 1, score_threshold, sum(image_scales), mean(image)]."""
    import tensorflow as tf

    class FakeDelf(tf.Module):
        @tf.function(
            input_signature=[
                tf.TensorSpec([None, None, 3], getattr(tf, image_dtype), name="image"),
                tf.TensorSpec([], tf.float32, name="score_threshold"),
                tf.TensorSpec([None], tf.float32, name="image_scales"),
                tf.TensorSpec([], tf.int32, name="max_feature_num"),
            ]
        )
        def __call__(self, image, score_threshold, image_scales, max_feature_num):  # type: ignore[no-untyped-def]
            n = tf.minimum(max_feature_num, 4)
            i = tf.cast(tf.range(n), tf.float32)
            locations = tf.stack([10.0 + i, 20.0 + 2.0 * i], axis=1)
            ones = tf.ones_like(i)
            descriptors = tf.stack(
                [i + 1.0, score_threshold * ones, tf.reduce_sum(image_scales) * ones,
                 tf.reduce_mean(tf.cast(image, tf.float32)) * ones],
                axis=1,
            )  # fmt: skip
            return {"locations": locations, "descriptors": descriptors}

    module = FakeDelf()
    tf.saved_model.save(module, str(path), signatures={"default": module.__call__.get_concrete_function()})


def test_delf_tf_backend_on_an_exported_savedmodel(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    _export_fake_delf(tmp_path / "delf_tf")
    extractor = create_local_extractor(
        "delf-tf", model_dir=tmp_path / "delf_tf", scales=[0.5, 1.0], score_threshold=2.0, max_features=3
    )
    image = np.full((30, 40, 3), 6, np.uint8)
    feats = extractor(image)
    assert len(feats) == 3 and feats.dim == 4
    np.testing.assert_array_equal(feats.locations, [[20, 10], [22, 11], [24, 12]])  # (y, x) -> (x, y)
    expected = np.array([[1, 2, 1.5, 6], [2, 2, 1.5, 6], [3, 2, 1.5, 6]], np.float32)
    np.testing.assert_allclose(feats.descriptors, expected / np.linalg.norm(expected, axis=1, keepdims=True))
    np.testing.assert_array_equal(feats.scales, [1, 1, 1])
    grey = extractor(np.full((30, 40), 6, np.uint8))
    np.testing.assert_array_equal(grey.descriptors, feats.descriptors)
    # The TF-Hub module's float input takes pixels in [0, 1]: mean(image) = 6 / 255.
    _export_fake_delf(tmp_path / "delf_tf_float", image_dtype="float32")
    hub_like = create_local_extractor(
        "delf-tf",
        model_dir=tmp_path / "delf_tf_float",
        scales=[0.5, 1.0],
        score_threshold=2.0,
        max_features=3,
    )(image)
    expected[:, 3] = 6 / 255
    np.testing.assert_allclose(  # float32 mean over the image: a few ulps off 6 / 255
        hub_like.descriptors, expected / np.linalg.norm(expected, axis=1, keepdims=True), rtol=1e-5
    )
    with pytest.raises(FileNotFoundError, match=r"saved_model\.pb"):
        create_local_extractor("delf-tf", model_dir=tmp_path)
    with pytest.raises(ValueError, match="needs model_dir"):
        create_local_extractor("delf-tf")
