"""Batched, multi-scale global descriptor extraction.

Images are resized so their long side is ``image_size`` (aspect kept), queries are first cropped to their
bounding box, and images of identical resized shape are batched together (no padding, which would change the
pooled descriptor). Multi-scale: the descriptor at each scale is L2-normalised, the scales are averaged and the
mean is L2-normalised again.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from landmark.config import ExtractConfig
from landmark.data.images import bbox_pixels, crop_to_bbox, decode_image, read_image_size
from landmark.features.store import FeatureWriter, stored_ids

BBox = tuple[float, float, float, float]


@dataclass(frozen=True)
class ImageItem:
    """One image to describe: its id, file, optional crop box (x0, y0, x1, y1) and known size (or -1)."""

    image_id: str
    path: Path
    bbox: BBox | None = None
    width: int = -1
    height: int = -1


def target_shape(width: int, height: int, long_side: int) -> tuple[int, int]:
    """(height, width) after resizing so the long side equals ``long_side``, aspect kept (each >= 1)."""
    scale = long_side / max(width, height)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _crop_size(item: ImageItem) -> tuple[int, int]:
    """(width, height) of the pixels :func:`load_resized` will resize: the whole image or its bbox crop."""
    width, height = item.width, item.height
    if width <= 0 or height <= 0:
        width, height = read_image_size(item.path)
    if item.bbox is None:
        return width, height
    x0, y0, x1, y1 = bbox_pixels(item.bbox, width, height)
    return x1 - x0, y1 - y0


def resize_long_side(image: np.ndarray, long_side: int) -> np.ndarray:
    """Resize (H, W, 3) uint8 RGB so its long side is ``long_side``, aspect kept (area filter when shrinking)."""
    h, w = target_shape(image.shape[1], image.shape[0], long_side)
    shrinking = h * w < image.shape[0] * image.shape[1]
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def load_resized(item: ImageItem, long_side: int) -> np.ndarray:
    """Decode, crop to the bbox if any, and resize to ``long_side``: HxWx3 uint8 RGB."""
    image = decode_image(item.path)
    if item.bbox is not None:
        image = crop_to_bbox(image, item.bbox)
    return resize_long_side(image, long_side)


class _ImageDataset(Dataset[tuple[int, torch.Tensor]]):
    def __init__(self, items: Sequence[ImageItem], long_side: int) -> None:
        self.items, self.long_side = items, long_side

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor]:
        image = load_resized(self.items[i], self.long_side)
        return i, torch.from_numpy(image).permute(2, 0, 1)


def shape_batches(shapes: Sequence[tuple[int, int]], batch_size: int) -> list[list[int]]:
    """Group item indices with identical (h, w) into batches of at most ``batch_size``, in first-seen order."""
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, shape in enumerate(shapes):
        groups[shape].append(i)
    return [idx[s : s + batch_size] for idx in groups.values() for s in range(0, len(idx), batch_size)]


@torch.inference_mode()
def describe_batch(
    model: torch.nn.Module, images: torch.Tensor, scales: Sequence[float], use_fp16: bool = False
) -> torch.Tensor:
    """Multi-scale descriptors of a uint8 batch (N, 3, H, W): mean of per-scale L2 descriptors, L2 again."""
    # channels-last is about twice as fast for these backbones on CPU and the layout tensor cores want on GPU
    x = images.float().div_(255.0).contiguous(memory_format=torch.channels_last)
    total: torch.Tensor | None = None
    for scale in scales:
        xs = (
            x
            if scale == 1.0
            else F.interpolate(
                x, scale_factor=scale, mode="bilinear", align_corners=False, antialias=scale < 1.0
            )
        )
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_fp16):
            desc = model(xs).float()
        desc = F.normalize(desc, dim=-1)
        total = desc if total is None else total + desc
    if total is None:
        raise ValueError("at least one scale is needed")
    return F.normalize(total, dim=-1)


def describe_image(
    model: torch.nn.Module, image: np.ndarray, cfg: ExtractConfig, device: str = "cpu"
) -> np.ndarray:
    """The descriptor of one decoded image, computed exactly as extraction computes a stored one.

    Args:
        model: the descriptor model, in eval mode on ``device`` (channels-last, as :func:`iter_descriptors`
            prepares it).
        image: (H, W, 3) uint8 RGB, e.g. from :func:`landmark.data.images.decode_image`.
        cfg: the extraction settings the compared descriptors were made with (``image_size``, ``scales``).
        device: where ``model`` lives.

    Returns:
        (dim,) float32, L2-normalised.
    """
    batch = image_tensor(image, cfg)[None].to(device)
    use_fp16 = cfg.fp16_on_cuda and device.startswith("cuda")
    return describe_batch(model, batch, cfg.scales, use_fp16)[0].cpu().numpy().astype(np.float32)


def image_tensor(image: np.ndarray, cfg: ExtractConfig) -> torch.Tensor:
    """A decoded image resized as extraction resizes it, as the model's input layout.

    Args:
        image: (H, W, 3) uint8 RGB.
        cfg: the extraction settings (``image_size``: the long side after resizing).

    Returns:
        (3, h, w) uint8; images of equal (h, w) can be stacked into one :func:`describe_batch` call.

    Raises:
        ValueError: not an (H, W, 3) uint8 array.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
    resized = resize_long_side(image, cfg.image_size)
    return torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1)


def iter_descriptors(
    model: torch.nn.Module, items: Sequence[ImageItem], cfg: ExtractConfig, device: str, progress: bool = True
) -> Iterator[tuple[list[str], np.ndarray]]:
    """Yield (ids, descriptors (n, dim) float32) batch by batch, over ``items``."""
    from tqdm.auto import tqdm

    shapes = [target_shape(*_crop_size(item), cfg.image_size) for item in items]
    batches = shape_batches(shapes, cfg.batch_size)
    loader = DataLoader(
        _ImageDataset(items, cfg.image_size),
        batch_sampler=batches,
        num_workers=cfg.workers,
        pin_memory=device.startswith("cuda"),
    )
    use_fp16 = cfg.fp16_on_cuda and device.startswith("cuda")
    model.eval().to(device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    with tqdm(total=len(items), desc="extract", unit="img", disable=not progress) as bar:
        for idx, images in loader:
            desc = describe_batch(model, images.to(device, non_blocking=True), cfg.scales, use_fp16)
            yield [items[int(i)].image_id for i in idx], desc.cpu().numpy().astype(np.float32)
            bar.update(len(idx))


def extract_to_store(
    model: torch.nn.Module,
    items: Sequence[ImageItem],
    cfg: ExtractConfig,
    device: str,
    out_dir: Path,
    *,
    meta: Mapping[str, object] | None = None,
    progress: bool = True,
) -> int:
    """Extract descriptors for the items not yet in the store at ``out_dir``; returns how many were added."""
    done = set(stored_ids(out_dir)) if out_dir.exists() else set()
    todo = [item for item in items if item.image_id not in done]
    dim = int(getattr(model, "dim"))  # noqa: B009
    with FeatureWriter(out_dir, dim, shard_size=max(cfg.batch_size * 32, 256), meta=meta) as writer:
        for ids, desc in iter_descriptors(model, todo, cfg, device, progress=progress):
            writer.add(ids, desc)
    return len(todo)
