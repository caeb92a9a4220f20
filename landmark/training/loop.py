"""Global-model training: margin-head metric learning on GeM embeddings, run by the shared trainer.

This module builds what the run trains (model, head, PCA-initialised neck, frozen layers), what it trains against
(the step-0 teacher, real photos to distil on) and the loss of a batch; :class:`landmark.training.trainer.Trainer`
runs it (checkpoints, exact resume, AMP on CUDA, DDP via torchrun: every rank takes its share of each epoch's
batches). The weight ensemble (WiSE-FT) is a step of its own after training (:func:`ensemble_weights`).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from torch.utils.hooks import RemovableHandle

from landmark.config import ModelConfig, TrainConfig, config_to_dict
from landmark.data.images import decode_image
from landmark.errors import ConfigError, InputError
from landmark.models.global_model import GlobalDescriptor, create_global_model
from landmark.models.heads import MarginHead, create_head
from landmark.training.augment import augment
from landmark.training.distill import batch_plan, image_sizes, photo_paths, real_batches, relational_loss
from landmark.training.ensemble import interpolate_weights, zero_shot_state
from landmark.training.sampling import (
    Sample,
    assign_templates,
    epoch_batches,
    shard_for_rank,
    size_templates,
)
from landmark.training.trainer import (
    CHECKPOINT,
    LOG,
    Dist,
    Forward,
    LoopSettings,
    Trainer,
    TrainLog,
    batch_loader,
    distributed,
    seed_everything,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainItem:
    """One training image: file, class index (0..C-1) and size."""

    path: Path
    label: int
    width: int
    height: int


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced."""

    model: GlobalDescriptor
    head: MarginHead
    steps: int
    total_steps: int
    final_loss: float
    final_accuracy: float
    seconds: float  # training time of every attempt: a resumed run adds the time of the runs before it
    finished: bool  # False when stopped early by ``max_steps``
    real_photos: int = 0  # unlabeled real photos distilled on (train.distill_real; 0 = none)
    # the zero-shot end of the weight ensemble (train.wise_alpha < 1; see ensemble_weights), CPU tensors
    zero_shot: dict[str, torch.Tensor] | None = None


