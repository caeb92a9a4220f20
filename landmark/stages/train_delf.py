"""Stage ``train_delf``: train the DELF local-feature model on the (cleaned) train split, write its directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from landmark.config import Config, resolve_device
from landmark.data.bad_images import BadImage
from landmark.models.delf_dir import save_delf_dir
from landmark.training.delf import LOG
from landmark.training.delf import train_delf as run_training
from landmark.training.training_set import checked_training_set


@dataclass(frozen=True)
class TrainDelfSummary:
    """Where the DELF model went and how training ended."""

    model_dir: Path
    classes: int
    images: int
    dropped_classes: int
    descriptor_steps: int
    attention_steps: int
    attention_first_loss: float  # mean loss of the attention phase's first epoch
    attention_last_loss: float  # ... and of its last epoch
    pca_descriptors: int
    seconds: float
    bad_images: tuple[BadImage, ...] = ()  # left out as undecodable (the model's quarantined.json)


def train_delf(
    cfg: Config,
    data_dir: Path,
    out_dir: Path,
    *,
    manifest: Path | None = None,
    work_dir: Path | None = None,
    fmt: str = "auto",
    progress: bool = True,
) -> TrainDelfSummary:
    """Train DELF on ``data_dir``'s train split (or the given ``manifest``) and write a DELF model directory.

    The per-step log goes to ``work_dir`` (default ``<out_dir>.work``) and is copied into the model directory.

    Raises:
        ValueError: fewer than 2 classes with ``delf.min_images_per_class`` images, or too few images.
        TooManyBadImagesError: more than ``train.max_bad_share`` of the images cannot be decoded (fewer are left
            out and recorded in ``quarantined.json`` in the work and model directories).
    """
    out_dir = Path(out_dir)
    work = Path(work_dir) if work_dir is not None else out_dir.with_name(out_dir.name + ".work")
    data = checked_training_set(
        cfg, data_dir, manifest, fmt, cfg.delf.min_images_per_class, "train_delf", record_in=work,
        workers=cfg.delf.workers,
    )  # fmt: skip
    items, labels, dropped, bad = data.items, data.labels, data.dropped_classes, data.bad_images
    result = run_training(
        items,
        len(labels),
        cfg.delf,
        work,
        seed=cfg.seed,
        device=resolve_device(cfg.device),
        progress=progress,
    )
    save_delf_dir(
        out_dir, result.model, result.pca, cfg.delf, labels, {"train": {**result.metrics(), **data.counts()}},
        extra_config={"seed": cfg.seed, "data": str(data_dir), "manifest": str(manifest) if manifest else None},
        extra_files=[work / LOG, *data.record_files(work)],
    )  # fmt: skip
    return TrainDelfSummary(
        model_dir=out_dir,
        classes=len(labels),
        images=len(items),
        dropped_classes=dropped,
        descriptor_steps=result.descriptor.steps if result.descriptor else 0,
        attention_steps=result.attention.steps,
        attention_first_loss=result.attention.first_epoch_loss,
        attention_last_loss=result.attention.last_epoch_loss,
        pca_descriptors=result.pca_descriptors,
        seconds=result.seconds,
        bad_images=tuple(bad),
    )
