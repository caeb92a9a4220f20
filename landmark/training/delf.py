"""DELF training with image-level labels, in the two phases of Noh et al. (2017), then the descriptor PCA.

1. Descriptor phase: fine-tune the backbone (its leading ``frozen_fraction`` stays frozen, BatchNorm statistics
   of frozen layers too) with a classifier on globally average-pooled stride-16 features, cross-entropy.
2. Attention phase: the whole backbone frozen (eval mode); train the attention head and a classifier (started
   from the descriptor phase's) on the attention-weighted average of the L2-normalised features,
   cross-entropy. The attention learns which cells help recognition.
3. PCA: DELF descriptors (pyramid, attention selection) of a seeded subset of training images, L2-normalised,
   fitted with ``pca_dim`` directions.

Batches keep the aspect ratio (size templates of :mod:`landmark.training.sampling`), every augmentation is
seeded by (seed, phase, epoch, position); each phase runs on the shared trainer
(:mod:`landmark.training.trainer`): the learning rate follows warm-up + cosine per step, AMP runs only on CUDA,
and each optimizer step appends a row to the CSV log.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from landmark.config import DelfConfig
from landmark.data.images import decode_image
from landmark.errors import InputError
from landmark.models.delf import DelfModel, DelfPca, create_delf_model, fit_pca
from landmark.training.loop import TrainImages, TrainItem, freeze_leading
from landmark.training.sampling import Sample, assign_templates, epoch_batches, size_templates
from landmark.training.trainer import Dist, LoopSettings, Trainer, TrainLog, seed_everything

LOG = "train_log.csv"
LOG_FIELDS = ("step", "phase", "epoch", "loss", "accuracy", "lr", "seconds")
Phase = Literal["descriptor", "attention"]
_PHASE_SEED = {"descriptor": 0xDE5C, "attention": 0xA77E}


@dataclass(frozen=True)
class PhaseResult:
    """How one training phase went: optimizer steps, mean loss of its first and last epoch, last accuracy."""

    steps: int
    first_epoch_loss: float
    last_epoch_loss: float
    last_epoch_accuracy: float
    seconds: float


@dataclass(frozen=True)
class DelfTrainResult:
    """The trained model, its PCA and per-phase results (``descriptor`` is None when that phase was skipped)."""

    model: DelfModel
    pca: DelfPca
    descriptor: PhaseResult | None
    attention: PhaseResult
    pca_descriptors: int
    seconds: float

    def metrics(self) -> dict[str, Any]:
        """JSON-ready metrics for the model directory and DVC."""

        def phase(result: PhaseResult | None) -> dict[str, Any] | None:
            if result is None:
                return None
            return {
                "steps": result.steps,
                "first_epoch_loss": round(result.first_epoch_loss, 5),
                "last_epoch_loss": round(result.last_epoch_loss, 5),
                "last_epoch_accuracy": round(result.last_epoch_accuracy, 4),
                "seconds": round(result.seconds, 2),
            }

        return {
            "descriptor_phase": phase(self.descriptor),
            "attention_phase": phase(self.attention),
            "pca_descriptors": self.pca_descriptors,
            "pca_explained_variance": round(float(self.pca.variances.sum()), 5),
            "train_seconds": round(self.seconds, 2),
        }


def phase_plan(items: Sequence[TrainItem], cfg: DelfConfig, seed: int, epoch: int) -> list[list[Sample]]:
    """The seeded, aspect-ratio-bucketed batches of one epoch."""
    labels = np.array([i.label for i in items])
    templates = assign_templates([i.width for i in items], [i.height for i in items])
    return epoch_batches(
        labels, templates, size_templates(cfg.image_size), batch_size=cfg.batch_size, epoch=epoch, seed=seed
    )


def _eval_frozen_batchnorm(module: nn.Module) -> None:
    """BatchNorm layers whose parameters are frozen keep their running statistics (eval mode)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(
            p.requires_grad for p in m.parameters()
        ):
            m.eval()


def _setup_phase(
    model: DelfModel, phase: Phase, cfg: DelfConfig, descriptor_trained: bool = False
) -> list[dict[str, Any]]:
    """Set trainable parameters and modes for ``phase``; its optimizer parameter groups (with ``lr_scale``)."""
    model.requires_grad_(False)
    if phase == "descriptor":
        model.body.requires_grad_(True)
        freeze_leading(model.body, cfg.frozen_fraction)
        model.gap_classifier.requires_grad_(True)
        model.train()
        _eval_frozen_batchnorm(model.body)
        backbone = [p for p in model.body.parameters() if p.requires_grad]
        return [
            {"params": backbone, "lr_scale": cfg.backbone_lr_multiplier},
            {"params": list(model.gap_classifier.parameters()), "lr_scale": 1.0},
        ]
    if descriptor_trained:  # start from the descriptor phase's classifier: same logits at uniform attention
        model.attention_classifier.load_state_dict(model.gap_classifier.state_dict())
    model.attention.requires_grad_(True)
    model.attention_classifier.requires_grad_(True)
    model.train()
    model.body.eval()
    return [
        {"params": list(model.attention.parameters()) + list(model.attention_classifier.parameters()),
         "lr_scale": 1.0},
    ]  # fmt: skip


