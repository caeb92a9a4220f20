"""Helpers shared by the benchmark scripts: machine description and JSON output."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]


def add_config_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--params FILE`` and repeatable ``--set section.key=value`` (as the CLI's), into ``overrides``."""
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="section.key=value")
    return parser


def config_parser(doc: str | None, work: Path) -> argparse.ArgumentParser:
    """A benchmark's argument parser: its docstring as help, ``--work`` (default ``work``) and the config args."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=work)
    return add_config_args(parser)


# taken when a benchmark starts (it imports this module first), not when its result is written
_LOAD_AT_START = os.getloadavg()


def machine() -> dict[str, Any]:
    """What the numbers were measured on, with the load averages when the benchmark started and now."""
    import torch

    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "load_average_at_start": _LOAD_AT_START,
        "load_average_when_written": os.getloadavg(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def digest(payload: Any) -> str:
    """A short stable name for a JSON-able ``payload`` (cache keys: what a cached result was computed from)."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


def cached_world(cfg: Any, work: Path) -> Path:
    """The synthetic world of ``cfg.synth`` and ``cfg.seed`` under ``work/synth``, rendered unless the one there was
    rendered with the same settings (another world there is replaced, with a note)."""
    from landmark.data.synthetic import world_matches
    from landmark.stages.synth import synth

    world = work / "synth"
    if not world_matches(world, cfg.synth, seed=cfg.seed):
        if world.exists():
            print(f"{world}: rendered with other synth settings (or incomplete); rendering it again")
        synth(cfg, world)
    return world


def golden_sets(
    cfg: Any, imc: Path, work: Path, queries: int | None = None
) -> tuple[list[tuple[Path, str]], str]:
    """The IMC sets a real-photo benchmark scores on, as (root, name), and a few words on their queries.

    By default the gate's protocol, ``promote.golden_queries``: "all" = every eligible photo a query, kept in the
    database and junk to itself (leave-one-out, sets under ``work/sets_loo``); ``queries`` (or a number there) =
    that many drawn photos per scene, left out of the database (sets under ``work/sets``).
    """
    from landmark.data.imc_benchmark import build_imc_sets

    count = queries if queries is not None else cfg.promote.golden_queries
    every = count == "all"
    root = work / ("sets_loo" if every else "sets")
    summaries = build_imc_sets(imc, root, queries_per_scene=count, seed=cfg.seed)
    label = "every eligible photo a query, leave-one-out" if every else f"{count} drawn queries per scene"
    return [(root, s.name) for s in summaries], label


def eval_dir(work: Path, root: Path, name: str) -> Path:
    """Where one evaluation of set ``name`` (written under ``root``) goes below ``work``: the gate-protocol sets
    keep their old place, leave-one-out ones get their own (query descriptors are cached there)."""
    return work / name if root.name == "sets" else work / root.name / name


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, *, seed: int, resamples: int = 10000, level: float = 0.95
) -> dict[str, float]:
    """Mean of ``a - b`` over paired per-query scores and its percentile bootstrap interval (queries resampled
    with replacement), so a difference can be told from query-sampling noise."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if diff.ndim != 1 or diff.size < 2:
        raise ValueError(f"need two equal-length 1-d score arrays of >= 2 queries, got shape {diff.shape}")
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, (resamples, diff.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return {"mean": round(float(diff.mean()), 3), "low": round(float(lo), 3), "high": round(float(hi), 3),
            "level": level, "queries": int(diff.size)}  # fmt: skip


def write_result(name: str, payload: dict[str, Any], out: Path | None = None) -> Path:
    """Write ``payload`` (plus the machine description) to ``benchmarks/results/<name>.json``."""
    path = out or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps({"benchmark": name, "machine": machine(), **payload}, indent=2, default=str) + "\n"
    )
    print(json.dumps(payload, indent=2, default=str))
    print(f"written to {path}")
    return path
