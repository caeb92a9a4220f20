"""``landmark eval-revisitop`` end to end on a tiny generated Revisited-format dataset.

Each landmark query is a larger photo with an index image pasted at its bbx (JPEG 4:4:4, blocks aligned), so the
cropped query has exactly that index image's pixels: it must be ranked first. The reported mAP is checked against
an independent re-implementation of the protocol computed from ranks.npy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from landmark.cli import app
from landmark.config import load_config
from landmark.data.groundtruth import QueryTruth
from landmark.data.imc import read_imc_cameras, write_imc_cameras
from landmark.data.imc_benchmark import build_imc_sets
from landmark.data.revisitop import gnd_path, write_gnd
from landmark.features.global_extract import extract_dataset
from landmark.features.store import load_features
from landmark.retrieval.revisitop_eval import read_benchmark, whole_image_queries

FAST = [
    "--set", "extract.image_size=64",
    "--set", "extract.scales=[1.0]",
    "--set", "extract.workers=0",
    "--set", "extract.batch_size=4",
]  # fmt: skip
DB = ["a0", "a1", "b0", "b1", "d0", "d1"]
runner = CliRunner()


def texture(seed: int, size: int = 64) -> np.ndarray:
    """A blocky random-colour texture (8x8 cells), size x size x 3 uint8."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
    return np.kron(cells, np.ones((8, 8, 1), dtype=np.uint8))


def save(path: Path, pixels: np.ndarray) -> None:
    Image.fromarray(pixels).save(path, quality=95, subsampling=0)


@pytest.fixture(scope="module")
def tiny_revisitop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("revisitop")
    jpg = root / "tiny" / "jpg"
    jpg.mkdir(parents=True)
    a0, b0 = texture(1), texture(2)
    images = {
        "a0": a0,
        "a1": np.roll(a0, 8, axis=1),  # the same facade, shifted: a hard positive
        "b0": b0,
        "b1": np.flipud(b0),
        "d0": texture(3),
        "d1": texture(4),
    }
    for name, pixels in images.items():
        save(jpg / f"{name}.jpg", pixels)
    for name, inner, seed in (("qa", a0, 10), ("qb", b0, 11)):
        canvas = texture(seed, 128)
        canvas[32:96, 32:96] = inner
        save(jpg / f"{name}.jpg", canvas)
    box = (32.0, 32.0, 96.0, 96.0)
    truths = [
        QueryTruth("qa", easy=["a0"], hard=["a1"], junk=[], bbox=box),
        QueryTruth("qb", easy=["b0"], hard=[], junk=["b1"], bbox=box),
    ]
    write_gnd(gnd_path(root, "tiny"), DB, truths)
    return root


def independent_map(ranks: np.ndarray, gnd: list[dict[str, list[int]]], protocol: str) -> float:
    """Revisited-protocol mAP (percent): junk removed, trapezoidal AP, queries without positives skipped."""
    aps = []
    for q, g in enumerate(gnd):
        easy, hard, junk = set(g["easy"]), set(g["hard"]), set(g["junk"])
        positives = {"easy": easy, "medium": easy | hard, "hard": hard}[protocol]
        ignore = {"easy": junk | hard, "medium": junk, "hard": junk | easy}[protocol]
        if not positives:
            continue
        ranking = [int(i) for i in ranks[:, q] if int(i) not in ignore]
        ap, found = 0.0, 0
        for r, image in enumerate(ranking):
            if image in positives:
                before = 1.0 if r == 0 else found / r
                found += 1
                ap += (before + found / (r + 1)) / 2 / len(positives)
        aps.append(ap)
    return 100.0 * float(np.mean(aps))


def run(root: Path, out: Path, *extra: str) -> dict:
    args = [*FAST, "eval-revisitop", "--root", str(root), "--dataset", "tiny", "--out", str(out), *extra]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads((out / "metrics.json").read_text())


