"""Serving speed: p50/p95 latency and requests/s of ``POST /search`` over real HTTP on 127.0.0.1.

    nice -n 10 python benchmarks/serve_speed.py [--big 100000] [--requests 80] [--skip-big] [--skip-spatial]

Each setting starts ``landmark serve --local <version> --host 127.0.0.1`` in a subprocess (query log on, as in
production) and runs bounded request loops from 1 and from 4 concurrent clients (threads of this process, each
its own connection, uploading test-split photos as multipart); latencies are client-side, requests/s is requests
over the wall time of the loop. Settings:

- **demo**: the demo's world and extraction (the synthetic world of params.yaml, the ``extract`` settings of
  ``flows/demo.py``); the model is the packaged backbone + GeM + the 512-d neck (untrained: speed only); the index
  with its labels and train set, so the re-ranking of ``evaluate`` runs per request (DBA, alpha-QE, sort/insert
  steps); without and with spatial verification of the top ``rerank.spatial_top`` (SIFT stores of index and
  train);
- **big**: ``--big`` random unit vectors in a flat index written with ``landmark.retrieval.index.write_index`` (no labels,
  no train set: the search-only path), queried with the same model; ``rerank.dba`` is off there, because
  ``run_retrieval`` augments the whole database on every request (its cost per request is measured in-process
  at smaller sizes, ``dba_per_request_s``).

Writes benchmarks/results/serve_speed.json. (A micro-batcher describing concurrent queries in one forward pass
was measured with this benchmark at commit 80b35ab and removed: no gain on 2 CPU cores, see
benchmarks/results/serve_batching.json.)
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, cached_world, config_parser, write_result

from flows.demo import DEMO_SETTINGS
from landmark.config import Config, load_config
from landmark.data.formats import read_dataset
from landmark.models.global_model import create_global_model
from landmark.models.model_dir import load_model_dir, save_model_dir
from landmark.retrieval.index import build_in_memory, write_index
from landmark.retrieval.rerank import run_retrieval

# the demo's extraction (flows/demo.py) and a CPU index
DEMO_OVERRIDES = [*(f"extract.{k}={v}" for k, v in DEMO_SETTINGS["extract"].items()), "index.gpu='off'"]
WARMUP = 3


@dataclass(frozen=True)
class Setting:
    """One server configuration to measure."""

    name: str
    version: Path  # version-like directory (model/ + index/)
    overrides: tuple[str, ...]  # --set arguments of `landmark serve`
    local_features: Path | None = None


# ---------------------------------------------------------------------------------------------------------------
# The versions served


def build_demo(cfg: Config, work: Path, spatial: bool) -> tuple[Path, Path, Path | None]:
    """The demo world, its model, descriptors and index (and SIFT stores with ``spatial``), cached in ``work``.

    Returns:
        (dataset root, version directory, local feature stores or None).
    """
    from landmark.stages.extract import extract
    from landmark.stages.index import build_index
    from landmark.stages.local import local

    pixels = f"{cfg.extract.image_size}px"  # descriptors and index depend on the extraction size
    data, version, features = cached_world(cfg, work), work / f"version-{pixels}", work / f"features-{pixels}"
    model_dir = version / "model"
    if not model_dir.is_dir():
        save_model_dir(model_dir, create_global_model(cfg.model), cfg.model, [], {})
    if not (version / "index" / "meta.json").exists():
        extract(cfg, data, features, splits=("index", "train"), model_dir=model_dir, progress=False)
        build_index(cfg, data, features, version / "index")
    local_dir = work / "local" if spatial else None
    if local_dir is not None:
        for split in ("index", "train"):
            local(cfg, data, local_dir, split=split, progress=False)
    return data, version, local_dir


def build_big(cfg: Config, demo_version: Path, work: Path, size: int) -> Path:
    """A version with ``size`` random unit vectors (the demo model's dimension) in a flat index, no labels and
    no train set; cached in ``work``."""
    version = work / f"big-{size}-{cfg.extract.image_size}px"
    if (version / "index" / "meta.json").exists():
        return version
    loaded = load_model_dir(demo_version / "model")
    dim = int(loaded.model.dim)
    shutil.rmtree(version, ignore_errors=True)
    shutil.copytree(demo_version / "model", version / "model")

    def chunks() -> Iterator[tuple[list[str], np.ndarray]]:
        rng = np.random.default_rng(cfg.seed)
        for start in range(0, size, 50_000):
            n = min(50_000, size - start)
            x = rng.standard_normal((n, dim), dtype=np.float32)
            yield [f"r{start + i:07d}" for i in range(n)], x / np.linalg.norm(x, axis=1, keepdims=True)

    features = {"extract": asdict(cfg.extract), "weights_sha1": loaded.fingerprint}
    write_index(version / "index", chunks(), dim=dim, kind="flat", cfg=cfg.index, meta={"features": features})
    return version


# ---------------------------------------------------------------------------------------------------------------
# Serving and measuring


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_server(setting: Setting, base: Sequence[str], work: Path) -> Iterator[str]:
    """``landmark serve`` for ``setting`` on a free port of 127.0.0.1 until the block ends; yields its URL."""
    port = free_port()
    args = [sys.executable, "-m", "landmark", *base]
    for override in (*setting.overrides, f"serve.log_dir={work / 'queries' / setting.name}"):
        args += ["--set", override]
    args += ["serve", "--local", str(setting.version), "--host", "127.0.0.1", "--port", str(port)]
    if setting.local_features is not None:
        args += ["--local-features", str(setting.local_features)]
    log = open(work / f"server-{setting.name}.log", "w")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=work)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, timeout_s=600)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def wait_healthy(url: str, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} (see its log)")
        try:
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not become healthy in {timeout_s}s")


def client_loop(
    url: str, images: Sequence[bytes], offset: int, count: int, out: list[tuple[float, float]]
) -> None:
    """``count`` searches, one after the other, each image in turn; (client seconds, server seconds) each."""
    with httpx.Client(base_url=url, timeout=300) as client:
        for i in range(count):
            data = images[(offset + i) % len(images)]
            start = time.perf_counter()
            response = client.post("/search?top=10", files={"image": ("q.jpg", data, "image/jpeg")})
            elapsed = time.perf_counter() - start
            if response.status_code != 200:
                raise RuntimeError(f"search failed: {response.status_code} {response.text[:200]}")
            out.append((elapsed, float(response.json()["seconds"])))


@dataclass
class Timings:
    """Requests of one loop of one setting, gathered over rounds."""

    client_s: list[float] = field(default_factory=list)
    server_s: list[float] = field(default_factory=list)
    wall_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        latencies, server = np.array(self.client_s), np.array(self.server_s)
        return {
            "requests": int(latencies.size),
            "p50_ms": round(1000 * float(np.percentile(latencies, 50)), 1),
            "p95_ms": round(1000 * float(np.percentile(latencies, 95)), 1),
            "mean_server_ms": round(1000 * float(server.mean()), 1),
            "requests_per_s": round(latencies.size / self.wall_s, 2),
        }


def measure(url: str, images: Sequence[bytes], clients: int, per_client: int, into: Timings) -> None:
    """``clients`` concurrent loops of ``per_client`` searches (after a warm-up), added to ``into``."""
    client_loop(url, images, 0, WARMUP, [])
    results: list[list[tuple[float, float]]] = [[] for _ in range(clients)]
    threads = [
        threading.Thread(
            target=client_loop, args=(url, images, 7 * c + len(into.client_s), per_client, results[c])
        )
        for c in range(clients)
    ]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    into.wall_s += time.perf_counter() - start
    rows = [r for per in results for r in per]
    if len(rows) != clients * per_client:
        raise RuntimeError(f"{clients * per_client - len(rows)} requests failed (see the server log)")
    into.client_s += [r[0] for r in rows]
    into.server_s += [r[1] for r in rows]


@dataclass(frozen=True)
class Loop:
    """One measured loop: how many concurrent clients, searches per client (in total over the rounds)."""

    clients: int
    per_client: int


def run_group(
    group: Sequence[Setting],
    loops: Sequence[Loop],
    base: Sequence[str],
    work: Path,
    images: Sequence[bytes],
    rounds: int,
) -> list[dict[str, Any]]:
    """Settings compared with each other: all their servers up at once (an idle server costs no CPU), each loop
    run in ``rounds`` rounds alternating between the settings, so a change of the machine's background load
    falls on all of them alike."""
    with ExitStack() as stack:
        urls = []
        for setting in group:
            print(f"[{setting.name}] starting the server", flush=True)
            urls.append(stack.enter_context(running_server(setting, base, work)))
        health = [httpx.get(f"{url}/healthz", timeout=30).json() for url in urls]
        timings = [[Timings() for _ in loops] for _ in group]
        for _ in range(rounds):
            for j, loop in enumerate(loops):
                for i, url in enumerate(urls):
                    per_round = max(1, loop.per_client // rounds)
                    measure(url, images, loop.clients, per_round, timings[i][j])
    results = []
    for setting, served, per_loop in zip(group, health, timings, strict=True):
        runs = [{"clients": loop.clients, **t.summary()} for loop, t in zip(loops, per_loop, strict=True)]
        for run in runs:
            print(f"[{setting.name}] {run}", flush=True)
        results.append(
            {
                "setting": setting.name,
                "index_size": served["index_size"],
                "rerank_steps": served["served"]["rerank_steps"],
                "overrides": list(setting.overrides),
                "notes": served["served"]["notes"],
                "runs": runs,
            }
        )
    return results


def dba_per_request(cfg: Config, dim: int, sizes: Sequence[int]) -> list[dict[str, float]]:
    """Seconds of one ``run_retrieval`` call with and without DBA, per database size (random unit vectors, one
    query, a prebuilt first-stage index as serving has): DBA re-augments the whole database on every call."""
    rows = []
    rerank = replace(cfg.rerank, spatial=False, sort_step=False, insert_step=False)
    for size in sizes:
        rng = np.random.default_rng(size)
        db = rng.standard_normal((size, dim), dtype=np.float32)
        db /= np.linalg.norm(db, axis=1, keepdims=True)
        first_stage = build_in_memory(db, cfg.index)
        row: dict[str, float] = {"size": size}
        for dba in (False, True):
            start = time.perf_counter()
            run_retrieval(
                db[:1], db, replace(rerank, dba=dba), top=100, index_cfg=cfg.index, first_stage=first_stage
            )
            row["with_dba_s" if dba else "without_dba_s"] = round(time.perf_counter() - start, 3)
        rows.append(row)
        print(f"[dba] {row}", flush=True)
    return rows


def main() -> None:
    parser = config_parser(__doc__, REPO / "build" / "bench" / "serve_speed")
    parser.add_argument("--big", type=int, default=100_000, help="vectors of the synthetic index")
    parser.add_argument(
        "--requests", type=int, default=80, help="searches of the 1-client loop (non-spatial)"
    )
    parser.add_argument("--rounds", type=int, default=4, help="rounds alternating the compared settings")
    parser.add_argument("--skip-big", action="store_true")
    parser.add_argument("--skip-spatial", action="store_true")
    parser.add_argument("--out", type=Path, help="result file (default benchmarks/results/serve_speed.json)")
    args = parser.parse_args()
    overrides = [*args.overrides, *DEMO_OVERRIDES]
    cfg = load_config(args.params, overrides)
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    data, demo, local_dir = build_demo(cfg, work, spatial=not args.skip_spatial)
    built_s = time.perf_counter() - start
    photos = sorted(read_dataset(data).image_paths("test").values())
    images = [p.read_bytes() for p in photos]
    sizes = Counter(image_size(b) for b in images)
    base = ["--params", str(args.params), *(a for o in overrides for a in ("--set", o))]
    plain = ("rerank.spatial=false", "recognize.inliers=false")
    n, quarter = args.requests, max(args.requests // 4, 5)
    loops = [Loop(1, n), Loop(4, quarter)]
    results = run_group([Setting("demo", demo, plain)], loops, base, work, images, args.rounds)
    if local_dir is not None:
        spatial = Setting("demo+spatial", demo, ("rerank.spatial=true", "recognize.inliers=false"), local_dir)
        spatial_loops = [Loop(1, max(n // 4, 5)), Loop(4, max(n // 8, 3))]
        results += run_group([spatial], spatial_loops, base, work, images, 1)
    if not args.skip_big:
        big = build_big(cfg, demo, work, args.big)
        big_setting = Setting(f"big-{args.big}", big, (*plain, "rerank.dba=false"))
        results += run_group([big_setting], loops, base, work, images, args.rounds)
    dim = int(load_model_dir(demo / "model").model.dim)
    dba = dba_per_request(cfg, dim, (5_000, 10_000, 20_000))
    write_result(
        "serve_speed",
        {
            "endpoint": "POST /search?top=10 (multipart upload), query log on",
            "queries": {
                "split": "test",
                "photos": len(images),
                "sizes": {f"{w}x{h}": count for (w, h), count in sizes.most_common()},
            },
            "extract": {"image_size": cfg.extract.image_size, "scales": list(cfg.extract.scales)},
            "model": {"backbone": cfg.model.backbone, "dim": dim},
            "warmup_requests": WARMUP,
            "rounds": args.rounds,
            "build_s": round(built_s, 1),
            "results": results,
            "dba_per_request_s": dba,
            "total_s": round(time.perf_counter() - start, 1),
            "cpu_count": os.cpu_count(),
        },
        args.out,
    )


def image_size(data: bytes) -> tuple[int, int]:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return image.size


if __name__ == "__main__":
    main()
