"""Training that keeps real-photo quality: each lever of fine-tuning on the synthetic world, one row, measured on
a held-out real scene and on the synthetic test split.

    python benchmarks/global_quality.py [--work build/bench/global] [--held-out brandenburg_gate]
        [--variants old-default,no-whitening,...] [--set k=v]

Rows (the params.yaml training settings with the old default's neck and no real photos, plus the row's change; every trained row also gets its weight
ensemble re-chosen per run, below):

- ``pretrained``: the packaged ImageNet backbone + GeM, no training (the golden gate's version 0);
- ``old-default``: the training defaults before this table (whitened PCA neck, no real photos);
- ``no-whitening``: ``train.neck_whiten=false`` (the PCA neck keeps the pretrained geometry);
- ``distill-batch``: ``train.distill_weight=1`` (cosine to the step-0 model on the synthetic batch);
- ``backbone-lr-0.1``: ``train.backbone_lr_multiplier=0.1``;
- ``distill-real``: ``train.distill_real`` = the IMC photos of the *other* scenes (never the held-out one);
- ``no-whitening+distill-real``: both (the default since: ``neck_whiten: auto`` + the two folders);
- ``distill-x30``: ``train.distill_real_weight=30`` (at weight 1 the relational loss, ~0.04, is invisible beside
  ArcFace's 4-12; at 30 it is about half of the total).

Columns: plain-kNN medium/hard mAP on the synthetic test split and on every IMC golden set (``landmark
imc-benchmark`` protocol with the gate's queries, ``promote.golden_queries``), the held-out scene's difference from the
pretrained backbone as a paired bootstrap interval over queries, training seconds.

Weight ensembles: every run is also re-ensembled at each of ``--alphas`` (default 1, 0.75, 0.5, 0.25; rebuilt
from its plain fine-tuned weights and the zero-shot end), one row ``<row> @ alpha a`` each, scored like the
others. ``wise_alpha`` chosen per run: the rule fixed before looking picks, from the *selection* scenes (the IMC
sets other than the held-out one), the largest alpha whose medium and hard mAP on every selection set is within
``promote.golden_tolerance`` of the pretrained backbone's (the gate's own test), else the alpha with the best mean
there; the pick is in the JSON (``wise_alpha_per_run``) and marked in the table.

Descriptors are single-scale (``extract.scales=[1.0]``, to fit the CPU budget; the golden gate uses the configured
multi-scale extraction): this table compares levers, it does not quote the pipeline. Runs are cached under
``--work`` per row (one work directory per held-out scene: the distillation folders differ); delete a row's
directory to train it again. Writes ``benchmarks/results/global_quality.json`` and ``global_quality.md``
(``global_quality_<scene>.*`` for another ``--held-out``).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    REPO,
    RESULTS,
    cached_world,
    config_parser,
    eval_dir,
    golden_sets,
    paired_bootstrap,
    write_result,
)
from real_quality import PROTOCOLS, per_query_ap
from weight_ensemble import run_endpoints

from landmark.config import Config, load_config
from landmark.data.revisitop import gnd_path, read_gnd
from landmark.models.model_dir import load_model_dir, save_model_dir
from landmark.retrieval.rerank import rerank_for_steps
from landmark.stages.eval_revisitop import eval_revisitop
from landmark.stages.evaluate import evaluate
from landmark.stages.extract import extract
from landmark.stages.train import train
from landmark.training.ensemble import interpolate_weights

# every run is trained with this weight ensemble (its plain row), then re-ensembled at --alphas
RUN_ALPHA = 0.75
HELD_OUT = "brandenburg_gate"  # another held-out scene writes global_quality_<scene>.json/.md
ALPHAS = (1.0, 0.75, 0.5, 0.25)
VARIANTS = (
    "old-default",
    "no-whitening",
    "distill-batch",
    "backbone-lr-0.1",
    "distill-real",
    "no-whitening+distill-real",
)


def variant_config(cfg: Config, name: str, real_folders: tuple[str, ...]) -> Config:
    """``cfg`` with the training change of row ``name`` (``+`` joins changes)."""
    changes: dict[str, Any] = {
        "neck_whiten": True,
        "distill_real": (),
        "wise_alpha": RUN_ALPHA,
    }  # the old default, then the row's change
    for part in name.split("+"):
        changes |= {
            "old-default": {},
            "no-whitening": {"neck_whiten": False},
            "distill-batch": {"distill_weight": 1.0},
            "backbone-lr-0.1": {"backbone_lr_multiplier": 0.1},
            "distill-real": {"distill_real": real_folders},
            "distill-x30": {"distill_real_weight": 30.0},
        }[part]
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **changes))


def imc_scores(
    cfg: Config, sets: list[tuple[Path, str]], model: Path | None, work: Path, names: list[str] | None = None
) -> dict[str, dict[str, Any]]:
    """Plain-kNN medium/hard mAP and per-query APs of ``model`` on the IMC sets (``names``: a subset)."""
    scores: dict[str, dict[str, Any]] = {}
    for root, name in sets:
        if names is not None and name not in names:
            continue
        out = eval_dir(work / "imc", root, name)
        metrics = eval_revisitop(
            cfg, root, name, out, model=model, rerank_steps=("none",), features_cache=work / "imc_features",
            progress=False,
        )  # fmt: skip
        db_names, _, truths = read_gnd(gnd_path(root, name))
        ranks = np.load(out / "ranks.npy")
        scores[name] = {p: round(float(metrics["revisitop"][p]["mAP"]), 2) for p in PROTOCOLS}
        scores[name]["per_query"] = {p: per_query_ap(ranks, truths, db_names, p).tolist() for p in PROTOCOLS}
    return scores


def synthetic_scores(cfg: Config, world: Path, model: Path | None, work: Path) -> dict[str, float]:
    """Plain-kNN medium/hard mAP on the synthetic test split."""
    extract(cfg, world, work / "features", splits=("index", "test"), model_dir=model, progress=False)
    plain = dataclasses.replace(cfg, rerank=rerank_for_steps(cfg.rerank, ["none"]))
    metrics = evaluate(plain, world, work / "features", work / "eval", plots=False)
    return {p: round(float(metrics["revisitop"][p]["mAP"]), 2) for p in PROTOCOLS}


def trained(cfg: Config, world: Path, run: Path) -> tuple[Path, float | None]:
    """The run's model directory (trained unless already there) and its training seconds (from its
    metrics.json when cached)."""
    if not (run / "model" / "weights.pt").is_file():
        train(cfg, world, run / "model", work_dir=run / "model.work", resume=True, progress=False)
    metrics = json.loads((run / "model" / "metrics.json").read_text())
    return run / "model", metrics.get("train", {}).get("train_seconds")


def ensembled(cfg: Config, world: Path, run: Path, alpha: float) -> Path:
    """The run's model re-ensembled at ``alpha`` (zero-shot end rebuilt exactly as training built it); the run's
    own model at its configured ``train.wise_alpha``."""
    if alpha == cfg.train.wise_alpha:
        return run / "model"
    out = run / f"alpha_{alpha:g}" / "model"
    if (out / "weights.pt").is_file():
        return out
    zero_shot, fine_tuned = run_endpoints(cfg, world, run)
    template = load_model_dir(run / "model")
    model = copy.deepcopy(template.model)
    model.load_state_dict(interpolate_weights(zero_shot, fine_tuned, alpha))
    return save_model_dir(out, model, template.config, template.labels, {"wise_alpha": alpha})


def choose_alpha(
    by_alpha: dict[float, dict[str, dict[str, Any]]], pretrained: dict[str, dict[str, Any]], tolerance: float
) -> float:
    """The largest alpha within ``tolerance`` of ``pretrained`` on medium and hard of every selection set, else
    the alpha with the best mean of medium and hard over them."""
    for alpha in sorted(by_alpha, reverse=True):
        sets = by_alpha[alpha]
        if all(sets[s][p] >= pretrained[s][p] - tolerance for s in sets for p in PROTOCOLS):
            return alpha
    return max(by_alpha, key=lambda a: np.mean([by_alpha[a][s][p] for s in by_alpha[a] for p in PROTOCOLS]))


def row(
    synthetic: dict[str, float],
    imc: dict[str, dict[str, Any]],
    held: str,
    base: dict[str, Any] | None,
    seed: int,
) -> dict[str, Any]:
    """One table row: synthetic and per-set scores, the held-out scene minus the pretrained backbone."""
    result: dict[str, Any] = {
        "synthetic": synthetic,
        "imc": {s: {p: v[p] for p in PROTOCOLS} for s, v in imc.items()},
    }
    if base is not None:
        result["held_out_minus_pretrained"] = {
            p: paired_bootstrap(
                np.array(imc[held]["per_query"][p]), np.array(base["per_query"][p]), seed=seed
            )
            for p in PROTOCOLS
        }
    return result


def markdown(rows: dict[str, dict[str, Any]], held: str, set_names: list[str]) -> str:
    """The README table."""
    others = [s for s in set_names if s != held]
    lines = [
        f"| row | synthetic medium / hard | held-out {held} medium / hard | held-out - pretrained (medium; hard) "
        "| other scenes medium / hard | train s |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        imc = r["imc"]
        other = " ".join(f"{imc[s]['medium']:.1f}/{imc[s]['hard']:.1f}" for s in others if s in imc) or "-"
        delta = r.get("held_out_minus_pretrained")
        diff = (
            "; ".join(
                f"{delta[p]['mean']:+.1f} [{delta[p]['low']:+.1f}, {delta[p]['high']:+.1f}]"
                for p in PROTOCOLS
            )
            if delta
            else "-"
        )
        lines.append(
            f"| {name}{' (per-run rule picks it)' if r.get('rule_pick') else ''} | {r['synthetic']['medium']:.1f} / {r['synthetic']['hard']:.1f} "
            f"| {imc[held]['medium']:.1f} / {imc[held]['hard']:.1f} | {diff} | {other} | {r.get('train_seconds', '-')} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = config_parser(__doc__, REPO / "build" / "bench" / "global")
    parser.add_argument("--held-out", default=HELD_OUT, help="IMC scene never trained or tuned on")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--alphas", default=",".join(map(str, ALPHAS)))
    parser.add_argument(
        "--queries", type=int, default=None, help="drawn queries per scene (default: promote.golden_queries)"
    )
    args = parser.parse_args()
    cfg = load_config(args.params, [*args.overrides, "extract.scales=[1.0]"])
    work: Path = args.work
    world = cached_world(cfg, work)
    imc = REPO / cfg.paths.imc
    sets, protocol = golden_sets(cfg, imc, work, args.queries)
    names = [n for _, n in sets]
    held = f"imc_{args.held_out}"
    if held not in names:
        raise SystemExit(f"--held-out {args.held_out}: no set {held} among {names}")
    selection = [n for n in names if n != held]
    real = tuple(str(imc / n.removeprefix("imc_") / "images") for n in selection)
    alphas = tuple(float(a) for a in args.alphas.split(","))

    base_work = work / "runs" / "pretrained"
    base_imc = imc_scores(cfg, sets, None, base_work)
    rows = {"pretrained": row(synthetic_scores(cfg, world, None, base_work), base_imc, held, None, cfg.seed)}
    chosen: dict[str, Any] = {}
    for name in args.variants.split(","):
        run_cfg = variant_config(cfg, name, real)
        run = work / "runs" / name
        start = time.perf_counter()
        model, seconds = trained(run_cfg, world, run)
        rows[name] = row(
            synthetic_scores(run_cfg, world, model, run),
            imc_scores(run_cfg, sets, model, run),
            held,
            base_imc[held],
            cfg.seed,
        )
        rows[name]["train_seconds"] = seconds
        by_alpha, labels = {}, {}
        for alpha in alphas:
            alpha_dir = ensembled(run_cfg, world, run, alpha)
            label = name if alpha_dir == model else f"{name} @ alpha {alpha:g}"
            if label not in rows:
                rows[label] = row(
                    synthetic_scores(run_cfg, world, alpha_dir, alpha_dir.parent),
                    imc_scores(run_cfg, sets, alpha_dir, alpha_dir.parent),
                    held, base_imc[held], cfg.seed,
                )  # fmt: skip
            by_alpha[alpha] = {s: rows[label]["imc"][s] for s in selection}
            labels[alpha] = label
        pick = choose_alpha(by_alpha, {s: base_imc[s] for s in selection}, cfg.promote.golden_tolerance)
        rows[labels[pick]]["rule_pick"] = True
        chosen[name] = {"alpha": pick, "selection": {f"{a:g}": by_alpha[a] for a in alphas}}
        print(
            json.dumps(
                {
                    name: rows[name],
                    "chosen": chosen[name]["alpha"],
                    "seconds": round(time.perf_counter() - start),
                }
            ),
            flush=True,
        )
    table = markdown(rows, held, names)
    name = "global_quality" if args.held_out == HELD_OUT else f"global_quality_{args.held_out}"
    (RESULTS / f"{name}.md").write_text(
        f"## Training levers: held-out real scene ({args.held_out}) and the synthetic test split, plain kNN "
        f"mAP (single-scale descriptors)\n\n{table}\n"
    )
    write_result(
        name,
        {
            "protocol": protocol,
            "what": "training levers that keep real-photo quality (held-out IMC scene) while gaining on synthetic",
            "held_out": held,
            "selection_sets": selection,
            "distill_real_folders": [
                str(Path(f).relative_to(REPO.parent)) if Path(f).is_relative_to(REPO.parent) else f
                for f in real
            ],
            "alpha_rule": "largest alpha within promote.golden_tolerance of pretrained on every selection set",
            "tolerance": cfg.promote.golden_tolerance,
            "extract": {"image_size": cfg.extract.image_size, "scales": list(cfg.extract.scales)},
            "train": json.loads(json.dumps(dataclasses.asdict(cfg.train))),
            "rows": rows,
            "wise_alpha_per_run": chosen,
            "table": table,
        },
    )


if __name__ == "__main__":
    main()
