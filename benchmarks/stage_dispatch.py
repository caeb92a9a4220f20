"""Where a stage's chunks run, timed on demo-size work: a pool of spawned processes or this process.

The demo's stages describe a few hundred images at a time. A spawned chunk process imports torch and timm and
loads the model before its first chunk (seconds), so on small inputs a pool can cost more than it saves. This
times ``extract`` (all splits, the demo's 320 px single-scale settings) and ``local`` (the train split) on the
default synthetic world (1080 images, seed 0), each run in its own fresh Python process, for:

- ``workers=2``: ``extract.workers = local.workers = 2`` (a pool of 2 spawned processes when there are 2+ chunks);
- ``workers=1``: every chunk in the calling process (the stage's own process, no pool);
- ``baseline`` (with ``--baseline-code DIR``): ``workers=2`` on another revision's ``landmark`` package, e.g.
  ``git archive main landmark params.yaml | tar -x -C DIR`` (before: one pool per split, a pool even for one
  worker).

Variants are interleaved over ``--rounds`` so that load from other jobs on the machine falls on all of them; the
load average before each run is recorded.

    python benchmarks/stage_dispatch.py [--rounds 2] [--baseline-code DIR]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from statistics import median
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, cached_world, config_parser, write_result

DEMO = ["device=cpu", "extract.scales=[1.0]", "extract.image_size=320"]


def run_stages(world: Path, out: Path, workers: int, params: Path) -> dict[str, float]:
    """Seconds of ``extract`` (every split) and ``local`` (train) into a fresh ``out``, in this process."""
    from landmark.config import load_config
    from landmark.stages.extract import extract
    from landmark.stages.local import local

    cfg = load_config(params, [*DEMO, f"extract.workers={workers}", f"local.workers={workers}"])
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    extract(cfg, world, out / "features", progress=False)
    middle = time.perf_counter()
    local(cfg, world, out / "local", split="train", progress=False)
    return {"extract_s": round(middle - start, 2), "local_s": round(time.perf_counter() - middle, 2)}


def run_variant(world: Path, out: Path, workers: int, code: Path) -> dict[str, Any]:
    """One timed run in a fresh interpreter importing ``landmark`` from ``code`` (and its ``params.yaml`` when
    it has one: another revision may not know this one's keys)."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    params = code / "params.yaml" if (code / "params.yaml").is_file() else REPO / "params.yaml"
    load = os.getloadavg()
    args = [sys.executable, __file__, "--one", str(world), str(out), str(workers), str(params)]
    result = subprocess.run(args, env=env, capture_output=True, text=True, check=True, cwd=REPO)
    return {**json.loads(result.stdout.strip().splitlines()[-1]), "load_before": [round(x, 2) for x in load]}


def main() -> None:
    if len(sys.argv) == 6 and sys.argv[1] == "--one":
        world, out, workers, params = sys.argv[2:]
        print(json.dumps(run_stages(Path(world), Path(out), int(workers), Path(params))))
        return
    parser = config_parser(__doc__, REPO / "build" / "bench" / "stage_dispatch")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--baseline-code", type=Path, default=None, help="directory holding another landmark/"
    )
    args = parser.parse_args()
    from landmark.config import load_config

    world = cached_world(load_config(args.params, args.overrides), args.work)
    variants = {"workers=2": (2, REPO), "workers=1": (1, REPO)}
    if args.baseline_code is not None:
        variants["baseline"] = (2, args.baseline_code.resolve())
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, (workers, code) in variants.items():
            runs[name].append(run_variant(world, args.work / "out", workers, code))
    summary = {
        name: {key: median(r[key] for r in done) for key in ("extract_s", "local_s")}
        for name, done in runs.items()
    }
    write_result(
        "stage_dispatch",
        {
            "what": "extract (train 640, index 360, test 80 images; 320 px, one scale) + local (train) per variant",
            "settings": DEMO,
            "median_seconds": summary,
            "runs": runs,
            "note": "2 shared cores: other engineers' jobs ran at the same time",
        },
    )


if __name__ == "__main__":
    main()
