"""The synthetic world as a daily feed: arrival days, new landmarks, the night-time shift and corrupt files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from landmark.config import FeedConfig
from landmark.data.formats import read_dataset
from landmark.data.gldv2 import image_relpath
from landmark.data.synthetic.feed import arrival_days, write_feed


def test_arrival_days_by_hand() -> None:
    meta = pd.DataFrame(
        {"image_id": [f"i{k}" for k in range(400)], "true_landmark": [k % 10 for k in range(400)]}
    )
    cfg = FeedConfig(days=3, first_day_share=0.6, new_landmark_share=0.2)
    days = arrival_days(meta, cfg, seed=4)
    assert days.equals(arrival_days(meta, cfg, seed=4))  # seeded
    per_landmark = days.groupby(meta["true_landmark"]).agg(["min", "max"])
    new = per_landmark[per_landmark["min"] > 0]
    assert len(new) == 2  # 20% of 10 landmarks first appear later, all their photos on one day
    assert (new["min"] == new["max"]).all() and set(new["min"]) == {1, 2}
    known = days[~meta["true_landmark"].isin(new.index)]
    assert set(known) == {0, 1, 2}
    assert abs((known == 0).mean() - 0.6) < 0.08


def test_one_day_only_has_a_single_batch() -> None:
    meta = pd.DataFrame({"image_id": ["a", "b"], "true_landmark": [0, 1]})
    assert arrival_days(meta, FeedConfig(days=1, shift_day=-1, corrupt_day=-1), seed=0).tolist() == [0, 0]


def _brightness(path: Path) -> float:
    return float(np.asarray(Image.open(path).convert("L"), dtype=np.float32).mean())


def test_days_are_datasets_with_their_truth_the_shift_and_the_corrupt_files(
    tmp_path: Path, tiny_world
) -> None:  # type: ignore[no-untyped-def]
    cfg = FeedConfig(days=3, shift_day=2, shift_strength=0.6, corrupt_day=1, corrupt_images=2)
    inbox = tmp_path / "inbox"
    written = write_feed(tiny_world.root, inbox, cfg, tiny_world.seed, 2)
    assert [p.name for p in written] == ["day-000", "day-001"]
    assert write_feed(tiny_world.root, inbox, cfg, tiny_world.seed, 2) == []  # days already there are kept
    write_feed(tiny_world.root, inbox, cfg, tiny_world.seed, 3)
    world = read_dataset(tiny_world.root)
    days = [read_dataset(inbox / f"day-{d:03d}") for d in range(3)]
    for split in ("train", "index", "test"):
        ids = [i for d in days for i in d.ok_ids(split)]
        assert sorted(ids) == sorted(world.ok_ids(split))  # every photo arrives exactly once
    truth = {q.query_id: q for q in world.retrieval}
    for day in days:
        assert all(truth[q.query_id] == q for q in day.retrieval)
    # the corrupt day's truncated files: a third of the original bytes
    short = [
        i
        for i in days[1].ok_ids("train")
        if (inbox / "day-001" / image_relpath("train", i)).stat().st_size
        < (tiny_world.root / image_relpath("train", i)).stat().st_size
    ]
    assert len(short) == 2
    # the shifted day is darker than the same photos in the world
    shifted = days[2].ok_ids("index")
    assert shifted
    for image_id in shifted:
        rel = image_relpath("index", image_id)
        assert _brightness(inbox / "day-002" / rel) < 0.6 * _brightness(tiny_world.root / rel)


def test_feed_needs_a_world_and_a_valid_day_count(tmp_path: Path) -> None:
    cfg = FeedConfig(days=2, shift_day=1)
    with pytest.raises(ValueError, match=r"feed days must be in \[1, 2\]"):
        write_feed(tmp_path, tmp_path / "inbox", cfg, 0, 3)
    with pytest.raises(FileNotFoundError, match="generate the world first"):
        write_feed(tmp_path, tmp_path / "inbox", cfg, 0, 1)
