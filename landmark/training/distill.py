"""Distillation on unlabeled real photos: the fine-tuned model keeps the pretrained descriptor's similarity
structure on photos like the ones its users search.

Fine-tuning on the synthetic world teaches landmark identity but drifts away from what the ImageNet backbone
knows about real photographs. With ``train.distill_real`` pointing at folders of unlabeled real photos, every
optimizer step also embeds a batch of them and adds ``distill_real_weight * relational_loss``: the mean squared
difference between the batch's pairwise cosine similarities under the student and under the pretrained GeM
descriptor (relational knowledge distillation, Park et al., CVPR 2019, distance-wise term on cosines). Only the
*relations* are matched, so the student's embedding may live in another space (the neck's 512 dimensions) than
the teacher's pooled backbone features, and nothing needs labels.

The teacher's descriptors are computed once, before the first step, from the un-augmented photos at the training
resolution; the batches are drawn per micro-step from a seeded plan, so a resumed run sees the same photos.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader

from landmark.errors import InputError
from landmark.training.sampling import Sample, assign_templates, size_templates

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def relational_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the off-diagonal pairwise cosine similarities of two embeddings of one batch.

    0 when the student orders and spaces the batch exactly as the teacher does (any rotation or scaling of the
    student's space is free); at most 4 (every cosine flipped from 1 to -1).

    Args:
        student: (N, D) embeddings being trained (N >= 2).
        teacher: (N, C) target descriptors of the same images; no gradient flows into them.
    """
    if student.ndim != 2 or teacher.ndim != 2 or student.shape[0] != teacher.shape[0] or student.shape[0] < 2:
        raise ValueError(
            f"need (N >= 2, D) and (N, C) tensors, got {tuple(student.shape)} and {tuple(teacher.shape)}"
        )
    s = F.normalize(student.float(), dim=1)
    t = F.normalize(teacher.detach().float(), dim=1)
    off = ~torch.eye(s.shape[0], dtype=torch.bool, device=s.device)
    return ((s @ s.T - t @ t.T)[off] ** 2).mean()


def photo_paths(folders: Sequence[str | Path], limit: int, seed: int) -> tuple[list[Path], list[str]]:
    """Up to ``limit`` photos found under ``folders`` (recursively), a seeded sample in sorted order, and a note
    per folder that is not there (the shared real photos are optional, as for the golden gate: training goes on
    without them and says so).

    Raises:
        ValueError: the folders that exist hold fewer than 2 photos.
    """
    found: list[Path] = []
    notes: list[str] = []
    for folder in folders:
        root = Path(folder)
        if not root.is_dir():
            notes.append(f"train.distill_real: no folder {root}: its photos are not distilled on")
            continue
        found += [p for p in root.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file()]
    found = sorted(set(found))
    if len(found) < 2 and len(notes) < len(folders):  # folders there, but not two photos in them
        raise InputError(f"train.distill_real: need at least 2 photos under {list(map(str, folders))}")
    if len(found) > limit:
        keep = np.random.default_rng([seed, 0xD15]).choice(len(found), size=limit, replace=False)
        found = [found[i] for i in sorted(keep.tolist())]
    return found, notes


def image_sizes(paths: Sequence[Path]) -> tuple[list[int], list[int]]:
    """(widths, heights) read from the file headers (no decoding); an unreadable file fails with its path."""
    widths, heights = [], []
    for path in paths:
        try:
            with Image.open(path) as image:
                width, height = image.size
        except OSError as err:
            raise InputError(f"train.distill_real: cannot read {path}: {err}") from err
        widths.append(width)
        heights.append(height)
    return widths, heights


def batch_plan(
    widths: Sequence[int],
    heights: Sequence[int],
    image_size: int,
    batch_size: int,
    count: int,
    seed: int,
    rank: int = 0,
) -> list[list[Sample]]:
    """``count`` batches of real photos, one size template each (a template drawn in proportion to its photos),
    ``batch_size`` distinct photos (fewer when the template has fewer), seeded by ``seed`` and ``rank``."""
    templates = assign_templates(list(widths), list(heights))
    sizes = size_templates(image_size)
    groups = [np.flatnonzero(templates == t) for t in sorted(set(templates.tolist()))]
    groups = [g for g in groups if len(g) >= 2]  # a batch needs two photos to have a relation
    if not groups:
        raise InputError("train.distill_real: no two photos share a size template")
    weights = np.array([len(g) for g in groups], dtype=np.float64)
    rng = np.random.default_rng([seed, 0xD15, rank])
    batches = []
    for position in range(count):
        group = groups[int(rng.choice(len(groups), p=weights / weights.sum()))]
        template = int(templates[group[0]])
        h, w = sizes[template]
        chosen = rng.choice(group, size=min(batch_size, len(group)), replace=False)
        batches.append([Sample(int(i), h, w, 0, position) for i in chosen])
    return batches


def real_batches(
    dataset: torch.utils.data.Dataset, plan: list[list[Sample]], workers: int, device: str
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(images uint8 (B, 3, H, W), item indices (B,)) for each batch of ``plan``, loaded by ``workers`` processes."""
    loader = DataLoader(
        dataset, batch_sampler=plan, num_workers=workers, pin_memory=device.startswith("cuda")
    )
    for batch, (images, _) in zip(plan, loader, strict=True):
        yield images, torch.tensor([s.item for s in batch])