def _phase_loss(
    model: DelfModel, phase: Phase, images: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of the phase's classifier and its logits (N, C)."""
    if phase == "descriptor":
        logits = model.gap_logits(model.features(images))
    else:
        with torch.no_grad():  # frozen backbone: no activations kept for backward
            features = model.features(images)
        logits = model.attention_logits(features)
    return F.cross_entropy(logits.float(), labels), logits


def run_phase(
    model: DelfModel,
    phase: Phase,
    items: Sequence[TrainItem],
    cfg: DelfConfig,
    epochs: int,
    *,
    seed: int,
    device: str,
    log: TrainLog | None,
    first_step: int = 0,
    progress: bool = True,
) -> PhaseResult:
    """Train ``model`` for one phase (see the module docstring); rows go to ``log`` numbered from ``first_step``.

    Raises:
        ValueError: no complete batch in an epoch.
    """
    phase_seed = seed ^ _PHASE_SEED[phase]
    steps_per_epoch = len(phase_plan(items, cfg, phase_seed, 0))
    if steps_per_epoch < 1:
        raise InputError(
            f"{len(items)} training images give no batch of >= 2 images: lower delf.batch_size or add data"
        )
    total = steps_per_epoch * epochs
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    groups = _setup_phase(model, phase, cfg, descriptor_trained=first_step > 0)
    settings = LoopSettings(
        epochs=epochs, total_steps=total, lr=cfg.lr, warmup_steps=cfg.warmup_steps, max_steps=total,
        amp=cfg.amp, workers=cfg.workers,
    )  # fmt: skip
    trainer = Trainer(
        model, torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay), settings,
        Dist(0, 1, device), log or TrainLog(Path(LOG), enabled=False), log_extra={"phase": phase},
        step_offset=first_step, progress=progress, desc=f"train-delf {phase}",
    )  # fmt: skip
    loop = trainer.run(
        TrainImages(items, cfg.augmentation, phase_seed),
        lambda epoch: phase_plan(items, cfg, phase_seed, epoch),
        lambda net, images, labels: _phase_loss(model, phase, images, labels),
    )
    model.eval()
    return PhaseResult(
        steps=loop.steps,
        first_epoch_loss=loop.epoch_losses[0],
        last_epoch_loss=loop.epoch_losses[-1],
        last_epoch_accuracy=loop.epoch_accuracies[-1],
        seconds=loop.seconds,
    )


def pca_descriptors(
    model: DelfModel,
    items: Sequence[TrainItem],
    cfg: DelfConfig,
    *,
    seed: int,
    device: str,
    progress: bool = True,
) -> np.ndarray:
    """Raw DELF descriptors (N, C) of a seeded subset of ``cfg.pca_images`` training images, extracted as at
    inference (pyramid ``cfg.scales``, threshold, top ``cfg.max_features``)."""
    from tqdm.auto import tqdm

    from landmark.features.delf import pyramid_keypoints

    rng = np.random.default_rng([seed, 0x9CA])
    chosen = sorted(rng.permutation(len(items))[: cfg.pca_images].tolist())
    model.eval()
    parts = []
    for k in tqdm(chosen, desc="train-delf pca", unit="img", disable=not progress):
        raw = pyramid_keypoints(
            model, decode_image(items[k].path), cfg.scales, cfg.score_threshold, cfg.max_features, device
        )
        parts.append(raw.descriptors)
    return np.concatenate(parts) if parts else np.zeros((0, model.channels), np.float32)


def train_delf(
    items: Sequence[TrainItem],
    num_classes: int,
    cfg: DelfConfig,
    work_dir: Path,
    *,
    seed: int,
    device: str,
    progress: bool = True,
) -> DelfTrainResult:
    """Train a DELF model on ``items`` (class indices in [0, num_classes)) and fit its descriptor PCA.

    The per-step log goes to ``work_dir/train_log.csv`` (step, phase, epoch, loss, accuracy, lr, seconds).

    Raises:
        ValueError: labels out of range, too few images for a batch, or too few descriptors for the PCA.
    """
    if num_classes < 2:
        raise InputError(f"DELF training needs at least 2 classes, got {num_classes}")
    if any(not 0 <= i.label < num_classes for i in items):
        raise ValueError(f"item labels must be class indices in [0, {num_classes})")
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(seed)
    start = time.perf_counter()
    model = create_delf_model(
        cfg.backbone, cfg.pretrained, num_classes, cfg.attention_hidden, cfg.feature_stride
    ).to(device)
    descriptor: PhaseResult | None = None
    log = TrainLog(work_dir / LOG, enabled=True, fields=LOG_FIELDS)
    log.restart()  # each row flushed as it is written: visible live
    if cfg.descriptor_epochs > 0:
        descriptor = run_phase(
            model, "descriptor", items, cfg, cfg.descriptor_epochs,
            seed=seed, device=device, log=log, progress=progress,
        )  # fmt: skip
    attention = run_phase(
        model, "attention", items, cfg, cfg.attention_epochs, seed=seed, device=device, log=log,
        first_step=descriptor.steps if descriptor else 0, progress=progress,
    )  # fmt: skip
    descriptors = pca_descriptors(model, items, cfg, seed=seed, device=device, progress=progress)
    pca = fit_pca(descriptors, cfg.pca_dim, cfg.pca_whiten)
    return DelfTrainResult(
        model=model.eval(),
        pca=pca,
        descriptor=descriptor,
        attention=attention,
        pca_descriptors=len(descriptors),
        seconds=time.perf_counter() - start,
    )
