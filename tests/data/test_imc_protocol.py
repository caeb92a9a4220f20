"""The pose-based IMC retrieval protocol on hand-built cameras, and one set built from the shared photos."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from landmark.cli import app
from landmark.data.imc_benchmark import build_imc_sets
from landmark.data.imc_protocol import (
    EASY,
    HARD,
    JUNK,
    OverlapThresholds,
    camera_centres,
    choose_queries,
    classify_pair,
    classify_pairs,
    covisibility_matrix,
    eligible_queries,
    lateral_offsets,
    query_truths,
    relative_rotation_angles,
    scene_pair_classes,
    scene_radius,
    viewing_angles,
    viewing_directions,
)
from landmark.data.revisitop import gnd_path, read_gnd
from landmark.retrieval.metrics import gnd_indices, revisitop_metrics

CHECK_TOOL = Path(__file__).resolve().parents[2].parent / "shared" / "tools" / "check_revisitop_out.py"


def yaw(degrees: float) -> np.ndarray:
    """World-to-camera rotation whose optical axis (third row) is (sin a, 0, cos a)."""
    a = np.radians(degrees)
    return np.array([[np.cos(a), 0.0, -np.sin(a)], [0.0, 1.0, 0.0], [np.sin(a), 0.0, np.cos(a)]])


def roll(degrees: float) -> np.ndarray:
    """Rotation about the optical axis (0, 0, 1)."""
    a = np.radians(degrees)
    return np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])


def pose(rotation: np.ndarray, centre: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """(R, t) of a camera with the given rotation and centre (t = -R c)."""
    return rotation, -rotation @ np.asarray(centre, dtype=np.float64)


# A scene of five cameras with scene radius exactly 1 (centre distances from the median (0,0,0): 0, .5, 1, 1, 2).
SCENE = [
    pose(np.eye(3), (0.0, 0.0, 0.0)),  # a: the reference
    pose(np.eye(3), (0.5, 0.0, 0.0)),  # b: half a radius sideways, same direction -> easy with a
    pose(yaw(40), (0.0, 0.0, -1.0)),  # c: 40 degrees yaw, lateral sin(20 deg) -> hard with a
    pose(yaw(90), (-1.0, 0.0, 0.0)),  # d: 90 degrees yaw -> junk with everyone
    pose(np.eye(3), (0.0, 2.0, 0.0)),  # e: two radii sideways -> junk with a
]
IDS = ["a", "b", "c", "d", "e"]


def scene_arrays() -> tuple[np.ndarray, np.ndarray]:
    return np.stack([r for r, _ in SCENE]), np.stack([t for _, t in SCENE])


def test_angles_and_centres_exact() -> None:
    rotations, translations = scene_arrays()
    np.testing.assert_allclose(
        camera_centres(rotations, translations),
        np.array([[0, 0, 0], [0.5, 0, 0], [0, 0, -1], [-1, 0, 0], [0, 2, 0]], float),
        atol=1e-12,
    )
    np.testing.assert_allclose(
        viewing_directions(rotations)[2], [np.sin(np.radians(40)), 0, np.cos(np.radians(40))]
    )
    rot = relative_rotation_angles(rotations)
    view = viewing_angles(rotations)
    assert rot[0, 2] == pytest.approx(40.0) and view[0, 2] == pytest.approx(40.0)
    assert rot[0, 3] == pytest.approx(90.0) and view[2, 3] == pytest.approx(50.0)
    np.testing.assert_allclose(np.diag(rot), 0.0, atol=1e-5)
    np.testing.assert_allclose(rot, rot.T, atol=1e-9)
    # in-plane roll: a full relative rotation, but the optical axes agree
    rolled = np.stack([np.eye(3), roll(90)])
    assert relative_rotation_angles(rolled)[0, 1] == pytest.approx(90.0)
    assert viewing_angles(rolled)[0, 1] == pytest.approx(0.0, abs=1e-6)


def test_radius_and_lateral_offsets() -> None:
    rotations, translations = scene_arrays()
    centres = camera_centres(rotations, translations)
    assert scene_radius(centres) == pytest.approx(1.0)
    lateral = lateral_offsets(centres, viewing_directions(rotations), 1.0)
    assert lateral[0, 1] == pytest.approx(0.5)
    assert lateral[0, 2] == pytest.approx(np.sin(np.radians(20)))  # -1 along z, mean direction 20 deg off z
    assert lateral[0, 4] == pytest.approx(2.0)
    np.testing.assert_allclose(lateral, lateral.T)
    # moving along the viewing direction is no lateral offset
    forward = lateral_offsets(np.array([[0.0, 0, 0], [0, 0, 5]]), np.array([[0.0, 0, 1], [0, 0, 1]]), 1.0)
    assert forward[0, 1] == pytest.approx(0.0)
    assert lateral_offsets(centres, viewing_directions(rotations), 2.0)[0, 4] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("rotation", "view", "lateral", "covisibility", "expected"),
    [
        (0.0, 0.0, 0.0, None, "easy"),  # identical cameras
        (20.0, 20.0, 0.75, None, "easy"),  # every easy limit is inclusive
        (40.0, 40.0, 0.0, None, "hard"),  # 40 degrees yaw
        (90.0, 0.0, 0.0, None, "hard"),  # 90 degrees roll: same view, rotated image
        (21.0, 21.0, 0.0, None, "hard"),
        (45.0, 45.0, 1.5, None, "hard"),  # every hard limit is inclusive
        (90.0, 90.0, 0.0, None, "junk"),  # 90 degrees yaw
        (46.0, 46.0, 0.0, None, "junk"),
        (0.0, 0.0, 1.0, None, "hard"),  # sideways by one scene radius
        (0.0, 0.0, 2.0, None, "junk"),  # sideways by two
        (10.0, 10.0, 5.0, 0.6, "easy"),  # known covisibility replaces the lateral offset
        (10.0, 10.0, 0.0, 0.3, "hard"),
        (10.0, 10.0, 0.0, 0.05, "junk"),
        (60.0, 60.0, 0.0, 0.9, "junk"),  # the viewing angle still applies
        (10.0, 10.0, 0.0, float("nan"), "easy"),  # NaN = unknown
    ],
)
def test_classify_pair(
    rotation: float, view: float, lateral: float, covisibility: float | None, expected: str
) -> None:
    assert classify_pair(rotation, view, lateral, covisibility) == expected


def test_scene_classes_and_queries() -> None:
    rotations, translations = scene_arrays()
    codes = scene_pair_classes(rotations, translations)
    assert codes.tolist()[0] == [-1, EASY, HARD, JUNK, JUNK]
    np.testing.assert_array_equal(codes, codes.T)
    assert codes[3].tolist() == [JUNK, JUNK, JUNK, -1, JUNK]  # d-c: 50 degrees between the axes
    assert eligible_queries(codes).tolist() == [0, 1]
    covis = np.full((5, 5), np.nan)
    covis[0, 4] = covis[4, 0] = 0.7
    assert scene_pair_classes(rotations, translations, covis)[0, 4] == EASY
    truths = query_truths(IDS, codes, [0], {"a": (0.0, 0.0, 64.0, 48.0)})
    assert truths[0].easy == ("b",) and truths[0].hard == ("c",) and truths[0].junk == ("d", "e")
    assert truths[0].bbox == (0.0, 0.0, 64.0, 48.0)
    both = query_truths(IDS, codes, [0, 1], {"a": (0, 0, 1, 1), "b": (0, 0, 1, 1)})
    assert "b" not in both[0].easy and "a" not in both[1].easy + both[1].hard + both[1].junk
    # leave-one-out: the queries stay in the database; a query's own photo is junk, the other query is classed
    kept = query_truths(IDS, codes, [0, 1], {"a": (0, 0, 1, 1), "b": (0, 0, 1, 1)}, leave_one_out=True)
    assert kept[0].easy == ("b",) and kept[0].hard == ("c",) and kept[0].junk == ("a", "d", "e")
    assert "a" in kept[1].easy and "b" in kept[1].junk and "b" not in kept[1].easy + kept[1].hard


def test_choose_queries_is_seeded() -> None:
    codes = np.full((12, 12), HARD, dtype=np.int8)
    codes[:, 0] = codes[0, :] = EASY
    np.fill_diagonal(codes, -1)
    first = choose_queries(codes, 4, seed=3)
    assert first.tolist() == choose_queries(codes, 4, seed=3).tolist()
    assert len(first) == 4 and np.all(np.diff(first) > 0)
    assert choose_queries(codes, 50, seed=0).tolist() == list(range(1, 12))  # 0 has no hard partner
    assert choose_queries(codes, None, seed=0).tolist() == list(range(1, 12))  # None: every eligible photo
    with pytest.raises(ValueError, match="queries per scene must be >= 1, got 0"):
        choose_queries(codes, 0, seed=0)


def test_bad_input_names_the_value() -> None:
    with pytest.raises(ValueError, match="unknown image 'zz'"):
        covisibility_matrix(["a", "b"], [("a", "zz")], [0.5])
    with pytest.raises(ValueError, match=re.escape("must be in [0, 1], got 1.5")):
        covisibility_matrix(["a", "b"], [("a", "b")], [1.5])
    with pytest.raises(ValueError, match="view has shape"):
        classify_pairs(np.zeros(2), np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match="rotation must be >= 0 and not NaN"):
        classify_pairs(np.array([np.nan]), np.zeros(1), np.zeros(1))
    with pytest.raises(ValueError, match=re.escape("hard_max_view must be in [0, 180] degrees, got 200")):
        OverlapThresholds(hard_max_view=200)
    with pytest.raises(ValueError, match=re.escape("easy_max_view (50.0) must not exceed hard_max_view")):
        OverlapThresholds(easy_max_view=50.0)
    with pytest.raises(ValueError, match=re.escape("scene radius is 0.0")):
        scene_radius(np.zeros((3, 3)))
    with pytest.raises(ValueError, match=re.escape("rotations must be finite with shape (n, 3, 3)")):
        viewing_angles(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="query indices must be distinct"):
        query_truths(IDS, np.zeros((5, 5)), [0, 0], {"a": (0, 0, 1, 1)})
    with pytest.raises(ValueError, match="query 'a' has no bounding box"):
        query_truths(IDS, np.zeros((5, 5)), [0], {})


def test_sets_from_the_shared_photos(imc_root: Path, tmp_path: Path) -> None:
    summaries = build_imc_sets(imc_root, tmp_path, queries_per_scene=4, seed=0)
    assert [s.name for s in summaries] == [
        "imc_brandenburg_gate",
        "imc_grand_place_brussels",
        "imc_sagrada_familia",
    ]
    # the command line writes the same sets (same seed)
    args = [
        "imc-benchmark",
        "--imc",
        str(imc_root),
        "--out",
        str(tmp_path / "again"),
        "--queries-per-scene",
        "4",
    ]
    result = CliRunner().invoke(app, [*args, "--seed", "0"])
    assert result.exit_code == 0, result.output
    assert "imc_sagrada_familia" in result.output
    bad = CliRunner().invoke(app, [*args, "--queries-per-scene", "0"])
    assert bad.exit_code == 1 and "queries_per_scene must be >= 1, got 0" in bad.output
    for summary in summaries:
        db_ids, query_ids, truths = read_gnd(gnd_path(tmp_path, summary.name))
        assert (db_ids, query_ids, truths) == read_gnd(gnd_path(tmp_path / "again", summary.name))  # seeded
        assert summary.queries == len(query_ids) == 4 and summary.database == len(db_ids) == 676 - 4
        assert not set(query_ids) & set(db_ids)
        scene_ids = {p.stem for p in (imc_root / summary.held_out / "images").iterdir()}
        assert set(query_ids) <= scene_ids
        for truth in truths:
            assert truth.easy and truth.hard
            assert set(truth.easy + truth.hard + truth.junk) <= scene_ids  # other scenes are distractors
            assert truth.bbox is not None and truth.bbox[:2] == (0.0, 0.0)
        assert summary.easy == sum(len(t.easy) for t in truths) and summary.distractors == 676 - len(
            scene_ids
        )
        assert all((tmp_path / summary.name / "jpg" / f"{i}.jpg").is_file() for i in (*db_ids, *query_ids))
        assert (tmp_path / summary.name / "LICENSE.txt").is_file()
    # an oracle ranking (positives first) scored by the project and by the independent checker
    if not CHECK_TOOL.is_file():
        pytest.skip(f"checker not found at {CHECK_TOOL}")
    db_ids, _, truths = read_gnd(gnd_path(tmp_path, summaries[2].name))
    gnd = gnd_indices(truths, db_ids)
    columns = []
    for g in gnd:
        positives = [*g["easy"], *g["hard"]]
        columns.append(positives + sorted(set(range(len(db_ids))) - set(positives)))
    ranks = np.array(columns, dtype=np.int64).T
    out = tmp_path / "oracle"
    out.mkdir()
    np.save(out / "ranks.npy", ranks)
    metrics = {"revisitop": revisitop_metrics(ranks, gnd, [1, 5, 10])}
    (out / "metrics.json").write_text(json.dumps(metrics, sort_keys=True))
    assert metrics["revisitop"]["medium"]["mAP"] == pytest.approx(100.0)
    checked = subprocess.run(
        [
            sys.executable,
            str(CHECK_TOOL),
            str(gnd_path(tmp_path, summaries[2].name)),
            str(out),
            "--min-medium",
            "99.9",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_leave_one_out_sets_from_the_shared_photos(imc_root: Path, tmp_path: Path) -> None:
    summaries = build_imc_sets(imc_root, tmp_path, queries_per_scene="all", seed=0)
    assert [s.queries for s in summaries] == [348, 233, 82]  # every photo with an easy and a hard partner
    for summary in summaries:
        db_ids, query_ids, truths = read_gnd(gnd_path(tmp_path, summary.name))
        assert summary.database == len(db_ids) == 676 and set(query_ids) <= set(db_ids)
        for truth in truths:
            assert truth.query_id in truth.junk  # never counted for or against its own query
            assert truth.query_id not in truth.easy + truth.hard
            assert truth.easy and truth.hard
    # the query ranked first on its own photo (as a real search does) costs nothing: oracle = 100
    db_ids, _, truths = read_gnd(gnd_path(tmp_path, summaries[2].name))
    gnd = gnd_indices(truths, db_ids)
    columns = []
    for truth, g in zip(truths, gnd, strict=True):
        first = [db_ids.index(truth.query_id), *g["easy"], *g["hard"]]
        columns.append(first + sorted(set(range(len(db_ids))) - set(first)))
    metrics = revisitop_metrics(np.array(columns, dtype=np.int64).T, gnd, [1, 5, 10])
    assert metrics["medium"]["mAP"] == pytest.approx(100.0) and metrics["hard"]["mAP"] == pytest.approx(100.0)
