"""The weight-ensemble curve (WiSE-FT): synthetic and real-photo retrieval along the line from the zero-shot
model (alpha 0) to the fine-tuned one (alpha 1), from one training run. The configured train.wise_alpha is
one point on it.

    python benchmarks/weight_ensemble.py [--work build/bench/global] [--alphas 0,0.25,0.5,0.75,1] [--set k=v]

It shares --work with global_quality.py: the world and the training run (its last checkpoint holds the plain
fine-tuned weights) are reused when present. Synthetic mAP is plain kNN over the index split (no re-ranking);
IMC is within-set retrieval of the shared photos, with a paired bootstrap interval of each point's difference
from the pretrained backbone. Writes weight_ensemble.json and weight_ensemble.png.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, cached_world, config_parser, paired_bootstrap, write_result

from landmark.config import Config, load_config, resolve_device
from landmark.features.global_desc import ImageItem, iter_descriptors
from landmark.models.global_model import create_global_model
from landmark.models.model_dir import descriptor_model, load_model_dir, save_model_dir
from landmark.retrieval.index import retrieval_ranks
from landmark.retrieval.metrics import revisitop_map
from landmark.retrieval.rerank import rerank_for_steps
from landmark.stages.evaluate import evaluate
from landmark.stages.extract import extract
from landmark.stages.train import train
from landmark.training.ensemble import interpolate_weights, zero_shot_state
from landmark.training.loop import _init_neck
from landmark.training.trainer import CHECKPOINT
from landmark.training.training_set import checked_training_set

REPO = Path(__file__).resolve().parents[1]
IMC = REPO.parent / "shared" / "data" / "imc2022-landmarks"
ImcSet = tuple[list[ImageItem], np.ndarray]


def imc_items(per_scene: int) -> tuple[list[ImageItem], np.ndarray]:
    """Up to ``per_scene`` photos of each IMC scene (sorted ids) and their scene labels."""
    from landmark.data.imc import read_imc

    dataset = read_imc(IMC)
    frame = dataset.manifest("train")
    items, labels = [], []
    for label, group in frame[frame["status"] == "ok"].groupby("landmark_id"):
        for image_id in sorted(group["image_id"])[:per_scene]:
            items.append(ImageItem(image_id, dataset.image_path("train", image_id)))
            labels.append(int(label))  # type: ignore[call-overload]
    return items, np.array(labels)


def imc_aps(cfg: Config, items: list[ImageItem], labels: np.ndarray, model_dir: Path | None) -> np.ndarray:
    """Every photo queries all others; positives = same landmark; the query itself is junk. AP per query (%)."""
    model, _ = descriptor_model(cfg.model, model_dir)
    rows = dict(
        pair for ids, desc in iter_descriptors(model, items, cfg.extract, resolve_device(cfg.device), progress=True)
        for pair in zip(ids, desc, strict=True)
    )  # fmt: skip
    desc = np.stack([rows[i.image_id] for i in items])
    ranks = retrieval_ranks(desc, desc)
    aps = []
    for q in range(len(items)):
        gnd = {
            "easy": [int(j) for j in np.flatnonzero(labels == labels[q]) if j != q],
            "hard": [],
            "junk": [q],
        }
        aps.append(100.0 * revisitop_map(ranks[:, q : q + 1], [gnd])["easy"].map)
    return np.array(aps)


def run_endpoints(
    cfg: Config, world: Path, run: Path
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The zero-shot and the plain fine-tuned state dicts of the finished training run under ``run``
    (``run/model.work`` holds its last checkpoint); the zero-shot end is rebuilt exactly as training built it."""
    payload = torch.load(run / "model.work" / CHECKPOINT, map_location="cpu", weights_only=False)
    fine_tuned = {k[len("model.") :]: v for k, v in payload["module"].items() if k.startswith("model.")}
    items = checked_training_set(
        cfg, world, None, "auto", cfg.train.min_images_per_class, "the benchmark", record_in=None
    ).items
    torch.manual_seed(cfg.seed)  # the step-0 model exactly as training built it
    step0 = create_global_model(cfg.model)
    _init_neck(step0, items, cfg.train, cfg.seed, "cpu", distilling=bool(cfg.train.distill_real))
    return zero_shot_state(step0), fine_tuned


