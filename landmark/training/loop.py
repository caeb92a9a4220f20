"""The training loop: margin-head metric learning with checkpoints, resume, AMP on CUDA and DDP via torchrun.

One code path for one CPU, one GPU, or many processes: under ``torchrun`` (``WORLD_SIZE`` > 1) the model is
wrapped in DistributedDataParallel (gloo on CPU, nccl on GPU) and every rank takes its share of each epoch's
batches. The epoch plan and every augmentation are pure functions of (seed, epoch, position), so a resumed run
replays exactly what an uninterrupted one would have done.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import logging
import os
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.hooks import RemovableHandle

from landmark.config import ModelConfig, TrainConfig, config_to_dict
from landmark.data.images import decode_image
from landmark.errors import LandmarkError
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
from landmark.training.schedule import lr_at

CHECKPOINT = "checkpoint.pt"
LOG = "train_log.csv"
LOG_FIELDS = ("step", "epoch", "loss", "accuracy", "lr", "seconds")


logger = logging.getLogger(__name__)


class CheckpointError(LandmarkError, ValueError):
    """A checkpoint that cannot be resumed with the current data or config."""


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
# Distributed set-up


@dataclass(frozen=True)
class _Dist:
    rank: int
    world_size: int
    device: str

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device: str) -> _Dist:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return _Dist(0, 1, device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return _Dist(dist.get_rank(), world_size, device)


def _mean_across_ranks(values: torch.Tensor, ctx: _Dist) -> torch.Tensor:
    if ctx.world_size > 1:
        values = values.clone()
        dist.all_reduce(values)
        values /= ctx.world_size
    return values


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _resume_key(
    train_cfg: TrainConfig, model_cfg: ModelConfig, num_classes: int, num_items: int
) -> dict[str, Any]:
    # Everything that changes the optimisation trajectory must match; max_steps, workers and max_bad_share (the
    # items are checked by their number) may differ, and so may wise_alpha (applied after the last step:
    # resuming a finished run re-ensembles it without training).
    free = ("max_steps", "workers", "wise_alpha", "max_bad_share")
    train = {k: v for k, v in config_to_dict(train_cfg).items() if k not in free}
    return {"train": train, "model": config_to_dict(model_cfg), "classes": num_classes, "items": num_items}


def _save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _load_checkpoint(path: Path, expected_key: dict[str, Any]) -> dict[str, Any]:
    payload: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    if payload.get("key") != expected_key:
        stored = payload.get("key", {})
        changed = sorted(k for k in set(stored) | set(expected_key) if stored.get(k) != expected_key.get(k))
        raise CheckpointError(
            f"cannot resume from {path}: it was written with a different {', '.join(changed)}. "
            "Start a fresh run (without --resume) or restore the original config/data."
        )
    return payload


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
        loader = _loader(TrainImages(items, "none", seed), batches, cfg.workers, device)
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
    real: _RealPhotos, cfg: TrainConfig, seed: int, ctx: _Dist, micro_steps: int, start: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The real-photo batches of micro-steps ``start`` .. ``micro_steps - 1`` (the same on a resumed run)."""
    widths, heights = [i.width for i in real.items], [i.height for i in real.items]
    plan = batch_plan(widths, heights, cfg.image_size, cfg.distill_real_batch, micro_steps, seed, ctx.rank)
    return real_batches(TrainImages(real.items, "none", seed), plan[start:], cfg.workers, ctx.device)


def _init_neck(
    model: GlobalDescriptor,
    items: Sequence[TrainItem],
    cfg: TrainConfig,
    seed: int,
    device: str,
    head: MarginHead | None = None,
) -> None:
    """Initialise from un-augmented training images: the neck as PCA whitening of the pooled features of a
    seeded subset (``neck_init: pca``), and with a ``head`` and ``head_init: imprint`` the head's class weights
    from the initialised model's embeddings of all images."""
    imprint = head is not None and cfg.head_init == "imprint"
    if cfg.neck_init != "pca" and not imprint:
        return
    rng = np.random.default_rng([seed, 0x9CA])
    chosen = sorted(rng.permutation(len(items))[: cfg.neck_init_images].tolist())
    pooled = _pooled_features(model, items if imprint else [items[i] for i in chosen], cfg, seed, device)
    if cfg.neck_init == "pca":
        model.init_neck_pca(pooled[chosen] if imprint else pooled)
        if not cfg.neck_whiten:
            unwhiten_neck(model)
    if head is not None and imprint:
        with torch.inference_mode():
            embeddings = model.neck(pooled.to(device)).float().cpu()
        head.imprint(embeddings, torch.tensor([i.label for i in items]))


