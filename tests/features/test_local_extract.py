"""Local features of files into a store: query crops map back to original-image pixels; keys and resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from landmark.config import LocalConfig
from landmark.features.local_extract import LocalItem, extract_image, extract_local_to_store
from landmark.features.local_store import LocalFeatureReader, LocalStoreError

SIFT = (("max_features", 300), ("max_side", 0))


def blocks(seed: int, height: int, width: int) -> np.ndarray:
    """Random 8x8-cell colour blocks: plenty of SIFT corners."""
    cells = np.random.default_rng(seed).integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
    return np.kron(cells, np.ones((8, 8, 1), dtype=np.uint8))


def save_png(path: Path, pixels: np.ndarray) -> Path:
    Image.fromarray(pixels).save(path)
    return path


def test_crop_offset_is_added_back(tmp_path: Path) -> None:
    image = blocks(0, 160, 240)
    whole = save_png(tmp_path / "whole.png", image)
    crop = save_png(tmp_path / "crop.png", image[40:136, 64:192])
    _, of_crop = extract_image(("q", str(whole), "sift", SIFT, 0, (64.0, 40.0, 192.0, 136.0)))
    _, of_file = extract_image(("c", str(crop), "sift", SIFT, 0, None))
    assert len(of_crop) > 20
    np.testing.assert_allclose(of_crop.locations, of_file.locations + np.array([64.0, 40.0], np.float32))
    np.testing.assert_array_equal(of_crop.descriptors, of_file.descriptors)
    assert of_crop.locations[:, 0].min() >= 64 and of_crop.locations[:, 1].max() < 136


def test_store_is_keyed_and_resumed(tmp_path: Path) -> None:
    files = [save_png(tmp_path / f"{k}.png", blocks(k, 96, 96)) for k in range(3)]
    cfg = LocalConfig(image_size=0, max_features=100, workers=0)
    items = [LocalItem(f"img{k}", path) for k, path in enumerate(files)]
    store = tmp_path / "store"
    first = extract_local_to_store(items[:2], store, cfg, progress=False)
    assert (first.items, first.already_stored, first.extracted) == (2, 0, 2)
    second = extract_local_to_store(items, store, cfg, progress=False)
    assert (second.items, second.already_stored, second.extracted) == (3, 2, 1)
    assert sorted(LocalFeatureReader(store).ids()) == ["img0", "img1", "img2"]
    with pytest.raises(ValueError, match="repeated: \\['img0'\\]"):
        extract_local_to_store([items[0], items[0]], store, cfg, progress=False)
    with pytest.raises(LocalStoreError, match="different max_features"):
        extract_local_to_store(
            items, store, LocalConfig(image_size=0, max_features=50, workers=0), progress=False
        )
