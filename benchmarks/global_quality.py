"""Fine-tuned vs off-the-shelf global descriptors: revisited medium/hard mAP on the synthetic default, and
within-set retrieval mAP on the shared IMC photos (3 real landmarks), which fine-tuning must not make worse.

    python benchmarks/global_quality.py [--work build/bench/global] [--imc-per-scene 60] [--set train.epochs=4]

Intermediate outputs (world, features, model) are cached under --work; delete it to start over.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cached_world, config_parser, paired_bootstrap, write_result

from landmark.config import Config, load_config, resolve_device
from landmark.features.global_desc import ImageItem, iter_descriptors
from landmark.metrics import revisitop_map
from landmark.models.model_dir import descriptor_model
from landmark.stages.evaluate import evaluate, rerank_for_steps, retrieval_ranks
from landmark.stages.extract import extract
from landmark.stages.train import train

REPO = Path(__file__).resolve().parents[1]
IMC = REPO.parent / "shared" / "data" / "imc2022-landmarks"


def synthetic_map(
    cfg: Config, world: Path, features: Path, out: Path, model_dir: Path | None
) -> dict[str, Any]:
    """Revisited mAP of plain kNN retrieval and of the full configured re-ranking pipeline."""
    extract(cfg, world, features, model_dir=model_dir)
    plain = dataclasses.replace(cfg, rerank=rerank_for_steps(cfg.rerank, ["none"]))  # plain kNN
    result: dict[str, Any] = {}
    for name, run_cfg in (("knn", plain), ("reranked", cfg)):
        metrics = evaluate(run_cfg, world, features, out / name)
        result[name] = {p: metrics["revisitop"][p]["mAP"] for p in ("easy", "medium", "hard")}
        result[name]["gldv2_mAP@100"] = metrics.get("gldv2_retrieval", {}).get("mAP@100")
        result[name]["GAP"] = metrics.get("recognition", {}).get("GAP")
    return result


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


def imc_map(cfg: Config, items: list[ImageItem], labels: np.ndarray, model_dir: Path | None) -> float:
    """Mean of :func:`imc_aps`, in percent."""
    return round(float(imc_aps(cfg, items, labels, model_dir).mean()), 3)


def main() -> None:
    parser = config_parser(__doc__, REPO / "build" / "bench" / "global")
    parser.add_argument("--imc-per-scene", type=int, default=60)
    args = parser.parse_args()
    cfg = load_config(args.params, args.overrides)
    work: Path = args.work
    world = cached_world(cfg, work)

    result: dict[str, Any] = {"config": {"train": cfg.train.__dict__, "model": cfg.model.__dict__}}
    result["synthetic_pretrained"] = synthetic_map(
        cfg, world, work / "feat_pretrained", work / "eval_pretrained", None
    )
    model_dir = work / "model"
    start = time.perf_counter()
    if not (model_dir / "weights.pt").exists():
        summary = train(cfg, world, model_dir, work_dir=work / "model.work", resume=True)
        result["train_seconds"] = round(summary.seconds, 1)
        result["train_steps"] = summary.steps
    else:
        result["train_seconds"] = "cached"
    result["train_wall_seconds"] = round(time.perf_counter() - start, 1)
    result["synthetic_finetuned"] = synthetic_map(
        cfg, world, work / "feat_finetuned", work / "eval_finetuned", model_dir
    )
    if IMC.is_dir():
        items, labels = imc_items(args.imc_per_scene)
        result["imc_images"] = len(items)
        pretrained, finetuned = (imc_aps(cfg, items, labels, m) for m in (None, model_dir))
        result["imc_pretrained_map"] = round(float(pretrained.mean()), 3)
        result["imc_finetuned_map"] = round(float(finetuned.mean()), 3)
        result["imc_difference"] = paired_bootstrap(finetuned, pretrained, seed=cfg.seed)
    write_result("global_quality", result)


if __name__ == "__main__":
    main()
