"""Writing the synthetic world to disk in the GLDv2 layout, with revisitop ground truth and per-image metadata.

Files under ``out_dir``:

- ``train.csv`` (id,url,landmark_id), ``index.csv`` (id,url), ``test.csv`` (id,url);
- ``recognition_solution_v2.1.csv`` (id,landmarks,Usage), ``retrieval_solution_v2.1.csv`` (id,images,Usage);
- images at ``<split>/<id[0]>/<id[1]>/<id[2]>/<id>.jpg``;
- ``gnd_synth.pkl``: revisitop-style ground truth of the landmark queries against the index;
- ``synth_meta.parquet``: one row per image with the truth behind it (landmark, facet, noise, homography, ...);
- ``synth_config.json``: the :class:`SynthConfig` (minus ``workers``, which never changes the output) and seed.

Every file is written to a temporary name and moved into place, and images left over from an earlier run into the
same directory are removed, so a rerun overwrites cleanly. The same seed gives byte-identical files.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pickle
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from landmark.config import ParallelConfig, SynthConfig, config_to_dict
from landmark.data.gldv2 import SPLITS, image_relpath
from landmark.data.synthetic.render import RenderSettings, photo_difficulty, render_spec
from landmark.data.synthetic.world import PhotoSpec, WorldPlan, hard_query_count, noise_counts, plan_world
from landmark.platform.parallel import parallel_map

TRAIN_CSV = "train.csv"
INDEX_CSV = "index.csv"
TEST_CSV = "test.csv"
RECOGNITION_SOLUTION = "recognition_solution_v2.1.csv"
RETRIEVAL_SOLUTION = "retrieval_solution_v2.1.csv"
GND_FILE = "gnd_synth.pkl"
META_FILE = "synth_meta.parquet"
CONFIG_FILE = "synth_config.json"

_OWN_IMAGE = re.compile(r"^[0-9a-f]{16}\.jpg$")
_TEMP = re.compile(r"^\..+\.tmp$")


@dataclass(frozen=True)
class PhotoRecord:
    """What rendering measured about one photo (returned by the workers; the pixels go straight to disk).

    Attributes:
        homography: 9 floats, row-major facet-to-photo map; NaN when no landmark facet is shown.
        visible_fraction: visible share of the landmark facet (0 without one).
        bbox: the facet's box in the photo (x0, y0, x1, y1), clipped to the frame; None without one.
        difficulty: ``easy``, ``hard``, ``junk`` or ``distractor``.
    """

    image_id: str
    width: int
    height: int
    homography: tuple[float, ...]
    visible_fraction: float
    bbox: tuple[float, float, float, float] | None
    difficulty: str


@dataclass(frozen=True)
class SynthSummary:
    """Counts and timing of one :func:`generate_world` run."""

    out_dir: str
    landmarks: int
    train: int
    index: int
    test: int
    queries: int
    hard_queries: int
    index_distractors: int
    test_distractors: int
    wrong_label: int
    junk_labelled: int
    seconds: float
    images_per_s: float

    @property
    def images(self) -> int:
        """Images written over all splits."""
        return self.train + self.index + self.test


# ---------------------------------------------------------------------------------------------------------------
# Atomic file writes


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file next to ``path`` and move it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def csv_bytes(header: Sequence[str], rows: Sequence[Sequence[object]]) -> bytes:
    """A CSV document (``\\n`` line ends, minimal quoting) as UTF-8 bytes."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


# ---------------------------------------------------------------------------------------------------------------
# Rendering (runs in the workers)


def render_and_write(task: tuple[PhotoSpec, RenderSettings, str]) -> PhotoRecord:
    """Render one planned photo, write its JPEG under the output root, and return what was measured.

    Args:
        task: (spec, settings, output root as a string); module-level and picklable for process pools.
    """
    spec, settings, root = task
    photo = render_spec(spec, settings)
    write_atomic(Path(root) / image_relpath(spec.split, spec.image_id), photo.jpeg)
    h, w = photo.image.shape[:2]
    if spec.facet < 0 or photo.homography is None:
        return PhotoRecord(spec.image_id, w, h, (float("nan"),) * 9, 0.0, None, "distractor")
    return PhotoRecord(
        spec.image_id,
        w,
        h,
        tuple(float(v) for v in photo.homography.reshape(-1)),
        round(photo.visible_fraction, 6),
        photo.bbox,
        photo_difficulty(photo, spec.level),
    )


def _render_order(spec: PhotoSpec) -> tuple[int, int, int, int]:
    # Grouped by facet so a worker's facet cache keeps hitting; non-landmark photos last.
    lid = spec.landmark if spec.landmark >= 0 else 1 << 30
    return (lid, spec.facet, SPLITS.index(spec.split), spec.entropy[-1])


