"""The synthetic photos really show their facets where the recorded homographies say, and local features match
across views of the same facet but not across landmarks."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pandas as pd
import pytest

from landmark.data.gldv2 import image_relpath
from landmark.data.synthetic.photo import local_scale
from landmark.data.synthetic.render import RenderSettings, landmark_facet, render_spec
from landmark.data.synthetic.world import plan_world

if TYPE_CHECKING:  # a type only: importing conftest at run time would pick another conftest module
    from conftest import TinyWorld

PATCH = 7  # half-size of the compared patches, pixels


@pytest.fixture(scope="module")
def world(tiny_world: TinyWorld) -> tuple[Path, pd.DataFrame]:
    return tiny_world.root, tiny_world.meta


def gray(out: Path, split: str, image_id: str) -> np.ndarray:
    img = cv2.imread(str(out / image_relpath(split, image_id)), cv2.IMREAD_GRAYSCALE)
    assert img is not None
    return img


def ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64) - a.mean()
    b = b.astype(np.float64) - b.mean()
    denom = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else 0.0


def expected_view(facet: np.ndarray, homography: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The facet warped into the photo by ``homography``, pre-blurred against aliasing (grey, float32)."""
    size = facet.shape[0]
    scale = local_scale(homography, (size / 2, size / 2))
    src = cv2.cvtColor(facet, cv2.COLOR_RGB2GRAY).astype(np.float32)
    if scale < 1:
        src = cv2.GaussianBlur(src, (0, 0), 0.5 / scale)
    return cv2.warpPerspective(src, homography, (shape[1], shape[0]), flags=cv2.INTER_LINEAR)


def test_homography_maps_facet_onto_photo(tiny_world: TinyWorld) -> None:
    out, meta, cfg, seed = tiny_world.root, tiny_world.meta, tiny_world.cfg, tiny_world.seed
    plan = plan_world(cfg, seed)
    specs = {s.image_id: s for s in plan.all_photos()}
    settings = RenderSettings.from_config(cfg, seed)
    chosen = meta[(meta["difficulty"] == "easy") & (meta["visible_fraction"] > 0.8)].head(5)
    assert len(chosen) == 5
    rng = np.random.default_rng(0)
    right, wrong = [], []
    for row in chosen.itertuples():
        spec = specs[row.image_id]
        rendered = render_spec(spec, settings)  # the same pixels, plus the visibility mask
        assert rendered.jpeg == (out / image_relpath(spec.split, spec.image_id)).read_bytes()
        homography = np.asarray(row.homography, np.float64).reshape(3, 3)
        np.testing.assert_allclose(homography, rendered.homography)
        photo = gray(out, spec.split, spec.image_id).astype(np.float32)
        facet = landmark_facet(seed, spec.landmark, spec.facet, spec.family, cfg.facet_size)
        view = expected_view(facet, homography, photo.shape)
        inner = cv2.erode(rendered.visible.astype(np.uint8), np.ones((2 * PATCH + 3,) * 2, np.uint8))
        ys, xs = np.nonzero(inner)
        taken = 0
        for k in rng.permutation(len(ys)):
            y, x = int(ys[k]), int(xs[k])
            target = view[y - PATCH : y + PATCH + 1, x - PATCH : x + PATCH + 1]
            if target.shape != (2 * PATCH + 1,) * 2 or target.std() < 12:  # skip flat wall
                continue
            right.append(ncc(photo[y - PATCH : y + PATCH + 1, x - PATCH : x + PATCH + 1], target))
            dy, dx = rng.integers(-20, 21, 2)
            if abs(dy) + abs(dx) < 12:
                dx = 15
            off = view[y + dy - PATCH : y + dy + PATCH + 1, x + dx - PATCH : x + dx + PATCH + 1]
            if off.shape == target.shape:
                wrong.append(ncc(photo[y - PATCH : y + PATCH + 1, x - PATCH : x + PATCH + 1], off))
            taken += 1
            if taken == 30:
                break
        assert taken >= 10
    assert np.mean(right) > 0.6
    assert np.mean(wrong) < 0.25
    assert np.mean(right) - np.mean(wrong) > 0.5


def sift_inliers(a: np.ndarray, b: np.ndarray, sift: cv2.SIFT) -> int:
    ka, da = sift.detectAndCompute(a, None)
    kb, db = sift.detectAndCompute(b, None)
    if da is None or db is None or len(ka) < 2 or len(kb) < 2:
        return 0
    pairs = cv2.BFMatcher().knnMatch(da, db, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < 0.8 * p[1].distance]
    if len(good) < 4:
        return 0
    src = np.float32([ka[m.queryIdx].pt for m in good])
    dst = np.float32([kb[m.trainIdx].pt for m in good])
    cv2.setRNGSeed(0)
    _, mask = cv2.findHomography(src, dst, cv2.RANSAC, 5.0)
    return 0 if mask is None else int(mask.sum())


def test_sift_matches_same_facet_not_other_landmarks(world: tuple[Path, pd.DataFrame]) -> None:
    out, meta = world
    easy = meta[(meta["difficulty"] == "easy") & (meta["noise"] == "none")]
    images = {r.image_id: gray(out, r.split, r.image_id) for r in easy.itertuples()}
    sift = cv2.SIFT_create()
    same = []
    for _, group in easy.groupby(["true_landmark", "facet"]):
        for a, b in itertools.islice(itertools.combinations(group["image_id"], 2), 2):
            same.append(sift_inliers(images[a], images[b], sift))
    rng = np.random.default_rng(0)
    ids = easy["image_id"].to_numpy()
    owner = dict(zip(easy["image_id"], easy["true_landmark"], strict=True))
    different = []
    while len(different) < 16:
        a, b = rng.choice(ids, 2, replace=False)
        if owner[a] != owner[b]:
            different.append(sift_inliers(images[a], images[b], sift))
    assert len(same) >= 8
    assert np.median(same) >= 15
    assert np.median(same) >= 3 * max(np.median(different), 1)
