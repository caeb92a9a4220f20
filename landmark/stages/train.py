"""Stage ``train``: fine-tune the global descriptor model on the (cleaned) train split.

Images the manifest has no size for (a dataset read straight from disk, not ingested) are decoded once before
training, in ``train.workers`` processes: an undecodable one is left out before the epoch plan is made (so the run
equals one without it), recorded in ``quarantined.json`` in the work and model directories, and counted; more than
``train.max_bad_share`` of them stops training before it starts. Ingested rows were decoded at ingestion.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from landmark.config import Config, config_to_dict, resolve_device
from landmark.data.bad_images import BadImage
from landmark.models.model_dir import save_model_dir
from landmark.training.loop import ensemble_weights, train_global_model, training_metrics
from landmark.training.trainer import LOG, launcher_rank
from landmark.training.training_set import checked_training_set


@dataclass(frozen=True)
class TrainSummary:
    """Where the model went and how training ended."""

    model_dir: Path | None  # None on non-zero ranks of a distributed run
    classes: int
    images: int
    dropped_classes: int
    steps: int
    final_loss: float
    final_accuracy: float
    seconds: float
    bad_images: tuple[BadImage, ...] = ()  # left out as undecodable (the model's quarantined.json)


def train(
    cfg: Config,
    data_dir: Path,
    out_dir: Path,
    *,
    manifest: Path | None = None,
    work_dir: Path | None = None,
    resume: bool = False,
    fmt: str = "auto",
    progress: bool = True,
) -> TrainSummary:
    """Train on ``data_dir``'s train split (or the given cleaned ``manifest``) and write a model directory.

    Checkpoints and the per-step log go to ``work_dir`` (default: ``<out_dir>.work``); ``resume`` continues a
    killed run from its last checkpoint. Undecodable images are left out and recorded (module docstring).

    Raises:
        TooManyBadImagesError: more than ``train.max_bad_share`` of the labelled images cannot be decoded
            (checked before training; the record is in the work directory).
    """
    out_dir = Path(out_dir)
    work = Path(work_dir) if work_dir is not None else out_dir.with_name(out_dir.name + ".work")
    is_main = launcher_rank() == 0  # torchrun's rank: the process group lives only while training
    data = checked_training_set(
        cfg, data_dir, manifest, fmt, cfg.train.min_images_per_class, "train",
        record_in=work if is_main else None, workers=cfg.train.workers,
    )  # fmt: skip
    items, labels, dropped, bad = data.items, data.labels, data.dropped_classes, data.bad_images
    result = train_global_model(
        items, len(labels), cfg.model, cfg.train, work,
        seed=cfg.seed, device=resolve_device(cfg.device), resume=resume, progress=progress,
    )  # fmt: skip
    if is_main:
        ensemble_weights(result, cfg.train.wise_alpha)  # WiSE-FT: a step of its own after training
        save_model_dir(
            out_dir, result.model, cfg.model, labels,
            metrics={"train": training_metrics(result, data.counts())},
            extra_config={"train": config_to_dict(cfg.train), "seed": cfg.seed, "data": str(data_dir)},
            head=result.head, extra_files=[work / LOG, *data.record_files(work)],
        )  # fmt: skip
    return TrainSummary(
        model_dir=out_dir if is_main else None,
        classes=len(labels),
        images=len(items),
        dropped_classes=dropped,
        steps=result.steps,
        final_loss=result.final_loss,
        final_accuracy=result.final_accuracy,
        seconds=result.seconds,
        bad_images=tuple(bad),
    )