def _plan(
    items: Sequence[TrainItem], cfg: TrainConfig, seed: int, epoch: int, ctx: _Dist
) -> list[list[Sample]]:
    labels = np.array([i.label for i in items])
    templates = assign_templates([i.width for i in items], [i.height for i in items])
    full_res = cfg.full_res_last_epoch and epoch == cfg.epochs - 1 and cfg.epochs > 1
    sizes = size_templates(cfg.full_res_image_size if full_res else cfg.image_size)
    batches = epoch_batches(
        labels, templates, sizes, batch_size=cfg.batch_size, epoch=epoch, seed=seed, sampler=cfg.sampler
    )
    return shard_for_rank(batches, ctx.rank, ctx.world_size, cfg.accumulation_steps)


def _loader(dataset: TrainImages, batches: list[list[Sample]], workers: int, device: str) -> DataLoader[Any]:
    return DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=workers,
        pin_memory=device.startswith("cuda"),
        persistent_workers=False,
    )


class TrainLog:
    """``train_log.csv``: one row per optimizer step, flushed as it is written, so a killed run keeps every step
    it finished. A resumed run drops the rows past its checkpoint (it trains those steps again) and appends to
    the same file; the ``seconds`` column counts the time of every attempt.
    """

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path, self.enabled = path, enabled
        self._stream: IO[str] | None = None
        self._writer: csv.DictWriter[str] | None = None

    def restart(self) -> None:
        """A fresh run: remove any earlier log."""
        if self.enabled:
            self.path.unlink(missing_ok=True)

    def resume(self, step: int) -> float:
        """Keep the rows up to ``step`` (the checkpoint's), atomically.

        Returns:
            The largest ``seconds`` logged by earlier attempts, dropped rows included: their time was spent.
        """
        if not self.enabled or not self.path.exists():
            return 0.0
        with open(self.path, newline="") as stream:
            rows = [row for row in csv.DictReader(stream) if _complete_row(row)]
        spent = max((float(row["seconds"]) for row in rows), default=0.0)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=LOG_FIELDS)
            writer.writeheader()
            writer.writerows(row for row in rows if int(row["step"]) <= step)
        os.replace(tmp, self.path)
        return spent

    def write(self, row: dict[str, Any]) -> None:
        """Append one step's row and flush it to the file."""
        if self._writer is None or self._stream is None:
            return
        self._writer.writerow(row)
        self._stream.flush()

    def __enter__(self) -> TrainLog:
        if self.enabled:
            new = not self.path.exists()
            self._stream = open(self.path, "a", newline="")
            self._writer = csv.DictWriter(self._stream, fieldnames=LOG_FIELDS)
            if new:
                self._writer.writeheader()
                self._stream.flush()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stream is not None:
            self._stream.close()
        self._stream = self._writer = None


