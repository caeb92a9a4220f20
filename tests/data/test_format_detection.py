"""read_dataset / write_dataset: format detection and dispatch for every layout."""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from landmark.data.formats import detect_format, read_dataset, write_dataset
from landmark.data.groundtruth import DatasetFormatError
from landmark.data.imc import Camera, write_imc_cameras


def png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def make_gldv2(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "index.csv").write_text("id,url\nabc123,\n")
    return root


def make_revisitop(root: Path, name: str = "roxford5k") -> Path:
    (root / name).mkdir(parents=True)
    content = {
        "imlist": ["im_1", "im_2"],
        "qimlist": ["im_1"],
        "gnd": [{"easy": [1], "hard": [], "junk": []}],
    }
    (root / name / f"gnd_{name}.pkl").write_bytes(pickle.dumps(content))
    return root


def make_imc(root: Path) -> Path:
    (root / "scene" / "images").mkdir(parents=True)
    (root / "scene" / "images" / "1_2.png").write_bytes(png())
    write_imc_cameras(root / "scene", {"1_2": Camera(K=np.eye(3), R=np.eye(3), t=np.zeros(3))})
    return root


def make_folder(root: Path) -> Path:
    (root / "eiffel").mkdir(parents=True)
    (root / "eiffel" / "e_1.png").write_bytes(png())
    return root


@pytest.mark.parametrize(
    ("maker", "fmt", "splits"),
    [
        (make_gldv2, "gldv2", ("index",)),
        (make_revisitop, "revisitop", ("index", "test")),
        (make_imc, "imc", ("train",)),
        (make_folder, "folder", ("train",)),
    ],
)
def test_auto_detection_reads_each_format(
    tmp_path: Path, maker: Callable[[Path], Path], fmt: str, splits: tuple[str, ...]
) -> None:
    root = maker(tmp_path / "data")
    assert detect_format(root) == fmt
    data = read_dataset(root)
    assert data.splits == splits
    explicit = read_dataset(root, fmt)
    for split in splits:
        pd.testing.assert_frame_equal(explicit.manifest(split), data.manifest(split))


def test_revisitop_name_and_direct_folder(tmp_path: Path) -> None:
    make_revisitop(tmp_path, "rparis6k")
    assert read_dataset(tmp_path, "revisitop", name="rparis6k").ok_ids("test") == ("im_1",)
    direct = read_dataset(tmp_path / "rparis6k")  # pointing at <dir>/<name> itself also works
    assert direct.root == tmp_path / "rparis6k"
    assert direct.retrieval[0].easy == ("im_2",)
    make_revisitop(tmp_path, "roxford5k")
    with pytest.raises(DatasetFormatError, match="several revisitop datasets"):
        read_dataset(tmp_path)
    assert read_dataset(tmp_path, "revisitop", name="roxford5k").ok_ids("index") == ("im_1", "im_2")


def test_nothing_matches(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("hello")
    with pytest.raises(DatasetFormatError, match="cannot detect the dataset format"):
        read_dataset(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        read_dataset(tmp_path / "missing")
    with pytest.raises(ValueError, match="unknown dataset format 'coco'"):
        read_dataset(tmp_path, "coco")  # type: ignore[arg-type]
    with pytest.raises(DatasetFormatError, match="pass the revisitop dataset name"):
        read_dataset(tmp_path, "revisitop")


def test_write_dataset_converts_folder_to_imc_and_back(tmp_path: Path) -> None:
    source = read_dataset(make_folder(tmp_path / "folder"))
    write_dataset(source, tmp_path / "imc", "imc")
    assert detect_format(tmp_path / "imc") == "imc"  # no calibration.csv, but <scene>/images/<image>
    as_imc = read_dataset(tmp_path / "imc")
    assert as_imc.label_names == {0: "eiffel"}
    assert list(as_imc.manifest("train")["uri"]) == ["eiffel/images/e_1.png"]
    write_dataset(as_imc, tmp_path / "folder2", "folder")
    assert detect_format(tmp_path / "folder2") == "folder"
    with pytest.raises(ValueError, match="needs the dataset name"):
        write_dataset(source, tmp_path / "r", "revisitop")
