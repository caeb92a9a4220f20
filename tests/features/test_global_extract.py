"""Global descriptor extraction: batching by shape, crops, multi-scale, resumable stores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from landmark.config import ExtractConfig, ModelConfig
from landmark.features.global_desc import (
    ImageItem,
    describe_batch,
    extract_to_store,
    iter_descriptors,
    load_resized,
    shape_batches,
    target_shape,
)
from landmark.features.store import load_features
from landmark.models.global_model import create_global_model


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_global_model(ModelConfig(pretrained="packaged", embedding_dim=0)).eval()


@pytest.fixture()
def images(tmp_path: Path) -> list[ImageItem]:
    rng = np.random.default_rng(0)
    items = []
    for i, (w, h) in enumerate([(120, 90), (90, 120), (120, 90), (100, 100), (120, 90)]):
        path = tmp_path / f"im{i}.png"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
        items.append(ImageItem(f"im{i}", path))
    return items


def test_target_shape_keeps_aspect() -> None:
    assert target_shape(640, 480, 320) == (240, 320)
    assert target_shape(480, 640, 320) == (320, 240)
    assert target_shape(10, 1000, 50) == (50, 1)


def test_shape_batches_group_identical_shapes() -> None:
    shapes = [(3, 4), (4, 3), (3, 4), (3, 4), (4, 3)]
    assert shape_batches(shapes, 2) == [[0, 2], [3], [1, 4]]


def test_crop_is_applied(images: list[ImageItem]) -> None:
    cropped = ImageItem("c", images[0].path, bbox=(10.0, 20.0, 70.0, 50.0))
    out = load_resized(cropped, 60)
    assert out.shape == (30, 60, 3)  # the 60x30 box, long side 60


def test_multiscale_is_normalised_mean(model: torch.nn.Module) -> None:
    x = torch.randint(0, 255, (2, 3, 64, 64), dtype=torch.uint8)
    single = describe_batch(model, x, (1.0,))
    multi = describe_batch(model, x, (0.5, 1.0))
    half = describe_batch(model, x, (0.5,))
    expected = torch.nn.functional.normalize(single + half, dim=-1)
    torch.testing.assert_close(multi, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(multi.norm(dim=1), torch.ones(2))


def test_batching_does_not_change_descriptors(model: torch.nn.Module, images: list[ImageItem]) -> None:
    cfg1 = ExtractConfig(image_size=64, scales=(1.0,), batch_size=1, workers=0)
    cfg4 = ExtractConfig(image_size=64, scales=(1.0,), batch_size=4, workers=0)
    a = dict(zip(*_collect(iter_descriptors(model, images, cfg1, "cpu", progress=False)), strict=True))
    b = dict(zip(*_collect(iter_descriptors(model, images, cfg4, "cpu", progress=False)), strict=True))
    assert set(a) == {i.image_id for i in images}
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=1e-5)


def _collect(batches):  # type: ignore[no-untyped-def]
    ids, rows = [], []
    for batch_ids, desc in batches:
        ids.extend(batch_ids)
        rows.extend(desc)
    return ids, rows


def test_store_extraction_resumes(model: torch.nn.Module, images: list[ImageItem], tmp_path: Path) -> None:
    cfg = ExtractConfig(image_size=64, scales=(1.0,), batch_size=2, workers=0)
    store = tmp_path / "store"
    assert extract_to_store(model, images[:3], cfg, "cpu", store, progress=False) == 3
    assert extract_to_store(model, images, cfg, "cpu", store, progress=False) == 2  # only the new ones
    _ids, desc = load_features(store, [i.image_id for i in images])
    assert desc.shape == (5, 1280)
    np.testing.assert_allclose(np.linalg.norm(desc, axis=1), 1.0, atol=1e-5)


def test_fractional_bboxes_batch_with_the_size_they_crop_to(
    model: torch.nn.Module, images: list[ImageItem]
) -> None:
    # boxes whose floor/ceil and rounded extents differ must still batch by the size actually cropped
    items = [
        ImageItem(
            f"q{i}", images[0].path, bbox=(0.4 + i * 0.3, 0.6, 100.5 - i * 0.2, 75.49), width=120, height=90
        )
        for i in range(4)
    ]
    cfg = ExtractConfig(image_size=64, scales=(1.0,), batch_size=4, workers=0)
    ids = [
        i for batch_ids, _ in iter_descriptors(model, items, cfg, "cpu", progress=False) for i in batch_ids
    ]
    assert sorted(ids) == ["q0", "q1", "q2", "q3"]
