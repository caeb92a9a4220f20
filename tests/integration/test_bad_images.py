"""One bad image never stops a per-image stage (issue 16.1): real files, real worker processes, the real CLI.

A folder dataset holds a truncated JPEG, an empty file, a text file named .jpg and a PNG decompression bomb among
good images. ``extract`` (2 DataLoader workers), ``local`` (2 pool processes) and ``train`` (2 decoding processes,
2 steps) and ``train-delf`` exit 0, record the 4 files with their reason codes, and their outputs for the good images equal those
of a run on the folder without the bad files. Past the bound a stage exits 1 with one line naming the bound, the
share and the files. The readers of those outputs (index, evaluate, clean) leave the skipped images out.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner, Result

from landmark.cli import app
from landmark.data.bad_images import QUARANTINE_FILE, read_quarantine
from landmark.data.groundtruth import QueryTruth
from landmark.data.images import ImageDecodeError
from landmark.data.revisitop import gnd_path, write_gnd
from landmark.features.local_extract import extract_image
from landmark.features.local_store import LocalFeatureReader
from landmark.features.store import load_features
from landmark.platform.parallel import parallel_map

runner = CliRunner()

BAD = {"cut": "truncated", "empty": "empty", "note": "not_an_image", "bomb": "too_large"}
LENIENT = ["--set", "extract.max_bad_share=0.5", "--set", "local.max_bad_share=0.5"]
EXTRACT = [
    "--set", "extract.workers=2", "--set", "extract.image_size=64", "--set", "extract.scales=[1.0]",
    "--set", "extract.batch_size=4",
]  # fmt: skip
LOCAL = ["--set", "local.workers=2", "--set", "local.image_size=80", "--set", "local.max_features=200"]
TRAIN = [
    "--set", "train.workers=2", "--set", "train.image_size=64", "--set", "train.batch_size=4",
    "--set", "train.epochs=1", "--set", "train.max_steps=2", "--set", "train.full_res_last_epoch=false",
    "--set", "train.warmup_steps=0", "--set", "train.neck_init_images=8", "--set", "model.embedding_dim=32",
    "--set", "train.checkpoint_every=0",
]  # fmt: skip
DELF = [
    "--set", "delf.workers=2", "--set", "delf.image_size=64", "--set", "delf.batch_size=4",
    "--set", "delf.descriptor_epochs=1", "--set", "delf.attention_epochs=1", "--set", "delf.max_steps=1",
    "--set", "delf.warmup_steps=0", "--set", "delf.augmentation=none", "--set", "delf.scales=[1.0]",
    "--set", "delf.max_features=50", "--set", "delf.pca_dim=8", "--set", "delf.pca_images=2",
]  # fmt: skip


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height RGB pixels but carries almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


def photo(label: int, k: int) -> np.ndarray:
    """64x80 RGB: the class's 8-pixel colour blocks shifted by k pixels, with a little noise (SIFT matches
    within a class)."""
    cells = np.random.default_rng(label).integers(0, 256, (8, 10, 3), dtype=np.uint8)
    base = np.roll(np.kron(cells, np.ones((8, 8, 1), dtype=np.uint8)), (k, 2 * k), axis=(0, 1))
    noise = np.random.default_rng([label, k]).normal(0, 4, base.shape)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def write_folder(root: Path, with_bad: bool) -> Path:
    """3 landmarks x 4 good photos; with ``with_bad`` the 4 bad files of :data:`BAD` among them."""
    for label in range(3):
        (root / f"place_{label}").mkdir(parents=True)
        for k in range(4):
            (root / f"place_{label}" / f"p{label}_{k}.jpg").write_bytes(jpeg(photo(label, k)))
    if with_bad:
        good = jpeg(photo(0, 9))
        (root / "place_0" / "cut.jpg").write_bytes(good[: len(good) // 2])
        (root / "place_1" / "empty.jpg").write_bytes(b"")
        (root / "place_1" / "note.jpg").write_text("these are my holiday notes, not a photo\n")
        (root / "place_2" / "bomb.png").write_bytes(png_claiming(30_000, 30_000))
    return root


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bad_images")
    write_folder(root / "bad", with_bad=True)
    write_folder(root / "good", with_bad=False)
    return root


def cli(*args: str) -> Result:
    return runner.invoke(app, list(args))


def assert_recorded(directory: Path) -> None:
    """``directory/quarantined.json`` lists exactly the 4 bad files with their reason codes."""
    recorded = read_quarantine(directory)
    assert {b.image_id: b.reason for b in recorded} == BAD
    assert all(Path(b.file).stem == b.image_id and b.split == "train" for b in recorded)


def assert_bound_error(result: Result, key: str) -> None:
    """Exit 1 with one error line naming the bound, the share and the first files."""
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    assert f"{key}=0.01" in errors[0] and "4 of 16 images" in errors[0] and "share 0.25" in errors[0]
    assert sum(f"{name}." in errors[0] for name in BAD) == 3 and "and 1 more" in errors[0]
    assert "Traceback" not in result.output


@pytest.fixture(scope="module")
def extracted(work: Path) -> Path:
    for name in ("bad", "good"):
        result = cli(
            *EXTRACT, *LENIENT, "extract", "--data", str(work / name), "--out", str(work / f"feat_{name}")
        )
        assert result.exit_code == 0, result.output
        if name == "bad":
            assert "train: skipped 4 undecodable images" in result.output
    return work


@pytest.fixture(scope="module")
def local_features(work: Path) -> Path:
    for name in ("bad", "good"):
        result = cli(
            *LOCAL, *LENIENT, "local", "--data", str(work / name), "--out", str(work / f"local_{name}")
        )
        assert result.exit_code == 0, result.output
        if name == "bad":
            assert (
                "skipped 4 undecodable train images" in result.output
                and "extracted 12 of 16" in result.output
            )
    return work


def test_extract_skips_and_records_bad_images(extracted: Path) -> None:
    assert_recorded(extracted / "feat_bad" / "train")
    assert not (extracted / "feat_good" / "train" / QUARANTINE_FILE).exists()
    bad_ids, bad_vectors = load_features(extracted / "feat_bad" / "train")
    good_ids, good_vectors = load_features(extracted / "feat_good" / "train")
    assert sorted(bad_ids) == sorted(good_ids) and len(good_ids) == 12
    order = [bad_ids.index(i) for i in good_ids]
    np.testing.assert_allclose(bad_vectors[order], good_vectors, atol=1e-6)


def test_extract_rerun_keeps_the_record_and_adds_nothing(extracted: Path) -> None:
    out = extracted / "feat_bad"
    result = cli(*EXTRACT, *LENIENT, "extract", "--data", str(extracted / "bad"), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "extracted 0 new descriptors" in result.output
    assert_recorded(out / "train")


def test_local_skips_and_records_bad_images(local_features: Path) -> None:
    assert_recorded(local_features / "local_bad" / "train")
    bad = LocalFeatureReader(local_features / "local_bad" / "train")
    good = LocalFeatureReader(local_features / "local_good" / "train")
    assert sorted(bad.ids()) == sorted(good.ids()) and len(good.ids()) == 12
    for image_id in good.ids():
        a, b = bad.load(image_id), good.load(image_id)
        assert len(a) > 0
        for field in ("locations", "scales", "scores", "descriptors"):
            np.testing.assert_allclose(getattr(a, field), getattr(b, field), atol=1e-6)


def test_train_skips_and_records_bad_images(work: Path) -> None:
    for name in ("bad", "good"):
        args = ["train", "--data", str(work / name), "--out", str(work / f"model_{name}")]
        result = cli(*TRAIN, "--set", "train.max_bad_share=0.5", *args)
        assert result.exit_code == 0, result.output
        assert ("left out 4 undecodable images" in result.output) == (name == "bad")
    assert_recorded(work / "model_bad")
    assert not (work / "model_good" / QUARANTINE_FILE).exists()
    metrics = json.loads((work / "model_bad" / "metrics.json").read_text())["train"]
    assert metrics["images"] == 12 and sum(metrics["bad_images"].values()) == 4
    trained = torch.load(work / "model_bad" / "weights.pt")
    reference = torch.load(work / "model_good" / "weights.pt")
    assert trained.keys() == reference.keys()
    for key, value in reference.items():
        torch.testing.assert_close(trained[key], value, atol=1e-6, rtol=0)


def test_train_delf_skips_and_records_bad_images(work: Path) -> None:
    out = work / "delf_bad"
    result = cli(
        *DELF,
        "--set",
        "train.max_bad_share=0.5",
        "train-delf",
        "--data",
        str(work / "bad"),
        "--out",
        str(out),
    )
    assert result.exit_code == 0, result.output
    assert "left out 4 undecodable images" in result.output and "trained DELF on 12 images" in result.output
    assert_recorded(out)  # in the model directory, and in the work directory beside it
    assert_recorded(work / "delf_bad.work")
    metrics = json.loads((out / "metrics.json").read_text())["train"]
    assert metrics["images"] == 12 and metrics["bad_images"] == {
        "empty": 1,
        "not_an_image": 1,
        "too_large": 1,
        "truncated": 1,
    }


@pytest.mark.parametrize(
    ("stage", "args", "key"),
    [
        ("extract", EXTRACT, "extract.max_bad_share"),
        ("local", LOCAL, "local.max_bad_share"),
        ("train", TRAIN, "train.max_bad_share"),
        ("train-delf", DELF, "train.max_bad_share"),
    ],
)
def test_past_the_bound_a_stage_fails_in_one_line(work: Path, stage: str, args: list[str], key: str) -> None:
    result = cli(*args, stage, "--data", str(work / "bad"), "--out", str(work / f"strict_{stage}"))
    assert_bound_error(result, key)
    if stage.startswith("train"):  # the trainings record what they found before refusing to train
        assert_recorded(work / f"strict_{stage}.work")
        assert not (work / f"strict_{stage}").exists()


def test_index_and_clean_leave_skipped_images_out(extracted: Path, local_features: Path) -> None:
    root = extracted
    index = cli("index", "--data", str(root / "bad"), "--features", str(root / "feat_bad"),
                "--split", "train", "--out", str(root / "index_bad"))  # fmt: skip
    assert index.exit_code == 0, index.output
    meta = json.loads((root / "index_bad" / "meta.json").read_text())
    assert meta["ntotal"] == 12 and meta["undecodable_left_out"] == 4
    clean = cli("--set", "clean.workers=0", "--set", "clean.min_inliers=4", "clean",
                "--data", str(root / "bad"), "--features", str(root / "feat_bad"),
                "--local", str(root / "local_bad"), "--out", str(root / "clean_bad"))  # fmt: skip
    assert clean.exit_code == 0, clean.output
    assert "left out 4 images extract/local could not decode" in clean.output
    cleaned = pd.read_parquet(root / "clean_bad" / "train.parquet").set_index("image_id")
    for image_id, reason in BAD.items():
        assert cleaned.at[image_id, "status"] == "quarantined"
        assert str(cleaned.at[image_id, "reason"]).startswith(reason)
    summary = json.loads((root / "clean_bad" / "clean.json").read_text())
    assert summary["images"] == 12 and summary["undecodable_left_out"] == {
        reason: 1 for reason in sorted(BAD.values())
    }


def test_evaluate_leaves_skipped_images_out(tmp_path: Path) -> None:
    """A Revisited-format set with a truncated database image and an empty query."""
    root = tmp_path / "rev"
    (root / "jpg").mkdir(parents=True)
    db = [f"d{label}_{k}" for label in range(2) for k in range(3)]
    for image_id in db:
        (root / "jpg" / f"{image_id}.jpg").write_bytes(jpeg(photo(int(image_id[1]), int(image_id[3]))))
    cut = jpeg(photo(0, 7))
    (root / "jpg" / "dcut.jpg").write_bytes(cut[: len(cut) // 2])
    (root / "jpg" / "q0.jpg").write_bytes(jpeg(photo(0, 5)))
    (root / "jpg" / "q1.jpg").write_bytes(jpeg(photo(1, 5)))
    (root / "jpg" / "qempty.jpg").write_bytes(b"")
    queries = [
        QueryTruth("q0", easy=("d0_0", "d0_1", "d0_2", "dcut"), hard=(), junk=()),
        QueryTruth("q1", easy=("d1_0", "d1_1", "d1_2"), hard=(), junk=()),
        QueryTruth("qempty", easy=("d0_0",), hard=(), junk=()),
    ]
    write_gnd(gnd_path(tmp_path, "rev"), [*db, "dcut"], queries)
    feat, out = tmp_path / "feat", tmp_path / "eval"
    steps = (
        ["--set", "extract.max_bad_share=0.5", "extract", "--data", str(root), "--out", str(feat)],
        ["--set", "evaluate.grid_queries=0", "evaluate", "--data", str(root), "--features", str(feat),
         "--out", str(out)],
    )  # fmt: skip
    for args in steps:
        result = cli(*EXTRACT, *args)
        assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_database"] == 6 and metrics["n_test"] == 2 and metrics["n_queries"] == 2
    assert metrics["undecodable_left_out"] == {"index": 1, "test": 1}
    assert any("could not decode" in note for note in metrics["rerank"]["notes"])
    assert (
        metrics["revisitop"]["easy"]["queries"] == 2 and 0.0 <= metrics["revisitop"]["easy"]["mAP"] <= 100.0
    )


def test_decode_errors_cross_worker_processes_with_the_file_name(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.jpg", tmp_path / "bad.jpg"
    good.write_bytes(jpeg(photo(0, 0)))
    bad.write_text("not an image")
    sift = (("max_features", 50), ("max_side", 0))
    tasks = [("good", str(good), "sift", sift, 0, None), ("bad", str(bad), "sift", sift, 0, None)]
    with pytest.raises(ImageDecodeError) as info:
        list(parallel_map(extract_image, tasks, workers=2, progress=False))
    assert info.value.reason == "not_an_image" and info.value.name == str(bad)
    assert str(bad) in str(info.value)