def render_all(
    plan: WorldPlan,
    settings: RenderSettings,
    out_dir: Path,
    *,
    workers: int,
    progress: bool,
    parallel: ParallelConfig | None = None,
) -> dict[str, PhotoRecord]:
    """Render every planned photo into ``out_dir`` (each file written atomically by the worker that renders it,
    so a chunk run again after a lost worker rewrites the same bytes); returns the records by image id.

    ``parallel`` selects local processes (``workers``) or a Dask cluster (``out_dir`` must be shared with it).
    """
    specs = sorted(plan.all_photos(), key=_render_order)
    tasks = [(spec, settings, str(out_dir)) for spec in specs]
    chunk = max(1, len(tasks) // (workers * 8)) if workers > 0 else 1
    records = parallel_map(
        render_and_write, tasks, config=parallel, workers=workers, desc="synth: rendering",
        progress=progress, chunksize=chunk,
    )  # fmt: skip
    return {r.image_id: r for r in records}


# ---------------------------------------------------------------------------------------------------------------
# Ground truth


def usage(row: int) -> str:
    """Kaggle-style ``Usage`` of test row ``row``: Public and Private alternate."""
    return "Public" if row % 2 == 0 else "Private"


def revisitop_gnd(plan: WorldPlan, records: dict[str, PhotoRecord]) -> dict[str, Any]:
    """Revisitop ground truth of the landmark queries against the index.

    For a query of facet ``f`` of landmark ``L``, an index photo of ``L`` is *junk* when its view is junk (facet
    barely visible or tiny), *hard* when it shows another facet of ``L`` or a hard view of ``f``, else *easy*.

    Returns:
        {"imlist": index ids, "qimlist": landmark query ids, "gnd": [{"bbx", "easy", "hard", "junk"}, ...]}.
    """
    imlist = [s.image_id for s in plan.index]
    queries = [s for s in plan.test if s.landmark >= 0]
    by_landmark: dict[int, list[int]] = {}
    for j, s in enumerate(plan.index):
        if s.landmark >= 0:
            by_landmark.setdefault(s.landmark, []).append(j)
    gnd = []
    for q in queries:
        easy, hard, junk = [], [], []
        for j in by_landmark.get(q.landmark, []):
            s = plan.index[j]
            kind = records[s.image_id].difficulty
            if kind == "junk":
                junk.append(j)
            elif s.facet != q.facet or kind == "hard":
                hard.append(j)
            else:
                easy.append(j)
        rec = records[q.image_id]
        bbx = rec.bbox if rec.bbox is not None else (0.0, 0.0, float(rec.width), float(rec.height))
        gnd.append({"bbx": [float(v) for v in bbx], "easy": easy, "hard": hard, "junk": junk})
    return {"imlist": imlist, "qimlist": [q.image_id for q in queries], "gnd": gnd}


def solution_rows(plan: WorldPlan) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]:
    """Rows of the recognition solution (every test image) and the retrieval solution (landmark queries only,
    with all index images of the same landmark, space separated, in index order)."""
    index_of: dict[int, list[str]] = {}
    for s in plan.index:
        if s.landmark >= 0:
            index_of.setdefault(s.landmark, []).append(s.image_id)
    recognition, retrieval = [], []
    for row, s in enumerate(plan.test):
        recognition.append((s.image_id, str(s.landmark) if s.landmark >= 0 else "", usage(row)))
        if s.landmark >= 0:
            retrieval.append((s.image_id, " ".join(index_of.get(s.landmark, [])), usage(row)))
    return recognition, retrieval


def meta_table(plan: WorldPlan, records: dict[str, PhotoRecord]) -> pa.Table:
    """One row per image (train, index, test order) with the truth behind it."""
    photos = plan.all_photos()
    recs = [records[s.image_id] for s in photos]
    return pa.table(
        {
            "image_id": pa.array([s.image_id for s in photos], pa.string()),
            "split": pa.array([s.split for s in photos], pa.string()),
            "true_landmark": pa.array([s.landmark for s in photos], pa.int64()),
            "facet": pa.array([s.facet for s in photos], pa.int64()),
            "family": pa.array([s.family for s in photos], pa.string()),
            "label": pa.array([s.label for s in photos], pa.int64()),
            "noise": pa.array([s.noise for s in photos], pa.string()),
            "difficulty": pa.array([r.difficulty for r in recs], pa.string()),
            "homography": pa.array([list(r.homography) for r in recs], pa.list_(pa.float64())),
            "width": pa.array([r.width for r in recs], pa.int64()),
            "height": pa.array([r.height for r in recs], pa.int64()),
            "visible_fraction": pa.array([r.visible_fraction for r in recs], pa.float64()),
        }
    )


# ---------------------------------------------------------------------------------------------------------------
# Writing


