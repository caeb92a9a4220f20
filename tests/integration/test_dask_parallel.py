"""The per-image stages on a real ``dask.distributed`` LocalCluster (2 worker processes, 1 thread each).

- ``extract`` and ``local`` on the cluster write byte-identical stores to the local run in 2 processes (same
  shard files), and so does the local run in this process (one worker: no pool);
- ingestion's decode checks give the serial manifest on 2 local processes and on the cluster;
- a chunk whose worker is killed is run again on another worker, with the same result: once with a chunk that
  kills its own worker on its first attempt (deterministic), once with a worker killed by the test while the
  ``local`` stage runs.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from landmark.config import Config, ParallelConfig, load_config
from landmark.platform.parallel import map_chunks, parallel_map

distributed = pytest.importorskip("dask.distributed")

pytestmark = [pytest.mark.integration]

SETTINGS = [
    "device=cpu",
    "extract.image_size=96",
    "extract.scales=[1.0]",
    "extract.batch_size=4",
    "extract.workers=0",
    "local.image_size=128",
    "local.max_features=150",
    "local.workers=0",
]


@pytest.fixture(scope="module")
def cluster() -> Iterator[object]:
    from dask.distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, host="127.0.0.1"
    ) as local_cluster:
        yield local_cluster


def _config(backend: str, address: str = "", chunk: int = 8) -> Config:
    extra = [f"parallel.backend={backend}", f"parallel.chunk_images={chunk}"]
    if address:
        extra.append(f"parallel.address={address}")
    return load_config(None, [*SETTINGS, *extra])


def _files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir()) if p.name.startswith("shard-")}


def test_extract_and_local_on_dask_equal_the_local_run(tiny_world, cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from landmark.features.store import load_features
    from landmark.stages.extract import extract
    from landmark.stages.local import local

    # the local run in 2 processes, the cluster's in 2 workers: chunk by chunk, the same shards
    here = load_config(None, [*SETTINGS, "parallel.chunk_images=8", "extract.workers=2", "local.workers=2"])
    there = _config("dask", cluster.scheduler_address)  # type: ignore[attr-defined]
    a = extract(here, tiny_world.root, tmp_path / "a", splits=["index"], progress=False)
    b = extract(there, tiny_world.root, tmp_path / "b", splits=["index"], progress=False)
    assert dict(a) == dict(b) == {"index": 40}
    shards = _files(tmp_path / "a" / "index")
    assert len(shards) == 2 * 5  # 40 images in chunks of 8: one .npy + one .ids.txt per chunk
    assert shards == _files(tmp_path / "b" / "index")
    ids, vectors = load_features(tmp_path / "b" / "index")
    assert len(set(ids)) == 40 and vectors.shape[0] == 40

    la = local(here, tiny_world.root, tmp_path / "la", split="test", progress=False)
    lb = local(there, tiny_world.root, tmp_path / "lb", split="test", progress=False)
    assert la.extracted == lb.extracted == len(tiny_world.meta.query("split == 'test'"))
    assert _files(tmp_path / "la" / "test") == _files(tmp_path / "lb" / "test")

    # cleaning's pair verification: chunks of pairs on the cluster give the local counts
    from landmark.cleaning.verify import StoreVerifier

    test_ids = sorted(tiny_world.meta.query("split == 'test'")["image_id"])
    pairs = [(a, b) for a in test_ids[:4] for b in test_ids[4:8]]
    local_counts = StoreVerifier(tmp_path / "la" / "test", here.verify).pair_counts(pairs)
    dask_counts = StoreVerifier(tmp_path / "la" / "test", here.verify, parallel=there.parallel).pair_counts(
        pairs
    )
    assert local_counts.tolist() == dask_counts.tolist() and local_counts.sum() > 0


def test_in_process_chunks_equal_spawned_chunks(tiny_world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from landmark.stages.extract import extract
    from landmark.stages.local import local

    # one worker: the chunks run in this process (no pool); two: in spawned processes. Same shards, byte for byte
    here = load_config(None, [*SETTINGS, "parallel.chunk_images=8", "extract.workers=1", "local.workers=1"])
    spawned = load_config(
        None, [*SETTINGS, "parallel.chunk_images=8", "extract.workers=2", "local.workers=2"]
    )
    a = extract(here, tiny_world.root, tmp_path / "a", splits=["index", "test"], progress=False)
    b = extract(spawned, tiny_world.root, tmp_path / "b", splits=["index", "test"], progress=False)
    assert dict(a) == dict(b) == {"index": 40, "test": 8}
    for split in ("index", "test"):
        shards = _files(tmp_path / "a" / split)
        assert shards and shards == _files(tmp_path / "b" / split)
    assert len(_files(tmp_path / "a" / "index")) == 2 * 5

    la = local(here, tiny_world.root, tmp_path / "la", split="test", progress=False)
    lb = local(spawned, tiny_world.root, tmp_path / "lb", split="test", progress=False)
    assert la.extracted == lb.extracted == len(tiny_world.meta.query("split == 'test'"))
    assert _files(tmp_path / "la" / "test") == _files(tmp_path / "lb" / "test")


def test_ingest_decode_checks_equal_serial_on_processes_and_dask(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from http_images import make_image

    from landmark.config import IngestConfig
    from landmark.data.manifest import read_manifest
    from landmark.stages.ingest import ingest

    photos = tmp_path / "photos" / "paris"
    photos.mkdir(parents=True)
    for k in range(9):
        (photos / f"p{k}.jpg").write_bytes(make_image(k, fmt="PNG" if k % 3 == 0 else "JPEG"))
    (photos / "text.jpg").write_bytes(b"plain text pretending to be a photo")
    (photos / "cut.jpg").write_bytes(make_image(20)[:300])

    def run(name: str, check_workers: int, parallel: ParallelConfig) -> object:
        cfg = dataclasses.replace(
            load_config(None, []),
            ingest=IngestConfig(workers=3, check_workers=check_workers),
            parallel=parallel,
        )
        ingest(cfg, str(tmp_path / "photos"), tmp_path / name, progress=False)
        frame = read_manifest(tmp_path / name / "manifests" / "train.parquet")
        return frame.drop(columns=["batch_id", "ingested_at"]).sort_values("image_id").reset_index(drop=True)

    serial = run("serial", 0, ParallelConfig(chunk_images=2))
    processes = run("processes", 2, ParallelConfig(chunk_images=2))
    dask = run("dask", 0, ParallelConfig(backend="dask", address=cluster.scheduler_address, chunk_images=2))  # type: ignore[attr-defined]
    assert serial.equals(processes) and serial.equals(dask)  # type: ignore[attr-defined]
    status = dict(zip(serial["image_id"], serial["status"], strict=True))  # type: ignore[index]
    assert sum(v == "ok" for v in status.values()) == 9
    assert status["text"] == status["cut"] == "quarantined"
    assert (serial["width"] == 96).sum() == 9  # type: ignore[index]


def kill_own_worker_once(task: tuple[str, int]) -> int:
    """Squares ``task[1]``; the first time item 3 is seen (no marker file yet) it kills the worker running it."""
    marker, value = Path(task[0]), task[1]
    if value == 3 and not marker.exists():
        marker.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return value * value


def test_a_chunk_whose_worker_dies_runs_again(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    marker = str(tmp_path / "killed")
    config = ParallelConfig(backend="dask", address=cluster.scheduler_address, chunk_images=2)  # type: ignore[attr-defined]
    tasks = [(marker, v) for v in range(8)]
    assert list(map_chunks(kill_own_worker_once, tasks, config, progress=False)) == [v * v for v in range(8)]
    assert Path(marker).exists()  # the first attempt did die
    Path(marker).unlink()
    # the same through parallel_map's chunks (4 Dask tasks of 2 items)
    assert list(parallel_map(kill_own_worker_once, tasks, config=config, progress=False)) == [
        v * v for v in range(8)
    ]
    assert Path(marker).exists()


def test_local_stage_survives_a_killed_worker(tiny_world, cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from dask.distributed import Client

    from landmark.stages.local import local

    address = cluster.scheduler_address  # type: ignore[attr-defined]
    here = dataclasses.replace(_config("local"), parallel=ParallelConfig(chunk_images=2))
    there = dataclasses.replace(
        _config("dask"), parallel=ParallelConfig(backend="dask", address=address, chunk_images=2)
    )
    expected = local(here, tiny_world.root, tmp_path / "a", split="train", progress=False)
    outcome: dict[str, object] = {}

    def run() -> None:
        outcome["summary"] = local(there, tiny_world.root, tmp_path / "b", split="train", progress=False)

    killed: list[int] = []
    with Client(address) as client:
        thread = threading.Thread(target=run)
        thread.start()
        deadline = time.monotonic() + 60
        while not killed and thread.is_alive() and time.monotonic() < deadline:
            busy = [w for w, tasks in client.processing().items() if tasks]
            if busy:
                pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.05)
        thread.join(timeout=120)
    assert killed, "no worker was busy to be killed"
    summary = outcome["summary"]
    assert summary.extracted == expected.extracted  # type: ignore[attr-defined]
    assert _files(tmp_path / "a" / "train") == _files(tmp_path / "b" / "train")


def test_synth_and_drift_statistics_on_dask_equal_the_local_run(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from landmark.config import SynthConfig
    from landmark.data.synthetic import generate_world
    from landmark.ops.drift import image_stats

    world = SynthConfig(
        num_landmarks=2, facets_min=1, facets_max=1, train_per_landmark=3, index_per_landmark=2, queries=2,
        index_distractors=1, test_distractors=1, image_size=96, facet_size=128, workers=0,
    )  # fmt: skip
    there = ParallelConfig(backend="dask", address=cluster.scheduler_address, chunk_images=3)  # type: ignore[attr-defined]
    generate_world(world, tmp_path / "a", seed=3, progress=False)
    generate_world(world, tmp_path / "b", seed=3, progress=False, parallel=there)
    jpegs = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.jpg"))
    assert len(jpegs) == 6 + (4 + 1) + (2 + 1)  # train, index + distractor, queries + distractor
    assert all((tmp_path / "a" / p).read_bytes() == (tmp_path / "b" / p).read_bytes() for p in jpegs)

    images = {p.stem: tmp_path / "a" / p for p in jpegs}
    images["broken"] = tmp_path / "broken.jpg"
    images["broken"].write_bytes(b"not a jpeg")
    here_stats = image_stats(images, workers=0)
    there_stats = image_stats(images, parallel=there)
    assert there_stats.equals(here_stats)
    assert there_stats.loc["broken", "failure"] != "" and (there_stats["failure"] == "").sum() == len(jpegs)
