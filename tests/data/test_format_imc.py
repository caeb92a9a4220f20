"""IMC layout: the shared real photos with camera geometry, and a synthetic round trip."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from landmark.data.groundtruth import DatasetFormatError
from landmark.data.images import decode_image, read_image_size
from landmark.data.imc import (
    Camera,
    fundamental_from_cameras,
    normalize_fundamental,
    read_all_imc_cameras,
    read_imc,
    read_imc_cameras,
    read_imc_pairs,
    write_imc,
    write_imc_cameras,
)

# The lead's tests/conftest.py provides the same path as the `imc_root` fixture; computed here as well so this
# file also runs on its own.
SHARED_IMC = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "imc2022-landmarks"


@pytest.fixture(scope="module")
def shared_imc() -> Path:
    if not SHARED_IMC.is_dir():
        pytest.skip(f"shared IMC photos not found at {SHARED_IMC}")
    return SHARED_IMC


def test_real_imc_manifest(shared_imc: Path) -> None:
    data = read_imc(shared_imc)
    frame = data.manifest("train")
    assert len(frame) == 676
    assert set(frame["status"]) == {"ok"}
    assert data.label_names == {0: "brandenburg_gate", 1: "grand_place_brussels", 2: "sagrada_familia"}
    assert frame["landmark_id"].value_counts().sort_index().tolist() == [350, 236, 90]
    first = frame.iloc[0]
    assert first["uri"] == f"brandenburg_gate/images/{first['image_id']}.jpg"
    pixels = decode_image(data.image_path("train", first["image_id"]))
    assert max(pixels.shape[:2]) <= 640
    assert read_image_size(data.image_path("train", first["image_id"])) == (pixels.shape[1], pixels.shape[0])


def test_real_cameras_give_the_published_fundamental_matrices(shared_imc: Path) -> None:
    scene = shared_imc / "sagrada_familia"
    cameras = read_imc_cameras(scene)
    assert len(cameras) == 90
    first = next(iter(cameras.values()))
    np.testing.assert_allclose(first.R @ first.R.T, np.eye(3), atol=1e-6)
    pairs = read_imc_pairs(scene)
    assert list(pairs.columns) == ["id1", "id2", "covisibility", "F"]
    assert len(pairs) > 100
    assert pairs["covisibility"].between(0, 1).all()
    for row in pairs.iloc[[0, 1, 2, 50, len(pairs) - 1]].itertuples():
        ours = normalize_fundamental(fundamental_from_cameras(cameras[str(row.id1)], cameras[str(row.id2)]))
        theirs = normalize_fundamental(np.asarray(row.F))
        np.testing.assert_allclose(ours, theirs, atol=1e-5)
    assert read_imc_pairs(shared_imc / "brandenburg_gate").empty


def random_camera(rng: np.random.Generator) -> Camera:
    angles = rng.uniform(-0.3, 0.3, 3)
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    focal = rng.uniform(400, 800)
    K = np.array([[focal, 0, 320], [0, focal, 240], [0, 0, 1]])
    return Camera(K=K, R=rz @ ry @ rx, t=rng.uniform(-1, 1, 3))


def test_fundamental_satisfies_the_epipolar_constraint() -> None:
    rng = np.random.default_rng(0)
    cam1, cam2 = random_camera(rng), random_camera(rng)
    points = rng.uniform(-2, 2, (20, 3)) + np.array([0, 0, 8])  # in front of both cameras

    def project(cam: Camera) -> np.ndarray:
        x = (cam.K @ (cam.R @ points.T + cam.t[:, None])).T
        return x / x[:, 2:]

    x1, x2 = project(cam1), project(cam2)
    F = normalize_fundamental(fundamental_from_cameras(cam1, cam2))
    residuals = np.einsum("ni,ij,nj->n", x2, F, x1)
    np.testing.assert_allclose(residuals, 0, atol=1e-9)
    assert abs(np.linalg.det(F)) < 1e-12  # rank 2
    assert np.linalg.norm(F) == pytest.approx(1.0)
    assert F.flat[np.argmax(np.abs(F))] > 0


def jpeg(colour: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 12, 3), colour, np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def make_imc(root: Path) -> dict[str, Camera]:
    rng = np.random.default_rng(1)
    cameras = {}
    for scene, ids in {"tower": ["10_1", "10_2"], "bridge": ["20_1", "20-2", "20_3"]}.items():
        (root / scene / "images").mkdir(parents=True)
        for k, image_id in enumerate(ids):
            (root / scene / "images" / f"{image_id}.jpg").write_bytes(jpeg(40 * k))
        scene_cameras = {image_id: random_camera(rng) for image_id in ids}
        write_imc_cameras(root / scene, scene_cameras)
        cameras.update(scene_cameras)
    return cameras


def test_synthetic_imc_round_trip(tmp_path: Path) -> None:
    cameras = make_imc(tmp_path / "src")
    source = read_imc(tmp_path / "src")
    assert source.label_names == {0: "bridge", 1: "tower"}
    assert list(source.manifest("train")["image_id"]) == ["20-2", "20_1", "20_3", "10_1", "10_2"]
    read_back_cameras = read_all_imc_cameras(tmp_path / "src")
    assert sorted(read_back_cameras) == sorted(cameras)
    for image_id, camera in cameras.items():  # repr() numbers round-trip exactly
        np.testing.assert_array_equal(read_back_cameras[image_id].K, camera.K)
        np.testing.assert_array_equal(read_back_cameras[image_id].R, camera.R)
        np.testing.assert_array_equal(read_back_cameras[image_id].t, camera.t)

    write_imc(source, tmp_path / "out", cameras=read_back_cameras)
    back = read_imc(tmp_path / "out")
    columns = ["image_id", "landmark_id", "uri", "status"]
    pd.testing.assert_frame_equal(back.manifest("train")[columns], source.manifest("train")[columns])
    assert back.label_names == source.label_names
    assert read_imc_cameras(tmp_path / "out" / "bridge").keys() == {"20_1", "20-2", "20_3"}
    assert (tmp_path / "out" / "tower" / "images" / "10_2.jpg").read_bytes() == jpeg(40)


def test_pairs_with_dashes_in_ids_are_split_by_known_ids(tmp_path: Path) -> None:
    make_imc(tmp_path)
    F = " ".join(str(v) for v in range(1, 10))
    (tmp_path / "bridge" / "pair_covisibility.csv").write_text(
        f"pair,covisibility,fundamental_matrix\n20-2-20_1,0.5,{F}\n20_1-20_3,0.25,{F}\n"
    )
    pairs = read_imc_pairs(tmp_path / "bridge")
    assert list(zip(pairs["id1"], pairs["id2"], strict=True)) == [("20-2", "20_1"), ("20_1", "20_3")]
    assert pairs["covisibility"].tolist() == [0.5, 0.25]
    np.testing.assert_array_equal(pairs.loc[0, "F"], np.arange(1, 10).reshape(3, 3))


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("a_1,1 0 0 0 1 0 0 0,1 0 0 0 1 0 0 0 1,0 0 0", r"calibration\.csv:2 camera_intrinsics.*9"),
        ("a_1,1 0 0 0 1 0 0 0 1,1 0 0 0 1 0 0 0 1,0 0 x", "translation_vector"),
        ("../a,1 0 0 0 1 0 0 0 1,1 0 0 0 1 0 0 0 1,0 0 0", "unsafe or repeated image_id"),
        ("a_1,1 0 0 0 1 0 0 0 1", "expected 4 fields, got 2"),
    ],
)
def test_bad_calibration_rows_raise(tmp_path: Path, line: str, message: str) -> None:
    header = "image_id,camera_intrinsics,rotation_matrix,translation_vector\n"
    (tmp_path / "calibration.csv").write_text(header + line + "\n")
    with pytest.raises(DatasetFormatError, match=message):
        read_imc_cameras(tmp_path)


def test_read_imc_needs_scenes(tmp_path: Path) -> None:
    with pytest.raises(DatasetFormatError, match="no <scene>/images"):
        read_imc(tmp_path)
    with pytest.raises(FileNotFoundError):
        read_imc(tmp_path / "missing")
