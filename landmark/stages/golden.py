"""Stage ``golden``: a model's retrieval quality on the golden real-photo benchmarks the promotion gate protects.

The golden sets are ``promote.golden``: ``imc`` stands for the Revisited-format sets built from the IMC photos at
``paths.imc`` with the pose-based protocol (one set per held-out scene, :mod:`landmark.data.imc_benchmark`;
built once under ``<paths.golden>/sets``; by default leave-one-out, every eligible photo a query), any other
entry is a ``DIR/NAME`` Revisited Oxford/Paris-format set. Each set is evaluated with
:func:`landmark.retrieval.revisitop_eval.evaluate_revisitop` (global descriptors + the configured DBA/alpha-QE;
the same code as ``landmark eval-revisitop``), and ``<out>/golden.json`` holds medium and hard mAP per set. A
model's results are cached under ``<paths.golden>/results/<model key>.json`` (the key hashes its weights and the
settings that change the numbers; each set's entry also records its ground truth's hash), so production, which
is last night's candidate, is not evaluated twice. A missing IMC directory is a note, not an error: the gate then
has no golden set to check.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from landmark.config import Config, config_to_dict
from landmark.data.atomic import atomic_path, write_json
from landmark.data.imc_benchmark import build_imc_sets
from landmark.data.revisitop import gnd_path
from landmark.retrieval.revisitop_eval import evaluate_revisitop

GOLDEN_FILE = "golden.json"
IMC = "imc"
SETS_RECORD = "sets.json"
MODEL_FILES = ("config.json", "weights.pt", "pretrained.json")


def model_key(cfg: Config, model_dir: Path) -> str:
    """A short hash of what decides a model's golden numbers: its files and the extraction/retrieval settings."""
    digest = hashlib.sha1(usedforsecurity=False)
    for name in MODEL_FILES:
        path = Path(model_dir) / name
        if path.is_file():
            digest.update(name.encode())
            digest.update(hashlib.sha1(path.read_bytes(), usedforsecurity=False).digest())
    settings = {
        "extract": {"image_size": cfg.extract.image_size, "scales": list(cfg.extract.scales)},
        "rerank": config_to_dict(cfg.rerank),
        "kappas": list(cfg.evaluate.kappas),
        "seed": cfg.seed,
    }
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def imc_sets(cfg: Config) -> tuple[list[tuple[Path, str]], str]:
    """The ``imc`` golden sets as (root, name), built under ``<paths.golden>/sets`` unless already built from the
    same photos with the same settings; ``([], note)`` when there are no IMC photos."""
    imc = Path(cfg.paths.imc)
    if not imc.is_dir():
        return [], f"golden 'imc': no IMC photos at {imc} (paths.imc): not checked"
    root = Path(cfg.paths.golden) / "sets"
    wanted = {"imc": str(imc.resolve()), "queries": cfg.promote.golden_queries, "seed": cfg.seed}
    record = root / SETS_RECORD
    built = json.loads(record.read_text()) if record.is_file() else {}
    if {k: built.get(k) for k in wanted} != wanted:
        summaries = build_imc_sets(imc, root, queries_per_scene=cfg.promote.golden_queries, seed=cfg.seed)
        built = {**wanted, "sets": [s.name for s in summaries]}
        with atomic_path(record) as tmp:
            tmp.write_text(json.dumps(built, indent=2) + "\n")
    return [(root, str(name)) for name in built["sets"]], ""


def golden_sets(cfg: Config) -> tuple[list[tuple[Path, str]], list[str]]:
    """(root, name) of every golden set of ``promote.golden``, and notes on those that are not there."""
    sets: list[tuple[Path, str]] = []
    notes: list[str] = []
    for spec in cfg.promote.golden:
        if spec == IMC:
            found, note = imc_sets(cfg)
            sets += found
            notes += [note] if note else []
            continue
        path = Path(spec)
        if gnd_path(path.parent, path.name).is_file():
            sets.append((path.parent, path.name))
        else:
            notes.append(f"golden {spec!r}: no {gnd_path(path.parent, path.name)}: not checked")
    return sets, notes


def gnd_digest(root: Path, name: str) -> str:
    """A short hash of a set's ground-truth file: a cached score counts only for the queries it was scored on."""
    return hashlib.sha1(gnd_path(root, name).read_bytes(), usedforsecurity=False).hexdigest()[:16]


def set_scores(metrics: dict[str, Any]) -> dict[str, float]:
    """Medium and hard mAP (percent) and the query count of one :func:`evaluate_revisitop` result."""
    revisitop = metrics["revisitop"]
    return {
        "medium": round(float(revisitop["medium"]["mAP"]), 3),
        "hard": round(float(revisitop["hard"]["mAP"]), 3),
        "queries": int(metrics["n_queries"]),
    }


def golden(cfg: Config, model_dir: Path, out_dir: Path, *, progress: bool = True) -> dict[str, Any]:
    """Score ``model_dir`` on every golden set; writes and returns ``<out_dir>/golden.json``.

    Returns:
        ``{"model_key", "sets": {name: {"medium", "hard", "queries"}}, "notes", "cached"}``.

    Raises:
        FileNotFoundError: ``model_dir`` is not a directory.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model directory {model_dir} not found")
    sets, notes = golden_sets(cfg)
    key = model_key(cfg, model_dir)
    names = [name for _, name in sets]
    cache = Path(cfg.paths.golden) / "results" / f"{key}.json"
    cached = json.loads(cache.read_text()) if cache.is_file() else {}
    digests = {name: gnd_digest(root, name) for root, name in sets}
    scores = {n: cached[n] for n in names if n in cached and cached[n].get("gnd") == digests[n]}
    from_cache = sorted(scores)
    for root, name in sets:
        if name in scores:
            continue
        metrics = evaluate_revisitop(
            cfg,
            root,
            name,
            Path(out_dir) / name,
            model=model_dir,
            features_cache=Path(cfg.paths.golden) / "features" / key,
            progress=progress,
        )
        scores[name] = {**set_scores(metrics), "gnd": digests[name]}
        write_json(cache, {**cached, **scores})
    result = {
        "model_key": key,
        "sets": {n: {k: v for k, v in scores[n].items() if k != "gnd"} for n in names},
        "notes": notes,
        "cached": from_cache,
    }
    write_json(Path(out_dir) / GOLDEN_FILE, result)
    return result