def endpoints(
    cfg: Config, world: Path, work: Path
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """:func:`run_endpoints` of the run under ``work``, trained first if missing."""
    if not (work / "model" / "weights.pt").exists():
        train(cfg, world, work / "model", work_dir=work / "model.work", resume=True)
    return run_endpoints(cfg, world, work)


def point(
    cfg: Config, world: Path, model_dir: Path | None, out: Path, imc: ImcSet | None
) -> tuple[dict[str, Any], np.ndarray | None]:
    """Plain-kNN revisited mAP on the synthetic world, and the per-query IMC APs, of one model directory (None:
    the pretrained backbone)."""
    extract(cfg, world, out / "features", splits=("index", "test"), model_dir=model_dir, progress=False)
    plain = dataclasses.replace(cfg, rerank=rerank_for_steps(cfg.rerank, ["none"]))
    metrics = evaluate(plain, world, out / "features", out / "eval", plots=False)
    result: dict[str, Any] = {p: round(metrics["revisitop"][p]["mAP"], 3) for p in ("easy", "medium", "hard")}
    if imc is None:
        return result, None
    aps = imc_aps(cfg, *imc, model_dir)
    result["imc"] = round(float(aps.mean()), 3)
    return result, aps


def plot(points: list[dict[str, Any]], pretrained: dict[str, Any], path: Path) -> None:
    """Synthetic medium/hard mAP against IMC mAP along the curve, with the pretrained backbone for reference."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for protocol, colour in (("medium", "tab:blue"), ("hard", "tab:red")):
        ax.plot([p["imc"] for p in points], [p[protocol] for p in points], "o-", color=colour, label=protocol)
        for p in points:
            ax.annotate(f"{p['alpha']:g}", (p["imc"], p[protocol]), textcoords="offset points", xytext=(4, 4))
        ax.plot(
            pretrained["imc"], pretrained[protocol], "*", ms=14, color=colour, label=f"pretrained, {protocol}"
        )
    ax.set_xlabel("IMC real photos: mAP (%)")
    ax.set_ylabel("synthetic test queries: mAP (%)")
    ax.set_title("weight ensemble: zero-shot (alpha 0) to fine-tuned (alpha 1)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = config_parser(__doc__, REPO / "build" / "bench" / "global")
    parser.add_argument("--alphas", default="0,0.25,0.5,0.75,1")
    parser.add_argument("--imc-per-scene", type=int, default=60)
    args = parser.parse_args()
    cfg = load_config(args.params, args.overrides)
    work: Path = args.work
    world = cached_world(cfg, work)
    imc = imc_items(args.imc_per_scene) if IMC.is_dir() else None
    zero_shot, fine_tuned = endpoints(cfg, world, work)
    template = load_model_dir(work / "model")
    sweep = work / "ensemble"
    pretrained, pretrained_aps = point(cfg, world, None, sweep / "pretrained", imc)
    points = []
    for alpha in sorted(float(a) for a in args.alphas.split(",")):
        model = copy.deepcopy(template.model)
        model.load_state_dict(interpolate_weights(zero_shot, fine_tuned, alpha))
        out = sweep / f"alpha_{alpha:g}"
        model_dir = save_model_dir(out / "model", model, template.config, template.labels, {})
        scores, aps = point(cfg, world, model_dir, out, imc)
        if aps is not None and pretrained_aps is not None:
            scores["imc_minus_pretrained"] = paired_bootstrap(aps, pretrained_aps, seed=cfg.seed)
        points.append({"alpha": alpha, **scores})
        print(points[-1], flush=True)
    if imc is not None:
        plot(points, pretrained, RESULTS / "weight_ensemble.png")
    result = {
        "config": {"train": cfg.train.__dict__, "extract_scales": list(cfg.extract.scales)},
        "pretrained": pretrained,
        "points": points,
    }
    write_result("weight_ensemble", result)


if __name__ == "__main__":
    main()
