"""Scale-out: the per-image stages on a Dask LocalCluster (1 and 2 workers), the index at millions of vectors, and
a projection to GLDv2 -> benchmarks/results/scale.json.

1. Per-image stages through ``landmark.platform.parallel`` on a real ``dask.distributed`` LocalCluster of 1 and 2 worker
   processes (1 thread each) at 1k and 10k images: global extraction (``extract_global_chunk``, one store shard
   per chunk), local features (SIFT, ``extract_local_chunk``) and drift's image statistics. Images are small
   procedural JPEGs (``--image-size``, default 128 px) so 10k fit the 2-core machine; above ``--extract-up-to``
   (default 10k) only the cheap stages (local features, statistics) run. Per run: wall time, images/s, speed-up
   2 vs 1 worker, and each worker's peak RSS (``ru_maxrss`` read on the workers).
2. The index: IVF-PQ (``index`` defaults: nlist 1024, PQ64x8, nprobe 32, 100k seeded training sample) over 1M
   and 4M synthetic clustered 512-d unit vectors streamed in chunks into 1M-vector shards (``write_index``),
   each size in a child process: build time, peak RSS, bytes on disk, recall@100 against exact search and
   queries/s on the saved, sharded index (CPU; the GPU path runs where faiss sees a GPU).
3. A projection of wall time and memory for GLDv2 (4.1M train, 762k index, 118k test) on N workers from the
   measured per-image costs, scaled to the pipeline's image sizes by pixel count (stated in the JSON).

Run: ``python benchmarks/scale.py`` (about 20 minutes on 2 idle cores; ``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from landmark.config import IndexConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine

GLDV2 = {"train": 4_132_914, "index": 761_757, "test": 117_577}
DIM = 512


# --------------------------------------------------------------------------------------------------------------
# images


def write_images(root: Path, n: int, size: int, seed: int) -> list[Path]:
    """``n`` procedural JPEGs (blurred noise with shapes, ``size`` px long side, some portrait), made once."""
    import cv2

    root.mkdir(parents=True, exist_ok=True)
    paths = [root / f"{i:06d}.jpg" for i in range(n)]
    rng = np.random.default_rng(seed)
    for i, path in enumerate(paths):
        if path.exists():
            continue
        h, w = (size, size * 3 // 4) if i % 3 == 0 else (size * 3 // 4, size)
        img = cv2.GaussianBlur(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), (5, 5), 0)
        for _ in range(6):
            x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
            color = tuple(int(c) for c in rng.integers(0, 255, 3))
            cv2.rectangle(
                img, (x, y), (x + int(rng.integers(8, w // 2)), y + int(rng.integers(8, h // 2))), color, -1
            )
        cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return paths


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def stage_runs(paths: list[Path], workers: int, stages: list[str], work: Path, chunk: int) -> dict[str, Any]:
    """Each stage over ``paths`` on a fresh LocalCluster of ``workers`` single-threaded processes."""
    from dask.distributed import Client, LocalCluster

    from landmark.config import ExtractConfig, LocalConfig, ModelConfig, ParallelConfig
    from landmark.features.global_desc import ImageItem
    from landmark.features.global_extract import GlobalChunk, extract_global_chunk
    from landmark.features.local_extract import LocalItem, extract_local_to_store
    from landmark.ops.drift import image_stats
    from landmark.platform.parallel import chunked, map_chunks

    out: dict[str, Any] = {}
    for stage in stages:
        with (
            LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                host="127.0.0.1",
            ) as cluster,
            Client(cluster) as client,
        ):
            config = ParallelConfig(backend="dask", address=cluster.scheduler_address, chunk_images=chunk)
            client.run(lambda: None)  # workers up before the clock starts
            store = Path(tempfile.mkdtemp(prefix=f"{stage}-", dir=work))
            start = time.perf_counter()
            if stage == "extract":
                cfg = ExtractConfig(image_size=128, scales=(1.0,), batch_size=16, workers=0)
                items = [ImageItem(p.stem, p) for p in paths]
                chunks = [
                    GlobalChunk(str(store), k, tuple(part), cfg, ModelConfig(), None, "cpu", 0)
                    for k, part in enumerate(chunked(items, chunk))
                ]
                done = sum(r.stored for r in map_chunks(extract_global_chunk, chunks, config, progress=False))
            elif stage == "local":
                items_l = [LocalItem(p.stem, p) for p in paths]
                done = extract_local_to_store(
                    items_l,
                    store,
                    LocalConfig(image_size=128, max_features=500),
                    progress=False,
                    parallel=config,
                ).extracted
            else:
                stats = image_stats({p.stem: p for p in paths}, parallel=config)
                done = int((stats["failure"] == "").sum())
            seconds = time.perf_counter() - start
            peaks = client.run(_peak_rss_mb)
        out[stage] = {
            "images": done,
            "seconds": round(seconds, 2),
            "images_per_s": round(done / seconds, 2),
            "seconds_per_image_per_worker": round(seconds * workers / max(done, 1), 5),
            "peak_rss_mb_per_worker": sorted(round(v, 1) for v in peaks.values()),
        }
        print(f"  {stage} x{len(paths)} on {workers} worker(s): {out[stage]}", flush=True)
    return out


# --------------------------------------------------------------------------------------------------------------
# index (runs in a child process per size: its own peak RSS)


def synthetic_chunks(n: int, chunk: int, seed: int, centres: np.ndarray) -> Any:
    """(ids, unit vectors) chunks of a clustered distribution, each chunk seeded on its own (regenerable)."""
    for c, start in enumerate(range(0, n, chunk)):
        rng = np.random.default_rng([seed, c])
        m = min(chunk, n - start)
        x = centres[rng.integers(0, len(centres), m)] + 0.4 * rng.standard_normal((m, DIM), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        yield [str(i) for i in range(start, start + m)], x.astype(np.float32)


def index_child(
    n: int, out_dir: Path, queries: int, seed: int, cfg: IndexConfig | None = None
) -> dict[str, Any]:
    """Build, save, reload and search an IVF-PQ index over ``n`` synthetic vectors; the measurements.

    ``cfg`` defaults to the ``index`` defaults with 1M-vector shards and 65,536-vector chunks (the rows of
    scale.json); ``benchmarks/gpu_check.py`` passes smaller settings for its CPU smoke run.
    """
    import faiss

    from landmark.config import IndexConfig
    from landmark.retrieval.index import gpu_available, load_index, sample_rows, write_index

    cfg = cfg or IndexConfig(kind="ivfpq", shard_size=1_000_000, chunk_size=65_536)
    centres = np.random.default_rng(seed).standard_normal((2_000, DIM)).astype(np.float32)
    rows = set(sample_rows(n, cfg.train_size, seed).tolist())
    sample = np.concatenate(
        [x[[i - int(ids[0]) for i in range(int(ids[0]), int(ids[0]) + len(ids)) if i in rows]]
         for ids, x in synthetic_chunks(n, cfg.chunk_size, seed, centres)]
    )  # fmt: skip
    start = time.perf_counter()
    info = write_index(
        out_dir, synthetic_chunks(n, cfg.chunk_size, seed, centres), dim=DIM, kind="ivfpq", cfg=cfg,
        train_sample=sample,
    )  # fmt: skip
    build_s = time.perf_counter() - start
    del sample
    rng = np.random.default_rng(seed + 1)
    q = centres[rng.integers(0, len(centres), queries)] + 0.4 * rng.standard_normal((queries, DIM)).astype(
        np.float32
    )
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    # exact top-100 by streaming the same chunks through a flat inner-product search
    best_s = np.full((queries, 0), -np.inf, np.float32)
    best_i = np.zeros((queries, 0), np.int64)
    for ids, x in synthetic_chunks(n, cfg.chunk_size, seed, centres):
        s, i = faiss.knn(q, x, 100, metric=faiss.METRIC_INNER_PRODUCT)
        best_s, best_i = np.concatenate([best_s, s], 1), np.concatenate([best_i, i + int(ids[0])], 1)
        order = np.argsort(-best_s, axis=1)[:, :100]
        best_s, best_i = np.take_along_axis(best_s, order, 1), np.take_along_axis(best_i, order, 1)
    index = load_index(out_dir, gpu="auto")
    start = time.perf_counter()
    _, found = index.search(q, 100)
    search_s = time.perf_counter() - start
    recall = float(np.mean([len(set(found[r]) & set(best_i[r])) / 100 for r in range(queries)]))
    disk = sum(p.stat().st_size for p in out_dir.iterdir())
    return {
        "vectors": n,
        "dim": DIM,
        "shards": len(info["shards"]),
        "config": {"nlist": cfg.nlist, "pq_m": cfg.pq_m, "pq_nbits": cfg.pq_nbits, "nprobe": cfg.nprobe,
                   "train_size": cfg.train_size, "shard_size": cfg.shard_size, "chunk_size": cfg.chunk_size},
        "gpu": gpu_available(),
        "build_seconds": round(build_s, 1),
        "vectors_per_s_build": round(n / build_s),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "index_bytes_on_disk": disk,
        "bytes_per_vector_on_disk": round(disk / n, 1),
        "recall_at_100": round(recall, 4),
        "queries": queries,
        "queries_per_s": round(queries / search_s, 1),
    }  # fmt: skip


# --------------------------------------------------------------------------------------------------------------
# projection


def project(
    stages: dict[str, Any], index: list[dict[str, Any]], image_size: int, workers: list[int]
) -> dict[str, Any]:
    """GLDv2 wall time per stage on N workers from each stage's 2-worker per-image cost at the largest size it ran
    at (parallel efficiency included), scaled by pixel count to the pipeline's sizes (extract 384 px x 3 scales,
    local 384 px)."""
    two = {}  # stage -> (images, seconds per image per worker), the largest run's
    for size in sorted(stages, key=int):
        for stage, run in stages[size].get("2", {}).items():
            two[stage] = (int(size), run["seconds_per_image_per_worker"])
    scale_px = {
        "extract": (384 / image_size) ** 2 * (0.5 + 1 + 2),
        "local": (384 / image_size) ** 2,
        "stats": 1.0,
    }
    splits = {"extract": sum(GLDV2.values()), "local": sum(GLDV2.values()), "stats": GLDV2["train"]}
    measured = ", ".join(f"{stage} at {size:,}" for stage, (size, _) in two.items())
    out: dict[str, Any] = {
        "assumptions": (
            f"per-image seconds per worker measured with 2 workers on images of {image_size} px ({measured} "
            "images), times the pixel ratio to the pipeline's sizes (extract: 384 px at scales "
            "1/sqrt2, 1, sqrt2 = 3.5x the pixels of one scale; local: 384 px; statistics: decode only, unscaled); "
            "images read from a shared store at no extra cost; workers = single-threaded CPU processes"
        ),
        "hours": {},
    }
    for n in workers:
        out["hours"][str(n)] = {
            stage: round(two[stage][1] * scale_px[stage] * splits[stage] / n / 3600, 1)
            for stage in scale_px
            if stage in two
        }
    if index:
        near = min(index, key=lambda run: abs(run["vectors"] - GLDV2["index"]))  # training cost included
        per_vec = near["build_seconds"] / near["vectors"]
        out["index"] = {
            "vectors": GLDV2["index"],
            "build_minutes_cpu": round(per_vec * GLDV2["index"] / 60, 1),
            "bytes_on_disk": int(near["bytes_per_vector_on_disk"] * GLDV2["index"]),
            "note": "IVF-PQ64 codes + ids; one shard (shard_size 1M); build memory ~ the 1M run's peak RSS",
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=Path("build/bench/scale"))
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--vectors", default="1000000,4000000")
    parser.add_argument(
        "--extract-up-to",
        type=int,
        default=10_000,
        help="global extraction only at sizes up to this (the slow stage)",
    )
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="200 images, 200k vectors: a smoke run")
    parser.add_argument("--index-child", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS / "scale.json")
    args = parser.parse_args()
    if args.index_child:
        print(
            json.dumps(
                index_child(
                    args.index_child, args.work / f"index-{args.index_child}", args.queries, args.seed
                )
            )
        )
        return
    sizes = [200] if args.quick else [int(s) for s in args.sizes.split(",")]
    vectors = [200_000] if args.quick else [int(v) for v in args.vectors.split(",")]
    args.work.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"benchmark": "scale", "machine": machine(), "stages": {}, "index": []}
    paths_all = write_images(args.work / "images", max(sizes), args.image_size, args.seed)
    for n in sizes:
        stages = ["extract", "local", "stats"] if n <= args.extract_up_to else ["local", "stats"]
        runs = {str(w): stage_runs(paths_all[:n], w, stages, args.work, args.chunk) for w in (1, 2)}
        runs["speedup_2_vs_1"] = {
            s: round(runs["1"][s]["seconds"] / runs["2"][s]["seconds"], 2) for s in stages
        }
        result["stages"][str(n)] = runs
    for n in vectors:
        child = subprocess.run(
            [sys.executable, __file__, "--index-child", str(n), "--work", str(args.work), "--queries",
             str(args.queries), "--seed", str(args.seed)], capture_output=True, text=True, check=True,
        )  # fmt: skip
        result["index"].append(json.loads(child.stdout.strip().splitlines()[-1]))
        print(f"  index {n}: {result['index'][-1]}", flush=True)
    result["gldv2_projection"] = project(result["stages"], result["index"], args.image_size, [2, 8, 32, 128])
    result["image_size"] = args.image_size
    result["chunk_images"] = args.chunk
    result["note"] = (
        "measured on a 2-core machine (other jobs' load: the load averages): speed-ups below 2 include the "
        "scheduler, the client and any other load on the same cores"
    )
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["gldv2_projection"], indent=2))


if __name__ == "__main__":
    main()
