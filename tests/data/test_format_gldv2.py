"""GLDv2 CSV layout: round trips, malformed rows quarantined with reason codes, solution parsing."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from landmark.data.gldv2 import image_relpath, image_uri, read_gldv2, write_gldv2, write_gldv2_csvs
from landmark.data.groundtruth import DatasetFormatError, LandmarkDataset, QueryTruth
from landmark.data.manifest import make_manifest, reason_code

COMPARED = ["image_id", "landmark_id", "uri", "url", "status", "reason"]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def manifest(split: str, rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    return make_manifest(
        {"image_id": i, "url": u, "landmark_id": lm, "uri": image_relpath(split, i).as_posix()}
        for i, u, lm in rows
    )


def sample_dataset(root: Path) -> LandmarkDataset:
    return LandmarkDataset(
        root=root,
        manifests={
            "train": manifest(
                "train", [("0123abcd", "http://a/1.jpg", 5), ("ffee0011", 'http://a/x,"y".jpg', 0)]
            ),
            "index": manifest("index", [("00aa11bb", "", -1), ("99cc88dd", "http://b/2.jpg", -1)]),
            "test": manifest("test", [("0000test", "http://c/3.jpg", -1), ("1111test", "", -1)]),
        },
        retrieval_solution={"0000test": ("00aa11bb", "99cc88dd"), "1111test": ()},
        recognition_solution={"0000test": (5, 0), "1111test": ()},
        usage={"0000test": "Private", "1111test": "Ignored"},
        recognition_usage={"0000test": "Private", "1111test": "Public"},
    )


def test_round_trip_keeps_manifests_and_solutions(tmp_path: Path) -> None:
    source = sample_dataset(tmp_path / "src")
    written = write_gldv2(source, tmp_path / "out")
    assert sorted(p.name for p in written) == [
        "index.csv",
        "recognition_solution.csv",
        "retrieval_solution.csv",
        "test.csv",
        "train.csv",
    ]
    back = read_gldv2(tmp_path / "out")
    assert back.splits == ("train", "index", "test")
    for split in back.splits:
        pd.testing.assert_frame_equal(back.manifest(split)[COMPARED], source.manifest(split)[COMPARED])
    assert back.retrieval_solution == source.retrieval_solution
    assert back.recognition_solution == source.recognition_solution
    assert back.usage == source.usage
    assert back.recognition_usage == source.recognition_usage
    assert back.issues == ()
    assert back.retrieval == ()
    assert back.manifest("train").loc[0, "image_id"] == "0123abcd"  # leading zero kept, still a string


def test_writer_output_is_plain_gldv2_csv(tmp_path: Path) -> None:
    write_gldv2(sample_dataset(tmp_path), tmp_path)
    assert (tmp_path / "train.csv").read_text().splitlines() == [
        "id,url,landmark_id",
        "0123abcd,http://a/1.jpg,5",
        'ffee0011,"http://a/x,""y"".jpg",0',
    ]
    assert (tmp_path / "retrieval_solution.csv").read_text().splitlines() == [
        "id,images,Usage",
        "0000test,00aa11bb 99cc88dd,Private",
        "1111test,,Ignored",
    ]


def test_malformed_rows_are_quarantined_with_reason_codes(tmp_path: Path) -> None:
    write(
        tmp_path / "train.csv",
        "id,url,landmark_id\n"
        "aaa111,http://ok/1.jpg,3\n"  # line 2: ok
        "bbb222,http://x/2.jpg\n"  # line 3: missing field
        "ccc333,http://x/3.jpg,4,extra\n"  # line 4: extra field
        "ddd444,http://x/4.jpg,abc\n"  # line 5: non-integer landmark
        "eee555,http://x/5.jpg,\n"  # line 6: empty landmark
        "../etc/passwd,http://evil/,1\n"  # line 7
        "a/b,http://evil/,1\n"  # line 8
        ",http://evil/,1\n"  # line 9
        "..,http://evil/,1\n"  # line 10
        "ab,http://short/,1\n"  # line 11: too short for the a/b/c layout
        "aaa111,http://dup/,9\n"  # line 12: duplicate
        "\n"  # blank line: ignored
        "fff666,http://ok/6.jpg,-1\n",  # line 14: negative landmark
    )
    frame = read_gldv2(tmp_path).manifest("train")
    got = list(zip(frame["image_id"], frame["status"], frame["reason"].map(reason_code), strict=True))
    assert got == [
        ("aaa111", "ok", ""),
        ("bbb222", "quarantined", "malformed_row"),
        ("ccc333", "quarantined", "malformed_row"),
        ("ddd444", "quarantined", "malformed_row"),
        ("eee555", "quarantined", "malformed_row"),
        ("../etc/passwd", "quarantined", "unsafe_id"),
        ("a/b", "quarantined", "unsafe_id"),
        ("", "quarantined", "unsafe_id"),
        ("..", "quarantined", "unsafe_id"),
        ("ab", "quarantined", "unsafe_id"),
        ("aaa111", "quarantined", "duplicate_id"),
        ("fff666", "quarantined", "malformed_row"),
    ]
    reasons = list(frame["reason"])
    assert reasons[1] == "malformed_row: line 3: expected 3 fields, got 2"
    assert reasons[3] == "malformed_row: line 5: landmark_id 'abc' is not a non-negative integer"
    assert reasons[5] == "unsafe_id: '../etc/passwd' (line 7)"
    assert reasons[10] == "duplicate_id: 'aaa111' on line 12 (first on line 2)"
    assert list(frame.loc[frame["status"] == "quarantined", "uri"].unique()) == [""]
    assert frame.loc[0, "uri"] == "train/a/a/a/aaa111.jpg"
    assert frame.loc[0, "landmark_id"] == 3


def test_missing_columns_raise_a_clear_error(tmp_path: Path) -> None:
    write(tmp_path / "train.csv", "id,landmark\nabc123,4\n")
    with pytest.raises(
        DatasetFormatError, match=r"train\.csv.*missing required columns \['url', 'landmark_id'\]"
    ):
        read_gldv2(tmp_path)
    write(tmp_path / "train.csv", "")
    with pytest.raises(DatasetFormatError, match="empty file"):
        read_gldv2(tmp_path)


def test_no_split_csv_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"train\.csv"):
        read_gldv2(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        read_gldv2(tmp_path / "nope")


def test_solution_files_are_parsed_and_bad_lines_reported(tmp_path: Path) -> None:
    write(tmp_path / "test.csv", "id,url\nq00001,\nq00002,\nq00003,\n")
    write(
        tmp_path / "retrieval_solution_v2.1.csv",
        "id,images,Usage\n"
        "q00001,i00001 i00002,Public\n"
        "q00002,None,Ignored\n"  # GLDv2 writes None for ignored queries
        "q00003,i00003 ../x,Private\n"  # unsafe index id: line skipped
        "q00004,i00004,Secret\n",  # bad Usage: line skipped
    )
    write(
        tmp_path / "retrieval_solution_v2.csv", "id,images,Usage\nq00001,old,Public\n"
    )  # older version: ignored
    write(
        tmp_path / "recognition_solution_v2.1.csv",
        "id,landmarks,Usage\nq00001,12 7,Public\nq00002,,Private\nq00003,x1,Public\nq00001,3,Public\n",
    )
    data = read_gldv2(tmp_path)
    assert data.retrieval_solution == {"q00001": ("i00001", "i00002"), "q00002": ()}
    assert data.recognition_solution == {"q00001": (12, 7), "q00002": ()}
    assert data.usage == {"q00001": "Public", "q00002": "Ignored"}
    assert data.recognition_usage == {"q00001": "Public", "q00002": "Private"}
    assert data.issues == (
        "recognition_solution_v2.1.csv:4: malformed landmarks 'x1'",
        "recognition_solution_v2.1.csv:5: duplicate_id 'q00001'",
        "retrieval_solution_v2.1.csv:4: malformed images 'i00003 ../x'",
        "retrieval_solution_v2.1.csv:5: Usage 'Secret' is not one of ('Public', 'Private', 'Ignored')",
    )


def test_check_files_quarantines_missing_images(tmp_path: Path) -> None:
    write(tmp_path / "index.csv", "id,url\nabc001,\nabc002,\n")
    present = tmp_path / image_relpath("index", "abc001")
    present.parent.mkdir(parents=True)
    present.write_bytes(b"jpeg")
    frame = read_gldv2(tmp_path, check_files=True).manifest("index")
    assert list(frame["status"]) == ["ok", "quarantined"]
    assert frame.loc[1, "reason"] == "missing_file: index/a/b/c/abc002.jpg"
    assert list(read_gldv2(tmp_path).manifest("index")["status"]) == ["ok", "ok"]
    assert read_gldv2(tmp_path).image_path("index", "abc001") == present


def test_gnd_pickle_in_root_fills_retrieval(tmp_path: Path) -> None:
    source = sample_dataset(tmp_path)
    truth = (QueryTruth("0000test", ("00aa11bb",), ("99cc88dd",), (), (1.0, 2.0, 30.0, 40.0)),)
    source = LandmarkDataset(root=tmp_path, manifests=source.manifests, retrieval=truth)
    written = write_gldv2(source, tmp_path)
    assert (tmp_path / "gnd_gldv2.pkl") in written
    assert read_gldv2(tmp_path).retrieval == truth


def test_writer_rejects_unlabelled_train_rows_and_bad_usage(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="landmark_id >= 0"):
        write_gldv2_csvs(tmp_path, {"train": manifest("train", [("abc123", "", -1)])})
    with pytest.raises(ValueError, match="unknown GLDv2 split"):
        write_gldv2_csvs(tmp_path, {"val": manifest("train", [("abc123", "", 1)])})
    with pytest.raises(ValueError, match=r"[Uu]sage"):
        write_gldv2_csvs(tmp_path, {}, retrieval_solution={"q00001": ()}, usage={"q00001": "Secret"})


def test_image_relpath_layout() -> None:
    assert image_relpath("train", "0123abcd").as_posix() == "train/0/1/2/0123abcd.jpg"
    assert image_uri("index", "0123abcd") == "index/0/1/2/0123abcd.jpg"
    with pytest.raises(ValueError, match="shorter than the 3 characters"):
        image_uri("test", "ab")
    with pytest.raises(ValueError, match="unsafe"):
        image_relpath("train", "../etc")