class _Module(nn.Module):
    """Descriptor model + head in one module, so DDP synchronises both."""

    def __init__(self, model: GlobalDescriptor, head: MarginHead) -> None:
        super().__init__()
        self.model, self.head = model, head

    def forward(
        self, images: torch.Tensor, labels: torch.Tensor, real: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Logits, cosines and embeddings of the batch, and the embeddings of a batch of unlabeled ``real``
        photos (None without one), in one forward so DDP sees every use of the parameters. The real photos go
        first: the step-0 teacher reads the activation the labelled batch leaves behind."""
        real_embeddings = self.model.embed(real) if real is not None else None
        embeddings = self.model.embed(images)
        return self.head(embeddings, labels), self.head.cosine(embeddings), embeddings, real_embeddings


class TrainImages(Dataset[tuple[torch.Tensor, int]]):
    """Training images decoded, augmented per sample (seeded by its plan position) and resized to its template."""

    def __init__(self, items: Sequence[TrainItem], augmentation: str, seed: int) -> None:
        self.items, self.augmentation, self.seed = items, augmentation, seed

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, sample: Sample) -> tuple[torch.Tensor, int]:
        item = self.items[sample.item]
        rng = np.random.default_rng([self.seed, sample.epoch, sample.position])
        image = augment(decode_image(item.path), sample.height, sample.width, self.augmentation, rng)  # type: ignore[arg-type]
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1), item.label


# ---------------------------------------------------------------------------------------------------------------
# Checkpoint key


def _resume_key(
    train_cfg: TrainConfig, model_cfg: ModelConfig, num_classes: int, num_items: int
) -> dict[str, Any]:
    # Everything that changes the optimisation trajectory must match; max_steps, workers and max_bad_share (the
    # items are checked by their number) may differ, and so may wise_alpha (applied after the last step:
    # resuming a finished run re-ensembles it without training).
    free = ("max_steps", "workers", "wise_alpha", "max_bad_share")
    train = {k: v for k, v in config_to_dict(train_cfg).items() if k not in free}
    return {"train": train, "model": config_to_dict(model_cfg), "classes": num_classes, "items": num_items}


# ---------------------------------------------------------------------------------------------------------------
# The loop


def _param_groups(module: _Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """Optimizer groups: weight decay only on weight matrices/kernels; the head's learning rate scaled by
    ``head_lr_multiplier``, the backbone's by ``backbone_lr_multiplier`` (the neck and GeM keep the base rate)."""
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        part = (
            "head"
            if name.startswith("head.")
            else "backbone"
            if name.startswith("model.backbone.")
            else "neck"
        )
        # biases, BatchNorm affine, GeM p: no weight decay (the head's class centres are matrices)
        groups.setdefault((part, param.ndim > 1), []).append(param)
    scale = {"head": cfg.head_lr_multiplier, "backbone": cfg.backbone_lr_multiplier, "neck": 1.0}
    return [
        {"params": params, "weight_decay": cfg.weight_decay if decay else 0.0, "lr_scale": scale[part]}
        for (part, decay), params in sorted(groups.items())
    ]


def _optimizer(groups: list[dict[str, Any]], cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def _freeze_batchnorm(module: nn.Module, only_frozen: bool = False) -> None:
    """Put BatchNorm layers in eval mode (running statistics fixed): all, or those whose affine is frozen."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and (
            not only_frozen or not any(p.requires_grad for p in m.parameters())
        ):
            m.eval()


def freeze_leading(backbone: nn.Module, fraction: float) -> int:
    """Freeze the first ``fraction`` of the backbone's parameter tensors (registration = forward order for CNNs).

    Returns:
        the number of frozen tensors.
    """
    params = list(backbone.parameters())
    count = int(len(params) * fraction)
    for param in params[:count]:
        param.requires_grad_(False)
    return count


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean of ``1 - cos(student_i, teacher_i)`` over the batch: 0 when every embedding points where the teacher's
    does, 2 when opposite. Scale-free, so the student's BatchNorm may rescale dimensions uniformly.

    Args:
        student: (N, D) embeddings being trained.
        teacher: (N, D) target embeddings of the same images (no gradient flows into them).
    """
    if student.shape != teacher.shape or student.ndim != 2:
        raise ValueError(
            f"need two (N, D) tensors of one shape, got {tuple(student.shape)} and {tuple(teacher.shape)}"
        )
    return (1.0 - F.cosine_similarity(student.float(), teacher.detach().float(), dim=1)).mean()


def training_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    embeddings: torch.Tensor,
    teacher_embeddings: torch.Tensor | None,
    distill_weight: float,
) -> torch.Tensor:
    """Margin-head cross-entropy, plus ``distill_weight * distillation_loss`` when teacher embeddings are given.

    Args:
        logits: (N, C) margin-head logits.
        labels: (N,) class indices.
        embeddings: (N, D) the student's embeddings of the batch.
        teacher_embeddings: (N, D) the step-0 model's embeddings of the same batch, or None (no distillation).
        distill_weight: weight of the distillation term (>= 0).
    """
    loss = F.cross_entropy(logits.float(), labels)
    if teacher_embeddings is None or distill_weight == 0:
        return loss
    return loss + distill_weight * distillation_loss(embeddings, teacher_embeddings)


def efficientnet_stages(backbone: nn.Module) -> list[nn.Module] | None:
    """timm EfficientNet's ``forward_features`` as a flat list of modules applied in turn (stem, every block,
    head conv); None for other backbones, whose forward is not a plain chain."""
    from timm.models.efficientnet import EfficientNet

    if not isinstance(backbone, EfficientNet):
        return None
    blocks = [
        b for stage in backbone.blocks for b in (stage if isinstance(stage, nn.Sequential) else [stage])
    ]
    return [backbone.conv_stem, backbone.bn1, *blocks, backbone.conv_head, backbone.bn2]


class _Teacher(nn.Module):
    """A frozen copy of the model as it was at step 0 (pretrained backbone + GeM + initialised neck).

    Each BatchNorm runs in the mode its student counterpart is in (batch statistics while training, running ones
    once frozen), so at step 0 teacher and student agree exactly and the distillation term only measures how far
    the trained weights have moved. Where the backbone is a chain (EfficientNet) whose leading modules are frozen
    in the student, those are identical in both: the teacher holds a copy of the rest only and starts from the
    student's activation after the frozen prefix (captured by a forward hook), because on a CPU the frozen
    high-resolution stem is most of the cost of a forward pass.
    """

    def __init__(self, model: GlobalDescriptor) -> None:
        super().__init__()
        stages = efficientnet_stages(model.backbone)
        prefix = 0
        while (
            stages and prefix < len(stages) and not any(p.requires_grad for p in stages[prefix].parameters())
        ):
            prefix += 1
        self._captured: torch.Tensor | None = None
        self._hook: RemovableHandle | None = None
        self.full = stages is None or prefix == 0
        student: nn.Module = model
        if stages is not None and prefix > 0:
            student = nn.Sequential(*stages[prefix:], model.pool, model.neck)
            self._hook = stages[prefix - 1].register_forward_hook(self._capture)
        self.frozen = copy.deepcopy(student)
        self.frozen.requires_grad_(False)
        self._student = [student]  # a plain list: not a submodule (its parameters stay the student's)

    def close(self) -> None:
        """Detach the hook from the student (it keeps the last activation alive otherwise)."""
        if self._hook is not None:
            self._hook.remove()
        self._hook, self._captured = None, None

    def _capture(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        self._captured = output.detach()

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Step-0 embeddings (N, dim) of ``images``; call right after the student's forward on the same batch."""
        for mine, theirs in zip(self.frozen.modules(), self._student[0].modules(), strict=True):
            mine.training = theirs.training
        if self.full:
            return self.frozen.embed(images)  # type: ignore[operator]
        if self._captured is None or self._captured.shape[0] != images.shape[0]:
            raise RuntimeError("the teacher runs after the student's forward on the same batch")
        out: torch.Tensor = self.frozen(self._captured)
        self._captured = None
        return out


@torch.no_grad()
def unwhiten_neck(model: GlobalDescriptor) -> None:
    """Set the neck's BatchNorm scales proportional to the running standard deviations, so that the
    PCA-initialised neck maps to the centred PCA projection (up to one common factor) instead of its whitened
    version: the pretrained descriptor's geometry in ``dim`` dimensions. In training mode the batch statistics
    are rescaled the same way."""
    bn = model.neck[1] if isinstance(model.neck, nn.Sequential) else None
    if not isinstance(bn, nn.BatchNorm1d) or bn.running_var is None or bn.running_mean is None:
        raise ValueError("unwhiten_neck needs a model with an FC -> BatchNorm1d neck that tracks statistics")
    std = torch.sqrt(bn.running_var + bn.eps)
    # one common factor (cosines do not see it) brings the scales to RMS 1: tiny BatchNorm weights would make
    # each SGD step on them a huge relative change
    scale = std / std.square().mean().sqrt()
    bn.weight.copy_(scale)
    bn.bias.copy_(bn.running_mean * scale / std)


def _pooled_features(
    model: GlobalDescriptor, items: Sequence[TrainItem], cfg: TrainConfig, seed: int, device: str
) -> torch.Tensor:
    """GeM-pooled features (N, C) of un-augmented ``items`` at the training resolution, in ``items`` order."""
    templates = assign_templates([i.width for i in items], [i.height for i in items])
    sizes = size_templates(cfg.image_size)
    batches: list[list[Sample]] = []
    for template in sorted(set(templates.tolist())):
        h, w = sizes[template]
        members = np.flatnonzero(templates == template).tolist()
        for start in range(0, len(members), cfg.batch_size):
            batches.append([Sample(j, h, w, 0, j) for j in members[start : start + cfg.batch_size]])
    model.to(device).eval()
    pooled = torch.empty(len(items), model.pool_dim)
    with torch.inference_mode():
        loader = batch_loader(TrainImages(items, "none", seed), batches, cfg.workers, device)
        for batch, (images, _) in zip(batches, loader, strict=True):
            features = model.pooled(images.to(device).float().div_(255.0)).float().cpu()
            pooled[[s.item for s in batch]] = features
    return pooled


@dataclass(frozen=True)
class _RealPhotos:
    """The unlabeled real photos of ``train.distill_real`` and the pretrained model's descriptors of them."""

    items: list[TrainItem]
    targets: torch.Tensor  # (N, C) pretrained GeM descriptors, the relations the student keeps


def _real_photos(model: GlobalDescriptor, cfg: TrainConfig, seed: int, device: str) -> _RealPhotos | None:
    """The real photos and their descriptors under ``model`` (call before any training step: the pretrained
    model is the teacher, on a resumed run too); None without ``train.distill_real``."""
    if not cfg.distill_real:
        return None
    paths, notes = photo_paths(cfg.distill_real, cfg.distill_real_images, seed)
    for note in notes:
        logger.warning(note)
    if not paths:
        return None
    widths, heights = image_sizes(paths)
    items = [TrainItem(p, 0, w, h) for p, w, h in zip(paths, widths, heights, strict=True)]
    return _RealPhotos(items, _pooled_features(model, items, cfg, seed, device))


def _real_batches(
    real: _RealPhotos, cfg: TrainConfig, seed: int, ctx: Dist, micro_steps: int, start: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The real-photo batches of micro-steps ``start`` .. ``micro_steps - 1`` (the same on a resumed run)."""
    widths, heights = [i.width for i in real.items], [i.height for i in real.items]
    plan = batch_plan(widths, heights, cfg.image_size, cfg.distill_real_batch, micro_steps, seed, ctx.rank)
    return real_batches(TrainImages(real.items, "none", seed), plan[start:], cfg.workers, ctx.device)


def neck_whitens(cfg: TrainConfig, distilling: bool) -> bool:
    """Whether the PCA neck whitens: ``train.neck_whiten``, where ``auto`` = not when real photos are distilled
    on (``distilling``)."""
    return cfg.neck_whiten if isinstance(cfg.neck_whiten, bool) else not distilling


def _init_neck(
    model: GlobalDescriptor,
    items: Sequence[TrainItem],
    cfg: TrainConfig,
    seed: int,
    device: str,
    head: MarginHead | None = None,
    *,
    distilling: bool = False,
) -> None:
    """Initialise from un-augmented training images: the neck as PCA (whitening, see :func:`neck_whitens`) of the
    pooled features of a seeded subset (``neck_init: pca``), and with a ``head`` and ``head_init: imprint`` the
    head's class weights from the initialised model's embeddings of all images."""
    imprint = head is not None and cfg.head_init == "imprint"
    if cfg.neck_init != "pca" and not imprint:
        return
    rng = np.random.default_rng([seed, 0x9CA])
    chosen = sorted(rng.permutation(len(items))[: cfg.neck_init_images].tolist())
    pooled = _pooled_features(model, items if imprint else [items[i] for i in chosen], cfg, seed, device)
    if cfg.neck_init == "pca":
        model.init_neck_pca(pooled[chosen] if imprint else pooled)
        if not neck_whitens(cfg, distilling):
            unwhiten_neck(model)
    if head is not None and imprint:
        with torch.inference_mode():
            embeddings = model.neck(pooled.to(device)).float().cpu()
        head.imprint(embeddings, torch.tensor([i.label for i in items]))


def _plan(
    items: Sequence[TrainItem], cfg: TrainConfig, seed: int, epoch: int, ctx: Dist
) -> list[list[Sample]]:
    labels = np.array([i.label for i in items])
    templates = assign_templates([i.width for i in items], [i.height for i in items])
    full_res = cfg.full_res_last_epoch and epoch == cfg.epochs - 1 and cfg.epochs > 1
    sizes = size_templates(cfg.full_res_image_size if full_res else cfg.image_size)
    batches = epoch_batches(
        labels, templates, sizes, batch_size=cfg.batch_size, epoch=epoch, seed=seed, sampler=cfg.sampler
    )
    return shard_for_rank(batches, ctx.rank, ctx.world_size, cfg.accumulation_steps)


def train_global_model(
    items: Sequence[TrainItem],
    num_classes: int,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    work_dir: Path,
    *,
    seed: int,
    device: str,
    resume: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train the global descriptor model with a margin head; checkpoints and log go to ``work_dir``.

    The model comes back with its plain fine-tuned weights and, when ``train.wise_alpha`` < 1, the zero-shot end
    of the weight ensemble: :func:`ensemble_weights` is the WiSE-FT step after training.

    Args:
        items: training images with class indices in [0, num_classes).
        num_classes: number of classes of the head.
        model_cfg: architecture (backbone, GeM, embedding size) and initial weights.
        train_cfg: optimisation settings.
        work_dir: checkpoint (``checkpoint.pt``) and per-step log (``train_log.csv``, flushed per step; see
            :class:`~landmark.training.trainer.TrainLog`).
        seed: seeds initialisation, the epoch plans and the augmentations.
        device: ``cpu`` or ``cuda`` (AMP and channels-last only on CUDA).
        resume: continue from ``work_dir/checkpoint.pt``.
        progress: show a progress bar (rank 0 only).
    """
    if model_cfg.embedding_dim <= 0:
        raise ConfigError("training needs model.embedding_dim > 0 (the FC -> BatchNorm neck)")
    if any(not 0 <= i.label < num_classes for i in items):
        raise ValueError(f"item labels must be class indices in [0, {num_classes})")
    with distributed(device) as ctx:
        work_dir = Path(work_dir)
        work_dir.mkdir(parents=True, exist_ok=True)
        steps_in_epoch = _steps_in_epoch(items, train_cfg, seed, ctx)
        seed_everything(seed)
        parts = _build(items, num_classes, model_cfg, train_cfg, seed, ctx)
        settings = LoopSettings(
            epochs=train_cfg.epochs, total_steps=steps_in_epoch * train_cfg.epochs, lr=train_cfg.lr,
            warmup_steps=train_cfg.warmup_steps, accumulation_steps=train_cfg.accumulation_steps,
            max_steps=train_cfg.max_steps, checkpoint_every=train_cfg.checkpoint_every, amp=train_cfg.amp,
            workers=train_cfg.workers, channels_last=True,
        )  # fmt: skip
        trainer = Trainer(
            parts.module, _optimizer(_param_groups(parts.module, train_cfg), train_cfg), settings, ctx,
            TrainLog(work_dir / LOG, enabled=ctx.main), checkpoint=work_dir / CHECKPOINT,
            key=_resume_key(train_cfg, model_cfg, num_classes, len(items)), progress=progress,
        )  # fmt: skip
        trainer.restore(resume)
        batches = steps_in_epoch * train_cfg.accumulation_steps  # every epoch: as many as the first
        loop = trainer.run(
            TrainImages(items, train_cfg.augmentation, seed),
            lambda epoch: _plan(items, train_cfg, seed, epoch, ctx)[:batches],
            _forward(parts, train_cfg, seed, ctx, settings.total_steps, trainer.step),
            lambda epoch: _start_epoch(parts.module, train_cfg, epoch),
        )
    if parts.teacher is not None:
        parts.teacher.close()
    return TrainResult(
        model=parts.module.model,
        head=parts.module.head,
        steps=loop.steps,
        total_steps=settings.total_steps,
        final_loss=float(loop.last_loss),
        final_accuracy=float(loop.last_accuracy),
        seconds=loop.seconds,
        finished=loop.steps >= settings.total_steps,
        real_photos=0 if parts.real is None else len(parts.real.items),
        zero_shot=parts.zero_shot,
    )


def _steps_in_epoch(items: Sequence[TrainItem], cfg: TrainConfig, seed: int, ctx: Dist) -> int:
    """Optimizer steps of every epoch: those of the first epoch at the training resolution.

    Raises:
        ValueError: not one complete batch per process.
    """
    per_epoch = len(_plan(items, dataclasses.replace(cfg, full_res_last_epoch=False), seed, 0, ctx))
    steps = per_epoch // cfg.accumulation_steps
    if steps < 1:
        raise InputError(
            f"{len(items)} training images give no complete batch of {cfg.batch_size} per process: "
            "lower train.batch_size or add data"
        )
    return steps


@dataclass(frozen=True)
class _Parts:
    """What a global-model run trains (``module``) and trains against (the step-0 ``teacher``, the ``real``
    photos), and the ``zero_shot`` end of the weight ensemble."""

    module: _Module
    teacher: _Teacher | None
    real: _RealPhotos | None
    zero_shot: dict[str, torch.Tensor] | None


def _build(
    items: Sequence[TrainItem],
    num_classes: int,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    seed: int,
    ctx: Dist,
) -> _Parts:
    """The model and head initialised from the data, the real photos' teacher descriptors, the zero-shot
    weights, the frozen layers and the step-0 teacher, all as on a fresh run (a resumed run loads over them)."""
    model = create_global_model(model_cfg)
    head = create_head(cfg.head, model.dim, num_classes, cfg.scale, cfg.margin)
    real = _real_photos(model, cfg, seed, ctx.device)  # pooled features: the neck does not matter yet
    _init_neck(model, items, cfg, seed, ctx.device, head, distilling=real is not None)
    # the zero-shot end of the weight ensemble, rebuilt the same way on a resumed run
    zero_shot = zero_shot_state(model) if cfg.wise_alpha < 1 else None
    freeze_leading(model.backbone, cfg.frozen_fraction)
    # built before a checkpoint is loaded: the teacher is the model at step 0 on a resumed run too
    teacher = _Teacher(model).to(ctx.device) if cfg.distill_weight > 0 else None
    module = _Module(model, head).to(ctx.device)
    if ctx.device.startswith("cuda"):
        module = module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return _Parts(module, teacher, real, zero_shot)


def _start_epoch(module: _Module, cfg: TrainConfig, epoch: int) -> None:
    """Training mode, frozen layers' BatchNorm statistics fixed; all of them in the full-resolution epoch."""
    module.train()
    _freeze_batchnorm(module.model, only_frozen=True)
    if cfg.full_res_last_epoch and epoch == cfg.epochs - 1 and cfg.epochs > 1:
        _freeze_batchnorm(module.model)


def _forward(parts: _Parts, cfg: TrainConfig, seed: int, ctx: Dist, total_steps: int, step: int) -> Forward:
    """The loss of a batch: margin-head cross-entropy, the step-0 teacher's distillation term, and the relations
    of a batch of real photos (drawn per micro-step from optimizer step ``step`` on, as an unbroken run would)."""
    real, teacher = parts.real, parts.teacher
    micro_steps = total_steps * cfg.accumulation_steps
    real_iter = (
        _real_batches(real, cfg, seed, ctx, micro_steps, step * cfg.accumulation_steps)
        if real is not None
        else None
    )

    def forward(
        net: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        photos, photo_ids = next(real_iter) if real_iter is not None else (None, None)
        if photos is not None:
            photos = photos.to(ctx.device, non_blocking=True).float().div_(255.0)
        logits, cosine, embeddings, photo_embeddings = net(images, labels, photos)
        target = teacher(images) if teacher is not None else None
        loss = training_loss(logits, labels, embeddings, target, cfg.distill_weight)
        if photo_embeddings is not None and real is not None and photo_ids is not None:
            photo_targets = real.targets[photo_ids].to(ctx.device)
            loss = loss + cfg.distill_real_weight * relational_loss(photo_embeddings, photo_targets)
        return loss, cosine

    return forward


def ensemble_weights(result: TrainResult, alpha: float) -> None:
    """The weight-ensemble step after training (WiSE-FT): ``result.model``'s weights become
    ``(1 - alpha) * zero-shot + alpha * fine-tuned``; nothing to do without a zero-shot end (``wise_alpha`` 1).
    Checkpoints keep the plain fine-tuned weights, so a resumed run ensembles again."""
    if result.zero_shot is not None:
        result.model.load_state_dict(interpolate_weights(result.zero_shot, result.model.state_dict(), alpha))


def training_metrics(result: TrainResult, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """JSON-ready training metrics (for the model directory and DVC)."""
    return {
        "steps": result.steps,
        "total_steps": result.total_steps,
        "final_loss": round(result.final_loss, 5),
        "final_accuracy": round(result.final_accuracy, 4),
        "train_seconds": round(result.seconds, 2),
        "finished": result.finished,
        "distill_real_photos": result.real_photos,
        **(extra or {}),
    }
