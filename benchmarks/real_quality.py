"""Real photos, side by side: the default retrieval pipeline beside the peers on the IMC golden sets.

Rows (each on every ``imc_<scene>`` set of ``landmark imc-benchmark``; every scene is held out, nothing here is
trained or tuned on IMC photos except the re-ranking default chosen by ``rerank_ablation.py``'s held-out rule):

- pretrained GeM (kNN); GeM + DBA/alpha-QE with 1, 2, 3 and 5 neighbours; GeM + SIFT spatial verification;
- the default pipeline (``rerank:`` as configured, with spatial verification) with the pretrained backbone;
- with ``--model DIR``: the trained model, kNN and with the default pipeline.

The sets use the gate's protocol (``promote.golden_queries``; by default leave-one-out, 663 queries), or
``--queries N`` drawn queries per scene. For each row: medium and hard mAP per set and over all queries,
milliseconds per query of the re-ranking, and the default pipeline minus the row as a paired bootstrap interval
over all queries and over each set's (medium and hard AP per query). Writes ``benchmarks/results/real_quality.json``
and ``real_quality.md`` (``real_quality_qN.*`` with ``--queries N``).

    python benchmarks/real_quality.py [--imc ../shared/data/imc2022-landmarks] [--model build/models/candidate]
        [--queries N] [--work build/bench/real_quality]
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, RESULTS, config_parser, eval_dir, golden_sets, paired_bootstrap, write_result

from landmark.config import Config, load_config

PROTOCOLS = ("medium", "hard")
PEER_NEIGHBOURS = (1, 2, 3, 5)


@dataclasses.dataclass(frozen=True)
class Row:
    """One configuration: a name, the model (None = pretrained), re-ranking steps (None = the configured
    default), spatial verification, and the DBA/QE neighbour count for the peers (None = as configured)."""

    name: str
    model: Path | None
    steps: tuple[str, ...] | None
    spatial: bool
    neighbours: int | None = None


def rows(model: Path | None) -> list[Row]:
    """The default pipeline first, then the peers."""
    found = [Row("default pipeline (pretrained)", None, None, True)]
    found += [Row("GeM (kNN)", None, ("none",), False)]
    found += [Row(f"GeM + DBA/alpha-QE n={n}", None, ("dba", "qe"), False, n) for n in PEER_NEIGHBOURS]
    found += [Row("GeM + SIFT verification", None, ("none",), True)]
    if model is not None:
        found += [
            Row("trained (kNN)", model, ("none",), False),
            Row("default pipeline (trained)", model, None, True),
        ]
    return found


def row_config(cfg: Config, row: Row) -> Config:
    """The config of one row: plain DBA/alpha-QE with ``row.neighbours`` for the peers."""
    if row.neighbours is None:
        return cfg
    rerank = dataclasses.replace(
        cfg.rerank, adaptive_n=False, dba_n=row.neighbours, qe_n=row.neighbours, graph="none"
    )
    return dataclasses.replace(cfg, rerank=rerank)


def per_query_ap(
    ranks: np.ndarray, truths: Sequence[Any], db_names: Sequence[str], protocol: str
) -> np.ndarray:
    """(n_queries,) average precision (percent) of each query under one revisited protocol."""
    from landmark.retrieval.metrics import gnd_indices, revisitop_map

    gnd = gnd_indices(truths, db_names)
    values = []
    for q in range(ranks.shape[1]):
        result = revisitop_map(ranks[:, q : q + 1], [gnd[q]], kappas=(1,))
        values.append(100.0 * float(result[protocol].map))  # in [0, 1]; a query without positives gives 0
    return np.asarray(values, dtype=np.float64)


def run_row(cfg: Config, row: Row, sets: Sequence[tuple[Path, str]], work: Path) -> dict[str, Any]:
    """Evaluate one row on every set: mAPs, per-query APs, re-ranking time per query."""
    from landmark.data.revisitop import gnd_path, read_gnd
    from landmark.stages.eval_revisitop import eval_revisitop

    tag = "pretrained" if row.model is None else "trained"
    result: dict[str, Any] = {"sets": {}, "per_query": {p: [] for p in PROTOCOLS}}
    for root, name in sets:
        out = eval_dir(work / "runs" / row.name.replace(" ", "_").replace("/", "-"), root, name)
        metrics = eval_revisitop(
            row_config(cfg, row),
            root,
            name,
            out,
            model=row.model,
            rerank_steps=row.steps,
            spatial=row.spatial,
            local_cache=work / "local",
            features_cache=work / "features" / tag,
            progress=False,
        )
        db_names, _, truths = read_gnd(gnd_path(root, name))
        ranks = np.load(out / "ranks.npy")
        seconds = sum(float(v) for v in metrics["rerank"]["seconds"].values())
        result["sets"][name] = {
            **{p: round(float(metrics["revisitop"][p]["mAP"]), 2) for p in PROTOCOLS},
            "ms_per_query": round(1000 * seconds / max(1, metrics["n_queries"]), 2),
        }
        by_set = {p: per_query_ap(ranks, truths, db_names, p).tolist() for p in PROTOCOLS}
        result["sets"][name]["per_query"] = by_set
        for p in PROTOCOLS:
            result["per_query"][p] += by_set[p]
    for p in PROTOCOLS:
        result[p] = round(float(np.mean(result["per_query"][p])), 2)
    return result


def strip_per_query(row: dict[str, Any]) -> dict[str, Any]:
    """A row for the JSON: the scores without the per-query lists."""
    sets = {s: {k: v for k, v in scores.items() if k != "per_query"} for s, scores in row["sets"].items()}
    return {**{k: v for k, v in row.items() if k != "per_query"}, "sets": sets}


def difference(mine: dict[str, list[float]], theirs: dict[str, list[float]], seed: int) -> dict[str, Any]:
    """Per protocol: the paired bootstrap of ``mine - theirs`` over the same queries."""
    return {p: paired_bootstrap(np.array(mine[p]), np.array(theirs[p]), seed=seed) for p in PROTOCOLS}


def comparisons(results: dict[str, dict[str, Any]], reference: str, seed: int) -> dict[str, Any]:
    """``reference`` minus every other row, per protocol, paired over all queries and over each set's."""
    mine = results[reference]
    return {
        name: {
            **difference(mine["per_query"], r["per_query"], seed),
            "sets": {
                s: difference(v["per_query"], r["sets"][s]["per_query"], seed)
                for s, v in mine["sets"].items()
            },
        }
        for name, r in results.items()
        if name != reference
    }


