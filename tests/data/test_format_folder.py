"""Folder-per-landmark layout: ids by sorted names, skipped and quarantined files, round trip."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from landmark.data.folder import read_folder, write_folder
from landmark.data.groundtruth import LandmarkDataset
from landmark.data.images import decode_image
from landmark.data.manifest import make_manifest


def image_bytes(colour: tuple[int, int, int], fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((6, 9, 3), colour, np.uint8)).save(buf, fmt)
    return buf.getvalue()


def make_tree(root: Path) -> None:
    files = {
        "radcliffe_camera/rc_001.jpg": image_bytes((200, 0, 0), "JPEG"),
        "radcliffe_camera/rc_002.PNG": image_bytes((0, 200, 0)),
        "radcliffe_camera/notes.txt": b"not an image",
        "radcliffe_camera/.hidden.jpg": image_bytes((1, 1, 1)),
        "all_souls/as_001.jpeg": image_bytes((0, 0, 200), "JPEG"),
        "all_souls/bad name.jpg": image_bytes((5, 5, 5)),
        "all_souls/rc_001.png": image_bytes((9, 9, 9)),
        "Zebra Crossing/zc_001.png": image_bytes((50, 50, 50)),
        ".git/objects.png": image_bytes((0, 0, 0)),
        "README.png": image_bytes((0, 0, 0)),  # files directly in root belong to no landmark
    }
    for relative, data in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "empty_landmark").mkdir()


def test_read_folder_numbers_sorted_names_and_quarantines(tmp_path: Path) -> None:
    make_tree(tmp_path)
    data = read_folder(tmp_path)
    assert data.label_names == {
        0: "Zebra Crossing",
        1: "all_souls",
        2: "empty_landmark",
        3: "radcliffe_camera",
    }
    frame = data.manifest("train")
    expected = pd.DataFrame(
        {
            "image_id": ["zc_001", "as_001", "bad name", "rc_001", "rc_001", "rc_002"],
            "landmark_id": [0, 1, 1, 1, 3, 3],
            # "all_souls/rc_001.png" comes before "radcliffe_camera/rc_001.jpg", so it is the one kept.
            "uri": [
                "Zebra Crossing/zc_001.png",
                "all_souls/as_001.jpeg",
                "",
                "all_souls/rc_001.png",
                "",
                "radcliffe_camera/rc_002.PNG",
            ],
            "status": ["ok", "ok", "quarantined", "ok", "quarantined", "ok"],
        }
    )
    got = frame[["image_id", "landmark_id", "uri", "status"]]
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    assert frame.loc[2, "reason"] == "unsafe_id: 'bad name' (file 'all_souls/bad name.jpg')"
    assert str(frame.loc[4, "reason"]).startswith("duplicate_id: 'rc_001' in 'radcliffe_camera/rc_001.jpg'")
    assert decode_image(data.image_path("train", "rc_002"))[0, 0].tolist() == [0, 200, 0]


def test_folder_round_trip(tmp_path: Path) -> None:
    make_tree(tmp_path / "src")
    source = read_folder(tmp_path / "src")
    written = write_folder(source, tmp_path / "out")
    assert len(written) == 4
    back = read_folder(tmp_path / "out")
    assert back.label_names == source.label_names
    columns = ["image_id", "landmark_id", "status"]
    ok_source = source.manifest("train").query("status == 'ok'").reset_index(drop=True)
    pd.testing.assert_frame_equal(back.manifest("train")[columns], ok_source[columns])
    # Extensions are normalised to lower case; bytes are copied unchanged.
    assert list(back.manifest("train")["uri"]) == [
        "Zebra Crossing/zc_001.png",
        "all_souls/as_001.jpeg",
        "all_souls/rc_001.png",
        "radcliffe_camera/rc_002.png",
    ]
    for image_id in back.ok_ids("train"):
        assert (
            back.image_path("train", image_id).read_bytes()
            == source.image_path("train", image_id).read_bytes()
        )


def test_write_folder_rejects_unlabelled_rows_and_bad_names(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(image_bytes((1, 2, 3)))
    unlabelled = make_manifest([{"image_id": "a01", "uri": "a.png"}])
    with pytest.raises(ValueError, match="landmark for every image"):
        write_folder(LandmarkDataset(tmp_path, {"train": unlabelled}), tmp_path / "out")
    labelled = make_manifest([{"image_id": "a01", "uri": "a.png", "landmark_id": 0}])
    with pytest.raises(ValueError, match="cannot be a folder name"):
        write_folder(
            LandmarkDataset(tmp_path, {"train": labelled}, label_names={0: "../up"}), tmp_path / "out"
        )
    written = write_folder(LandmarkDataset(tmp_path, {"train": labelled}), tmp_path / "out")
    assert written == [tmp_path / "out" / "landmark_0" / "a01.png"]


def test_read_folder_missing_root(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a directory"):
        read_folder(tmp_path / "missing")