def test_ranks_convention_and_metrics(tiny_revisitop: Path, tmp_path: Path) -> None:
    metrics = run(tiny_revisitop, tmp_path / "out", "--rerank", "none")
    ranks = np.load(tmp_path / "out" / "ranks.npy")
    assert ranks.shape == (len(DB), 2) and np.issubdtype(ranks.dtype, np.integer)
    assert all(sorted(ranks[:, q].tolist()) == list(range(len(DB))) for q in range(2))
    # the cropped query is pixel-identical to its easy positive: ranked first, 0-based index into imlist
    assert ranks[0, 0] == DB.index("a0") and ranks[0, 1] == DB.index("b0")
    gnd = [{"easy": [0], "hard": [1], "junk": []}, {"easy": [2], "hard": [], "junk": [3]}]
    rev = metrics["revisitop"]
    assert rev["easy"]["mAP"] == pytest.approx(100.0)  # both easy positives first
    assert rev["easy"]["mP@1"] == pytest.approx(100.0)
    for protocol in ("easy", "medium", "hard"):
        assert rev[protocol]["mAP"] == pytest.approx(independent_map(ranks, gnd, protocol), abs=1e-3)
    assert rev["hard"]["queries"] == 1  # qb has no hard positive
    assert metrics["n_database"] == 6 and metrics["n_queries"] == 2 and metrics["rerank"]["steps"] == []


