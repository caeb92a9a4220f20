"""The synthetic world as a daily feed: each photo gets an arrival day, and a day is written as its own batch.

Rules (seeded, so the same world and config give the same days):

- landmarks: a share (``feed.new_landmark_share``) first appears after day 0, each on one later day; every photo
  of such a landmark (train, index, query) arrives that day. The others are *known* landmarks;
- a photo of a known landmark arrives on day 0 with probability ``feed.first_day_share``, else on a uniformly
  drawn later day; so do non-landmark photos (distractors, junk);
- the shift day's photos are shot at night: darker and bluer (``feed.shift_strength``), re-encoded;
- the corrupt day also brings ``feed.corrupt_images`` truncated train files, which ingestion quarantines.

A day is written to ``<inbox>/day-NNN/`` in the GLDv2 layout of the world itself (split CSVs, solutions,
``gnd_synth.pkl`` of its queries, images), holding only that day's photos: an inbox that ingestion reads batch by
batch (:func:`landmark.stages.ingest.ingest_source`). Days already written are left alone.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from landmark.errors import InputError
from landmark.config import FeedConfig
from landmark.data.atomic import atomic_directory
from landmark.data.gldv2 import image_relpath
from landmark.data.revisitop import read_gnd, write_gnd
from landmark.data.synthetic.writer import (
    GND_FILE,
    INDEX_CSV,
    META_FILE,
    RECOGNITION_SOLUTION,
    RETRIEVAL_SOLUTION,
    TEST_CSV,
    TRAIN_CSV,
)

SPLIT_CSVS = {"train": TRAIN_CSV, "index": INDEX_CSV, "test": TEST_CSV}


def day_name(day: int) -> str:
    """``day-000`` style name of a day's batch."""
    return f"day-{day:03d}"


def arrival_days(meta: pd.DataFrame, cfg: FeedConfig, seed: int) -> pd.Series:
    """The arrival day of every photo of the world (``synth_meta.parquet`` rows), indexed like ``meta``.

    Args:
        meta: needs ``image_id`` and ``true_landmark`` (-1 = not a landmark).
    """
    rng = np.random.default_rng([seed, 20261201])
    landmarks = np.sort(meta.loc[meta["true_landmark"] >= 0, "true_landmark"].unique())
    later_days = np.arange(1, cfg.days)
    n_new = int(round(cfg.new_landmark_share * len(landmarks))) if len(later_days) else 0
    new = rng.permutation(landmarks)[:n_new]
    first_seen = {int(lm): int(later_days[k % len(later_days)]) for k, lm in enumerate(sorted(new))}
    draws = rng.random(len(meta))
    later = rng.choice(later_days, size=len(meta)) if len(later_days) else np.zeros(len(meta), dtype=int)
    days = np.where(draws < cfg.first_day_share, 0, later)
    landmark_of = meta["true_landmark"].to_numpy()
    for k, lm in enumerate(landmark_of):
        if int(lm) in first_seen:
            days[k] = first_seen[int(lm)]
    return pd.Series(days.astype(int), index=meta.index, name="day")


def night_shot(data: bytes, strength: float) -> bytes:
    """The photo as if shot at night: darker, a blue cast, re-encoded as JPEG (quality 90)."""
    image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32)
    darker = image * (1.0 - strength)
    darker[..., 2] += 40.0 * strength  # sodium lamps are orange; a moonlit sky is blue: enough to drift
    out = io.BytesIO()
    Image.fromarray(np.clip(darker, 0, 255).astype(np.uint8)).save(out, format="JPEG", quality=90)
    return out.getvalue()


def _filter_csv(source: Path, dest: Path, keep: set[str]) -> None:
    with source.open(newline="") as fh:
        rows = list(csv.reader(fh))
    with dest.open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(rows[0])
        writer.writerows(row for row in rows[1:] if row and row[0] in keep)


def _copy_image(source: Path, dest: Path, *, night: float | None, truncate: bool) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if night is None and not truncate:
        os.link(source, dest)  # the same bytes: a hard link costs no space
        return
    data = source.read_bytes()
    if night is not None:
        data = night_shot(data, night)
    if truncate:
        data = data[: len(data) // 3]
    dest.write_bytes(data)


def write_day(
    world: Path, inbox: Path, day: int, ids_by_split: Mapping[str, Sequence[str]], cfg: FeedConfig, seed: int
) -> Path:
    """Write one day's photos of ``world`` as a GLDv2-layout batch ``<inbox>/day-NNN`` (atomically).

    Returns:
        The batch directory.
    """
    dest = Path(inbox) / day_name(day)
    night = cfg.shift_strength if day == cfg.shift_day else None
    rng = np.random.default_rng([seed, day, 7])
    train = list(ids_by_split.get("train", ()))
    corrupt = (
        set(rng.choice(train, size=min(cfg.corrupt_images, len(train)), replace=False).tolist())
        if day == cfg.corrupt_day
        else set()
    )
    with atomic_directory(dest) as tmp:
        for split, csv_name in SPLIT_CSVS.items():
            keep = set(ids_by_split.get(split, ()))
            _filter_csv(world / csv_name, tmp / csv_name, keep)
            for image_id in sorted(keep):
                rel = image_relpath(split, image_id)
                _copy_image(world / rel, tmp / rel, night=night, truncate=image_id in corrupt)
        test_ids = set(ids_by_split.get("test", ()))
        for name in (RETRIEVAL_SOLUTION, RECOGNITION_SOLUTION):
            if (world / name).is_file():
                _filter_csv(world / name, tmp / name, test_ids)
        if (world / GND_FILE).is_file():
            db_ids, _, queries = read_gnd(world / GND_FILE)
            write_gnd(tmp / GND_FILE, db_ids, [q for q in queries if q.query_id in test_ids])
    return dest


def write_feed(world: Path, inbox: Path, cfg: FeedConfig, seed: int, days: int) -> list[Path]:
    """Write the first ``days`` days of the feed of ``world`` into ``inbox``; days already there are kept.

    Returns:
        The day directories written by this call.

    Raises:
        ValueError: ``days`` outside [1, feed.days].
        FileNotFoundError: ``world`` has no ``synth_meta.parquet`` (run ``landmark synth`` first).
    """
    if not 1 <= days <= cfg.days:
        raise InputError(f"feed days must be in [1, {cfg.days}] (feed.days), got {days}")
    meta_path = Path(world) / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} not found: generate the world first (`landmark synth`)")
    meta = pd.read_parquet(meta_path, columns=["image_id", "split", "true_landmark"])
    meta["day"] = arrival_days(meta, cfg, seed)
    written = []
    for day in range(days):
        if (Path(inbox) / day_name(day)).is_dir():
            continue
        rows = meta[meta["day"] == day]
        ids = {split: rows.loc[rows["split"] == split, "image_id"].tolist() for split in SPLIT_CSVS}
        written.append(write_day(Path(world), Path(inbox), day, ids, cfg, seed))
    return written