def interval(d: dict[str, Any]) -> str:
    """ "+m [lo, hi]; +m [lo, hi]" for medium and hard."""
    return "; ".join(f"{d[p]['mean']:+.1f} [{d[p]['low']:+.1f}, {d[p]['high']:+.1f}]" for p in PROTOCOLS)


def markdown(results: dict[str, dict[str, Any]], versus: dict[str, Any], set_names: Sequence[str]) -> str:
    """The README table: medium / hard per set, over all queries, ms per query, and default minus the row."""
    head = "| row | " + " | ".join(set_names) + " | all queries | ms/query | default - row (medium; hard) |"
    lines = [head, "|---|" + "---|" * (len(set_names) + 3)]
    for name, r in results.items():
        cells = [f"{r['sets'][s]['medium']:.1f} / {r['sets'][s]['hard']:.1f}" for s in set_names]
        ms = np.mean([r["sets"][s]["ms_per_query"] for s in set_names])
        delta = interval(versus[name]) if name in versus else "(reference)"
        lines.append(
            f"| {name} | "
            + " | ".join(cells)
            + f" | {r['medium']:.1f} / {r['hard']:.1f} | {ms:.1f} | {delta} |"
        )
    lines += ["", "Per set, default - row (medium; hard), paired over the set's queries:", ""]
    lines += ["| row | " + " | ".join(set_names) + " |", "|---|" + "---|" * len(set_names)]
    for name, d in versus.items():
        lines.append(f"| {name} | " + " | ".join(interval(d["sets"][s]) for s in set_names) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = config_parser(__doc__, REPO / "build" / "bench" / "real_quality")
    parser.add_argument("--imc", type=Path, default=None, help="IMC photos (default: paths.imc)")
    parser.add_argument("--model", type=Path, default=None, help="a trained model directory to add")
    parser.add_argument(
        "--queries",
        type=int,
        default=None,
        help="N drawn queries per scene, left out of the database (writes real_quality_qN.*; default: the gate's protocol)",
    )
    args = parser.parse_args()
    cfg = load_config(args.params, args.overrides)
    imc = args.imc or (REPO / cfg.paths.imc)
    sets, protocol = golden_sets(cfg, imc, args.work, args.queries)
    results = {row.name: run_row(cfg, row, sets, args.work) for row in rows(args.model)}
    reference = "default pipeline (trained)" if args.model is not None else "default pipeline (pretrained)"
    versus = comparisons(results, reference, cfg.seed)
    table = markdown(results, versus, [name for _, name in sets])
    name = "real_quality" if args.queries is None else f"real_quality_q{args.queries}"
    (RESULTS / f"{name}.md").write_text(
        f"## Real photos: IMC golden sets ({protocol}), medium / hard mAP\n\n{table}\n"
    )
    write_result(
        name,
        {
            "protocol": protocol,
            "what": "default pipeline vs peers on the IMC held-out-scene sets (landmark imc-benchmark)",
            "reference": reference,
            "rerank_default": json.loads(json.dumps(dataclasses.asdict(cfg.rerank))),
            "extract": {"image_size": cfg.extract.image_size, "scales": list(cfg.extract.scales)},
            "model": str(args.model) if args.model else None,
            "rows": {k: strip_per_query(v) for k, v in results.items()},
            "default_minus_row": versus,
            "table": table,
        },
    )


if __name__ == "__main__":
    main()