def _write_tables(plan: WorldPlan, records: dict[str, PhotoRecord], cfg: SynthConfig, out_dir: Path) -> None:
    def url(s: PhotoSpec) -> str:
        return f"synth://{s.split}/{s.image_id}"

    write_atomic(
        out_dir / TRAIN_CSV,
        csv_bytes(("id", "url", "landmark_id"), [(s.image_id, url(s), s.label) for s in plan.train]),
    )
    write_atomic(out_dir / INDEX_CSV, csv_bytes(("id", "url"), [(s.image_id, url(s)) for s in plan.index]))
    write_atomic(out_dir / TEST_CSV, csv_bytes(("id", "url"), [(s.image_id, url(s)) for s in plan.test]))
    recognition, retrieval = solution_rows(plan)
    write_atomic(out_dir / RECOGNITION_SOLUTION, csv_bytes(("id", "landmarks", "Usage"), recognition))
    write_atomic(out_dir / RETRIEVAL_SOLUTION, csv_bytes(("id", "images", "Usage"), retrieval))
    write_atomic(out_dir / GND_FILE, pickle.dumps(revisitop_gnd(plan, records), protocol=4))
    sink = pa.BufferOutputStream()
    pq.write_table(meta_table(plan, records), sink)
    write_atomic(out_dir / META_FILE, sink.getvalue().to_pybytes())
    write_atomic(
        out_dir / CONFIG_FILE, (json.dumps(_recorded(cfg, plan.seed), indent=2, sort_keys=True) + "\n").encode()
    )


def _recorded(cfg: SynthConfig, seed: int) -> dict[str, Any]:
    """What ``synth_config.json`` records of a world: the seed and the settings (``workers`` never changes it)."""
    return {"seed": seed, "synth": {k: v for k, v in config_to_dict(cfg).items() if k != "workers"}}


def world_matches(out_dir: Path, cfg: SynthConfig, *, seed: int) -> bool:
    """Whether ``out_dir`` holds a complete world generated with ``cfg`` and ``seed`` (its ``synth_config.json``,
    written last, records them), so that generating it again would write the same files."""
    path = Path(out_dir) / CONFIG_FILE
    if not path.is_file():
        return False
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    # through JSON, as written: tuples become lists
    return bool(recorded == json.loads(json.dumps(_recorded(cfg, seed))))


def remove_stale_images(plan: WorldPlan, out_dir: Path) -> int:
    """Delete images (and leftover temporary files) in the split folders that the plan does not contain.

    Only names this generator writes (16 hex chars + ``.jpg``, or ``.<name>.tmp``) are touched. Returns the count.
    """
    removed = 0
    for split in SPLITS:
        keep = {f"{s.image_id}.jpg" for s in plan.split(split)}
        root = out_dir / split
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            if path.is_file() and (
                (_OWN_IMAGE.match(path.name) and path.name not in keep) or _TEMP.match(path.name)
            ):
                path.unlink()
                removed += 1
    return removed


def generate_world(
    cfg: SynthConfig,
    out_dir: Path,
    *,
    seed: int,
    progress: bool = True,
    parallel: ParallelConfig | None = None,
) -> SynthSummary:
    """Plan, render and write the synthetic landmark world.

    Args:
        cfg: the ``synth`` section of the config (``cfg.workers`` processes render; 0 = in this process).
        out_dir: dataset root; created if missing; an earlier world there is overwritten cleanly.
        seed: world seed; the same seed and config give byte-identical files whatever ``cfg.workers``.
        progress: show a progress bar.
        parallel: where the rendering runs (default: ``cfg.workers`` local processes).

    Returns:
        Counts per split, noise counts and timing.
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / CONFIG_FILE).unlink(missing_ok=True)  # written last again: a world cut short never matches
    plan = plan_world(cfg, seed)
    records = render_all(
        plan, RenderSettings.from_config(cfg, seed), out_dir, workers=cfg.workers, progress=progress,
        parallel=parallel,
    )  # fmt: skip
    _write_tables(plan, records, cfg, out_dir)
    remove_stale_images(plan, out_dir)
    seconds = time.perf_counter() - start
    n_wrong, n_junk = noise_counts(cfg)
    images = len(plan.train) + len(plan.index) + len(plan.test)
    return SynthSummary(
        out_dir=str(out_dir),
        landmarks=cfg.num_landmarks,
        train=len(plan.train),
        index=len(plan.index),
        test=len(plan.test),
        queries=cfg.queries,
        hard_queries=hard_query_count(cfg),
        index_distractors=cfg.index_distractors,
        test_distractors=cfg.test_distractors,
        wrong_label=n_wrong,
        junk_labelled=n_junk,
        seconds=seconds,
        images_per_s=images / seconds if seconds > 0 else float("inf"),
    )