def _complete_row(row: dict[str, Any]) -> bool:
    """False for a row torn by a kill mid-write (missing or unparsable fields)."""
    try:
        int(row["step"])
        float(row["seconds"])
    except (KeyError, TypeError, ValueError):
        return False
    return True


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

    Args:
        items: training images with class indices in [0, num_classes).
        num_classes: number of classes of the head.
        model_cfg: architecture (backbone, GeM, embedding size) and initial weights.
        train_cfg: optimisation settings.
        work_dir: checkpoint (``checkpoint.pt``) and per-step log (``train_log.csv``, flushed per step; see
            :class:`TrainLog`).
        seed: seeds initialisation, the epoch plans and the augmentations.
        device: ``cpu`` or ``cuda`` (AMP and channels-last only on CUDA).
        resume: continue from ``work_dir/checkpoint.pt``.
        progress: show a progress bar (rank 0 only).
    """
    from tqdm.auto import tqdm

    if model_cfg.embedding_dim <= 0:
        raise ValueError("training needs model.embedding_dim > 0 (the FC -> BatchNorm neck)")
    if any(not 0 <= i.label < num_classes for i in items):
        raise ValueError(f"item labels must be class indices in [0, {num_classes})")
    ctx = _init_distributed(device)
    cuda = ctx.device.startswith("cuda")
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)

    per_epoch = len(_plan(items, dataclasses.replace(train_cfg, full_res_last_epoch=False), seed, 0, ctx))
    steps_in_epoch = per_epoch // train_cfg.accumulation_steps
    if steps_in_epoch < 1:
        raise ValueError(
            f"{len(items)} training images give no complete batch of {train_cfg.batch_size} per process: "
            "lower train.batch_size or add data"
        )
    total_steps = steps_in_epoch * train_cfg.epochs

    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    model = create_global_model(model_cfg)
    head = create_head(train_cfg.head, model.dim, num_classes, train_cfg.scale, train_cfg.margin)
    _init_neck(model, items, train_cfg, seed, ctx.device, head)
    real = _real_photos(model, train_cfg, seed, ctx.device)
    # the zero-shot end of the weight ensemble, rebuilt the same way on a resumed run
    zero_shot = zero_shot_state(model) if train_cfg.wise_alpha < 1 else None
    freeze_leading(model.backbone, train_cfg.frozen_fraction)
    # built before a checkpoint is loaded: the teacher is the model at step 0 on a resumed run too
    teacher = _Teacher(model).to(ctx.device) if train_cfg.distill_weight > 0 else None
    module = _Module(model, head).to(ctx.device)
    if cuda:
        module = module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    groups = _param_groups(module, train_cfg)
    optimizer = _optimizer(groups, train_cfg)
    use_amp = train_cfg.amp and cuda
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    key = _resume_key(train_cfg, model_cfg, num_classes, len(items))
    step, start_epoch, skip = 0, 0, 0
    spent = 0.0  # seconds of earlier attempts
    checkpoint_path = work_dir / CHECKPOINT
    if resume and checkpoint_path.exists():
        payload = _load_checkpoint(checkpoint_path, key)
        module.load_state_dict(payload["module"])
        optimizer.load_state_dict(payload["optimizer"])
        scaler.load_state_dict(payload["scaler"])
        _set_rng_state(payload["rng"])
        step, start_epoch, skip = payload["step"], payload["epoch"], payload["step_in_epoch"]
        spent = float(payload.get("seconds", 0.0))  # absent in checkpoints of older versions
    train_log = TrainLog(work_dir / LOG, enabled=ctx.main)
    if resume:
        spent = max(spent, train_log.resume(step))
    else:
        train_log.restart()

    micro_steps = total_steps * train_cfg.accumulation_steps
    real_iter = (
        _real_batches(real, train_cfg, seed, ctx, micro_steps, step * train_cfg.accumulation_steps)
        if real is not None
        else None
    )
    wrapped: nn.Module = module
    if ctx.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        wrapped = DistributedDataParallel(module, device_ids=[torch.cuda.current_device()] if cuda else None)

    start = time.perf_counter()

    def seconds() -> float:
        """Training time of every attempt so far."""
        return spent + time.perf_counter() - start

    def checkpoint(epoch: int, step_in_epoch: int) -> None:
        if ctx.main:
            payload = {
                "key": key,
                "module": module.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "rng": _rng_state(),
                "step": step,
                "epoch": epoch,
                "step_in_epoch": step_in_epoch,
                "seconds": seconds(),
            }
            _save_checkpoint(checkpoint_path, payload)
        if ctx.world_size > 1:
            dist.barrier()

    dataset = TrainImages(items, train_cfg.augmentation, seed)
    last_loss, last_acc = float("nan"), float("nan")
    stop = train_cfg.max_steps > 0 and step >= train_cfg.max_steps
    bar = tqdm(
        total=total_steps, initial=step, desc="train", unit="step", disable=not (progress and ctx.main)
    )
    with train_log as log:
        for epoch in range(start_epoch, train_cfg.epochs):
            if stop:
                break
            wrapped.train()
            _freeze_batchnorm(module.model, only_frozen=True)
            full_res = (
                train_cfg.full_res_last_epoch and epoch == train_cfg.epochs - 1 and train_cfg.epochs > 1
            )
            if full_res:
                _freeze_batchnorm(module.model)
            batches = _plan(items, train_cfg, seed, epoch, ctx)[
                : steps_in_epoch * train_cfg.accumulation_steps
            ]
            first = 0 if epoch > start_epoch else skip
            batches = batches[first * train_cfg.accumulation_steps :]
            step_in_epoch = first
            running = torch.zeros(2, device=ctx.device)
            for i, (images, labels) in enumerate(_loader(dataset, batches, train_cfg.workers, ctx.device)):
                images = images.to(ctx.device, non_blocking=True).float().div_(255.0)
                if cuda:
                    images = images.contiguous(memory_format=torch.channels_last)
                labels = labels.to(ctx.device, non_blocking=True)
                photos, photo_ids = next(real_iter) if real_iter is not None else (None, None)
                if photos is not None:
                    photos = photos.to(ctx.device, non_blocking=True).float().div_(255.0)
                with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_amp):
                    logits, cosine, embeddings, photo_embeddings = wrapped(images, labels, photos)
                    target = teacher(images) if teacher is not None else None
                    loss = training_loss(logits, labels, embeddings, target, train_cfg.distill_weight)
                    if photo_embeddings is not None and real is not None and photo_ids is not None:
                        photo_targets = real.targets[photo_ids].to(ctx.device)
                        loss = loss + train_cfg.distill_real_weight * relational_loss(
                            photo_embeddings, photo_targets
                        )
                scaler.scale(loss / train_cfg.accumulation_steps).backward()
                running += (
                    torch.stack([loss.detach(), (cosine.argmax(dim=1) == labels).float().mean()])
                    / train_cfg.accumulation_steps
                )
                if (i + 1) % train_cfg.accumulation_steps:
                    continue
                lr = lr_at(step, total_steps, train_cfg.lr, train_cfg.warmup_steps)
                for group in optimizer.param_groups:
                    group["lr"] = lr * group["lr_scale"]
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                step_in_epoch += 1
                loss_acc = _mean_across_ranks(running, ctx).tolist()
                last_loss, last_acc = loss_acc
                running.zero_()
                log.write(
                    {
                        "step": step,
                        "epoch": epoch,
                        "loss": f"{last_loss:.5f}",
                        "accuracy": f"{last_acc:.4f}",
                        "lr": f"{lr:.6g}",
                        "seconds": f"{seconds():.2f}",
                    }
                )
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{last_loss:.3f}", acc=f"{last_acc:.2f}", lr=f"{lr:.2g}")
                stop = train_cfg.max_steps > 0 and step >= train_cfg.max_steps
                if stop or (train_cfg.checkpoint_every and step % train_cfg.checkpoint_every == 0):
                    done_epoch = step_in_epoch >= steps_in_epoch
                    checkpoint(epoch + 1 if done_epoch else epoch, 0 if done_epoch else step_in_epoch)
                if stop:
                    break
            if not stop:
                checkpoint(epoch + 1, 0)
    bar.close()
    if teacher is not None:
        teacher.close()
    if zero_shot is not None:  # checkpoints keep the plain fine-tuned weights: a resume interpolates again
        module.model.load_state_dict(
            interpolate_weights(zero_shot, module.model.state_dict(), train_cfg.wise_alpha)
        )
    return TrainResult(
        model=module.model,
        head=module.head,
        steps=step,
        total_steps=total_steps,
        final_loss=float(last_loss),
        final_accuracy=float(last_acc),
        seconds=seconds(),
        finished=step >= total_steps,
        real_photos=0 if real is None else len(real.items),
    )


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
