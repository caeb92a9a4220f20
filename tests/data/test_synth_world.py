"""The synthetic world on disk: layout, counts, label noise, ground truth, determinism."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import pickle
import re
from pathlib import Path

import pandas as pd
import pytest

from landmark.config import SynthConfig
from landmark.data.gldv2 import image_relpath
from landmark.data.synthetic import SynthSummary, generate_world, world_matches

SEED = 7
SMALL = SynthConfig(
    num_landmarks=6,
    facets_min=1,
    facets_max=3,
    train_per_landmark=6,
    index_per_landmark=6,
    queries=8,
    hard_query_fraction=0.25,
    index_distractors=6,
    test_distractors=3,
    label_noise=0.15,
    junk_noise=0.1,
    image_size=192,
    facet_size=256,
    workers=0,
)
HEX16 = re.compile(r"^[0-9a-f]{16}$")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SynthSummary]:
    out = tmp_path_factory.mktemp("synth")
    return out, generate_world(SMALL, out, seed=SEED, progress=False)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_layout_and_columns(world: tuple[Path, SynthSummary]) -> None:
    out, _ = world
    headers = {
        "train.csv": ["id", "url", "landmark_id"],
        "index.csv": ["id", "url"],
        "test.csv": ["id", "url"],
        "recognition_solution_v2.1.csv": ["id", "landmarks", "Usage"],
        "retrieval_solution_v2.1.csv": ["id", "images", "Usage"],
    }
    for name, header in headers.items():
        with (out / name).open(newline="") as fh:
            assert next(csv.reader(fh)) == header, name
    expected = set()
    for split in ("train", "index", "test"):
        for row in read_csv(out / f"{split}.csv"):
            assert HEX16.match(row["id"])
            assert row["url"] == f"synth://{split}/{row['id']}"
            rel = image_relpath(split, row["id"])
            assert (out / rel).is_file()
            expected.add(str(rel))
    on_disk = {str(p.relative_to(out)) for p in out.rglob("*.jpg")}
    assert on_disk == expected
    for name in ("gnd_synth.pkl", "synth_meta.parquet", "synth_config.json"):
        assert (out / name).is_file()
    saved = json.loads((out / "synth_config.json").read_text())
    assert saved["seed"] == SEED
    assert saved["synth"]["num_landmarks"] == SMALL.num_landmarks
    assert "workers" not in saved["synth"]  # the worker count never changes the output


def test_counts_per_split(world: tuple[Path, SynthSummary]) -> None:
    out, summary = world
    n_train = SMALL.num_landmarks * SMALL.train_per_landmark
    n_index = SMALL.num_landmarks * SMALL.index_per_landmark + SMALL.index_distractors
    n_test = SMALL.queries + SMALL.test_distractors
    assert len(read_csv(out / "train.csv")) == summary.train == n_train
    assert len(read_csv(out / "index.csv")) == summary.index == n_index
    assert len(read_csv(out / "test.csv")) == summary.test == n_test
    assert summary.images == n_train + n_index + n_test
    assert summary.seconds > 0 and summary.images_per_s > 0
    ids = [r["id"] for s in ("train", "index", "test") for r in read_csv(out / f"{s}.csv")]
    assert len(set(ids)) == len(ids)
    meta = pd.read_parquet(out / "synth_meta.parquet")
    assert meta["image_id"].tolist() == ids
    index = meta[meta["split"] == "index"]
    assert (index["true_landmark"] == -1).sum() == SMALL.index_distractors
    assert (
        index[index["true_landmark"] >= 0].groupby("true_landmark").size().eq(SMALL.index_per_landmark).all()
    )
    test = meta[meta["split"] == "test"]
    assert (test["true_landmark"] == -1).sum() == SMALL.test_distractors
    queries = test[test["true_landmark"] >= 0]
    assert (queries["difficulty"] == "hard").sum() == round(SMALL.hard_query_fraction * SMALL.queries)
    assert set(queries["difficulty"]) <= {"easy", "hard"}
    assert len(meta.iloc[0]["homography"]) == 9


def test_label_noise_is_exact(world: tuple[Path, SynthSummary]) -> None:
    out, summary = world
    meta = pd.read_parquet(out / "synth_meta.parquet")
    train = meta[meta["split"] == "train"]
    n = len(train)
    wrong = train[train["noise"] == "wrong_label"]
    junk = train[train["noise"] == "junk_labelled"]
    assert len(wrong) == summary.wrong_label == round(SMALL.label_noise * n)
    assert len(junk) == summary.junk_labelled == round(SMALL.junk_noise * n)
    assert (wrong["label"] != wrong["true_landmark"]).all() and (wrong["true_landmark"] >= 0).all()
    assert (junk["true_landmark"] == -1).all() and (junk["facet"] == -1).all()
    assert (junk["difficulty"] == "distractor").all()
    assert junk["label"].between(0, SMALL.num_landmarks - 1).all()
    clean = train[train["noise"] == "none"]
    assert (clean["label"] == clean["true_landmark"]).all()
    # The CSV carries the (noisy) labels; each landmark had train_per_landmark photos before junk replaced some.
    labels = {r["id"]: int(r["landmark_id"]) for r in read_csv(out / "train.csv")}
    assert labels == dict(zip(train["image_id"], train["label"].astype(int), strict=True))
    shown = train[train["true_landmark"] >= 0]["true_landmark"].value_counts()
    replaced = junk["label"].value_counts()
    per_landmark = shown.add(replaced, fill_value=0)
    assert sorted(per_landmark.index) == list(range(SMALL.num_landmarks))
    assert per_landmark.eq(SMALL.train_per_landmark).all()


def test_gnd_is_valid(world: tuple[Path, SynthSummary]) -> None:
    out, _ = world
    gnd = pickle.loads((out / "gnd_synth.pkl").read_bytes())
    meta = pd.read_parquet(out / "synth_meta.parquet").set_index("image_id")
    index_ids = [r["id"] for r in read_csv(out / "index.csv")]
    query_ids = [r["id"] for r in read_csv(out / "test.csv") if meta.loc[r["id"], "true_landmark"] >= 0]
    assert gnd["imlist"] == index_ids
    assert gnd["qimlist"] == query_ids
    assert len(gnd["gnd"]) == len(query_ids)
    n_easy = 0
    for qid, g in zip(query_ids, gnd["gnd"], strict=True):
        easy, hard, junk = set(g["easy"]), set(g["hard"]), set(g["junk"])
        assert not (easy & hard) and not (easy & junk) and not (hard & junk)
        everything = easy | hard | junk
        assert all(isinstance(j, int) and 0 <= j < len(index_ids) for j in everything)
        q = meta.loc[qid]
        same = {j for j, i in enumerate(index_ids) if meta.loc[i, "true_landmark"] == q["true_landmark"]}
        assert everything == same
        assert easy | hard, "every query has a positive"
        for j in easy:
            assert meta.loc[index_ids[j], "facet"] == q["facet"]
            assert meta.loc[index_ids[j], "difficulty"] == "easy"
        for j in junk:
            assert meta.loc[index_ids[j], "difficulty"] == "junk"
        n_easy += len(easy)
        x0, y0, x1, y1 = g["bbx"]
        assert 0 <= x0 < x1 <= q["width"] and 0 <= y0 < y1 <= q["height"]
    assert n_easy > 0


def test_solutions(world: tuple[Path, SynthSummary]) -> None:
    out, _ = world
    meta = pd.read_parquet(out / "synth_meta.parquet")
    truth = dict(zip(meta["image_id"], meta["true_landmark"].astype(int), strict=True))
    index_by_landmark: dict[int, set[str]] = {}
    for r in read_csv(out / "index.csv"):
        index_by_landmark.setdefault(truth[r["id"]], set()).add(r["id"])
    test_rows = read_csv(out / "test.csv")
    recognition = read_csv(out / "recognition_solution_v2.1.csv")
    assert [r["id"] for r in recognition] == [r["id"] for r in test_rows]
    for row, r in enumerate(recognition):
        lid = truth[r["id"]]
        assert r["landmarks"] == (str(lid) if lid >= 0 else "")
        assert r["Usage"] == ("Public" if row % 2 == 0 else "Private")
    retrieval = read_csv(out / "retrieval_solution_v2.1.csv")
    assert [r["id"] for r in retrieval] == [r["id"] for r in test_rows if truth[r["id"]] >= 0]
    usage = {r["id"]: r["Usage"] for r in recognition}
    for r in retrieval:
        assert set(r["images"].split(" ")) == index_by_landmark[truth[r["id"]]]
        assert r["Usage"] == usage[r["id"]]


def test_deterministic_across_runs_and_workers(world: tuple[Path, SynthSummary], tmp_path: Path) -> None:
    out, _ = world
    reference = tree_hashes(out)
    again = tmp_path / "again"
    generate_world(SMALL, again, seed=SEED, progress=False)
    assert tree_hashes(again) == reference
    # Two workers, into a directory that already holds another world: same bytes, nothing stale left over.
    reused = tmp_path / "reused"
    generate_world(SMALL, reused, seed=SEED + 1, progress=False)
    assert tree_hashes(reused) != reference
    generate_world(dataclasses.replace(SMALL, workers=2), reused, seed=SEED, progress=False)
    assert tree_hashes(reused) == reference


def test_other_seed_gives_other_ids(world: tuple[Path, SynthSummary], tmp_path: Path) -> None:
    out, _ = world
    cfg = dataclasses.replace(SMALL, num_landmarks=2, index_distractors=0, test_distractors=0)
    generate_world(cfg, tmp_path, seed=SEED + 100, progress=False)
    theirs = {r["id"] for r in read_csv(tmp_path / "train.csv")}
    ours = {r["id"] for r in read_csv(out / "train.csv")}
    assert not theirs & ours


def test_world_matches_only_the_settings_it_was_rendered_with(
    world: tuple[Path, SynthSummary], tmp_path: Path
) -> None:
    out, _ = world
    assert world_matches(out, SMALL, seed=SEED)
    assert world_matches(out, dataclasses.replace(SMALL, workers=3), seed=SEED)  # workers never change a byte
    assert not world_matches(out, SMALL, seed=SEED + 1)
    assert not world_matches(out, dataclasses.replace(SMALL, label_noise=0.2), seed=SEED)
    assert not world_matches(tmp_path / "nothing", SMALL, seed=SEED)
    # a render cut short leaves no record, so it is never taken for a finished world
    partial = tmp_path / "partial"
    generate_world(SMALL, partial, seed=SEED, progress=False)
    (partial / "synth_config.json").unlink()
    assert not world_matches(partial, SMALL, seed=SEED)