def test_rerank_option_and_cached_features(tiny_revisitop: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(tiny_revisitop, out, "--rerank", "none")
    features = sorted((out / "features").rglob("*.npy"))
    mtimes = [p.stat().st_mtime_ns for p in features]
    metrics = run(tiny_revisitop, out, "--rerank", "dba", "--rerank", "qe")
    assert [p.stat().st_mtime_ns for p in features] == mtimes  # descriptors reused, not re-extracted
    assert metrics["rerank"]["steps"] == ["dba", "alpha_qe"]
    ranks = np.load(out / "ranks.npy")
    gnd = [{"easy": [0], "hard": [1], "junk": []}, {"easy": [2], "hard": [], "junk": [3]}]
    assert metrics["revisitop"]["medium"]["mAP"] == pytest.approx(
        independent_map(ranks, gnd, "medium"), abs=1e-3
    )


def test_bad_arguments_are_one_line_errors(tiny_revisitop: Path, tmp_path: Path) -> None:
    args = ["eval-revisitop", "--root", str(tiny_revisitop), "--out", str(tmp_path)]
    missing = runner.invoke(app, [*args, "--dataset", "nope"])
    assert missing.exit_code == 1 and "no revisitop ground truth" in missing.output
    assert "Traceback" not in missing.output
    bad_step = runner.invoke(app, [*FAST, *args, "--dataset", "tiny", "--rerank", "magic"])
    assert bad_step.exit_code == 1 and "unknown re-ranking step" in bad_step.output
    bad_model = runner.invoke(app, [*FAST, *args, "--dataset", "tiny", "--model", str(tmp_path / "none.pth")])
    assert bad_model.exit_code == 1 and "checkpoint" in bad_model.output


# --- spatial verification on a small set built from the shared IMC photos --------------------------------------

CHECK_TOOL = Path(__file__).resolve().parents[2].parent / "shared" / "tools" / "check_revisitop_out.py"
SPATIAL_FAST = [
    *FAST,
    "--set",
    "local.image_size=320",
    "--set",
    "local.workers=0",
    "--set",
    "local.max_features=600",
]


def mini_imc(source: Path, target: Path, scenes: tuple[str, ...], per_scene: int) -> Path:
    """An IMC layout of the ``per_scene`` photos of each scene whose optical axes are closest to its first camera's
    (so the subset has easy and hard pairs), with their calibration and covisibility rows."""
    for scene in scenes:
        cameras = read_imc_cameras(source / scene)
        first = next(iter(cameras.values())).R[2]
        keep = sorted(cameras, key=lambda i: -float(cameras[i].R[2] @ first))[:per_scene]
        (target / scene / "images").mkdir(parents=True)
        for image_id in keep:
            os.link(
                source / scene / "images" / f"{image_id}.jpg", target / scene / "images" / f"{image_id}.jpg"
            )
        write_imc_cameras(target / scene, {i: cameras[i] for i in keep})
        pairs = source / scene / "pair_covisibility.csv"
        if pairs.is_file():
            lines = pairs.read_text().splitlines()
            wanted = {f"{a}-{b}" for a in keep for b in keep}
            rows = [line for line in lines[1:] if line.split(",", 1)[0] in wanted]
            (target / scene / "pair_covisibility.csv").write_text("\n".join([lines[0], *rows]) + "\n")
    return target


@pytest.fixture(scope="module")
def imc_set(imc_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("imc_mini")
    mini = mini_imc(imc_root, base / "imc", ("brandenburg_gate", "sagrada_familia"), per_scene=10)
    build_imc_sets(mini, base / "sets", queries_per_scene=2, seed=0)
    return base / "sets"


def check_with_tool(gnd: Path, out: Path) -> None:
    if not CHECK_TOOL.is_file():
        pytest.skip(f"checker not found at {CHECK_TOOL}")
    checked = subprocess.run(
        [sys.executable, str(CHECK_TOOL), str(gnd), str(out)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_spatial_reranking_on_imc_set(imc_set: Path, tmp_path: Path) -> None:
    name = "imc_sagrada_familia"
    gnd = gnd_path(imc_set, name)
    common = ["eval-revisitop", "--root", str(imc_set), "--dataset", name, "--rerank", "none"]
    plain = runner.invoke(app, [*SPATIAL_FAST, *common, "--out", str(tmp_path / "plain")])
    assert plain.exit_code == 0, plain.output
    cache = [
        "--local-cache",
        str(tmp_path / "local"),
        "--features-cache",
        str(tmp_path / "plain" / "features"),
    ]
    spatial = runner.invoke(
        app, [*SPATIAL_FAST, *common, "--out", str(tmp_path / "spatial"), "--spatial", *cache]
    )
    assert spatial.exit_code == 0, spatial.output
    for out in ("plain", "spatial"):
        check_with_tool(gnd, tmp_path / out)
    before = json.loads((tmp_path / "plain" / "metrics.json").read_text())
    after = json.loads((tmp_path / "spatial" / "metrics.json").read_text())
    assert after["rerank"]["steps"] == ["spatial"]
    assert after["rerank"]["spatial"]["extracted"] == {"database": 18, "queries": 2}
    # 64-px global descriptors rank these real photos poorly; verified inliers must not make it worse
    assert not np.array_equal(
        np.load(tmp_path / "plain" / "ranks.npy"), np.load(tmp_path / "spatial" / "ranks.npy")
    )
    assert after["revisitop"]["medium"]["mAP"] >= before["revisitop"]["medium"]["mAP"]
    # a second run verifies again but extracts nothing: local features are cached by image id
    again = runner.invoke(
        app, [*SPATIAL_FAST, *common, "--out", str(tmp_path / "spatial"), "--spatial", *cache]
    )
    assert again.exit_code == 0, again.output
    rerun = json.loads((tmp_path / "spatial" / "metrics.json").read_text())
    assert rerun["rerank"]["spatial"]["extracted"] == {"database": 0, "queries": 0}
    assert rerun["revisitop"] == after["revisitop"]  # seeded verification: the same ranking


def test_leave_one_out_queries_reuse_database_descriptors(imc_root: Path, tmp_path: Path) -> None:
    """A leave-one-out set's queries are whole database photos: their database descriptors are used as they are
    (equal to extracting the whole-image crops) and checked against the independent tool."""
    mini = mini_imc(imc_root, tmp_path / "imc", ("brandenburg_gate", "sagrada_familia"), per_scene=8)
    build_imc_sets(mini, tmp_path / "sets", queries_per_scene="all", seed=0)
    name = "imc_sagrada_familia"
    common = ["eval-revisitop", "--root", str(tmp_path / "sets"), "--dataset", name, "--rerank", "none"]
    result = runner.invoke(app, [*FAST, *common, "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "out" / "features" / "test").exists()  # no query was extracted
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["n_database"] == 16 and metrics["n_queries"] >= 2
    check_with_tool(gnd_path(tmp_path / "sets", name), tmp_path / "out")
    # the same queries extracted as cropped queries: equal descriptors, so equal rankings
    cfg = load_config(None, [s for s in FAST if s != "--set"])
    benchmark = read_benchmark(tmp_path / "sets", name)
    extract_dataset(
        cfg, benchmark.dataset_dir, tmp_path / "q", splits=("test",), fmt="revisitop", progress=False
    )
    _, cropped = load_features(tmp_path / "q" / "test", benchmark.query_names)
    _, db = load_features(tmp_path / "out" / "features" / "index", benchmark.db_names)
    positions = whole_image_queries(benchmark.dataset_dir, benchmark.db_names, benchmark.truths)
    assert positions is not None
    np.testing.assert_allclose(db[positions], cropped, atol=1e-5)
    # spatial verification: the queries' local features are the database photos' too
    spatial = runner.invoke(app, [*SPATIAL_FAST, *common, "--out", str(tmp_path / "spatial"), "--spatial"])
    assert spatial.exit_code == 0, spatial.output
    report = json.loads((tmp_path / "spatial" / "metrics.json").read_text())["rerank"]["spatial"]
    assert report["extracted"] == {"database": 16, "queries": 0}
    check_with_tool(gnd_path(tmp_path / "sets", name), tmp_path / "spatial")
