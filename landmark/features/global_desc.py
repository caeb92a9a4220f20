"""Batched, multi-scale global descriptor extraction.

Images are resized so their long side is ``image_size`` (aspect kept), queries are first cropped to their
bounding box, and images of identical resized shape are batched together (no padding, which would change the
pooled descriptor). Multi-scale: the descriptor at each scale is L2-normalised, the scales are averaged and the
mean is L2-normalised again.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from landmark.config import ExtractConfig
from landmark.data.images import ImageDecodeError, bbox_pixels, crop_to_bbox, decode_image, read_image_size
from landmark.features.store import ensure_meta, next_shard_number, stored_ids, write_shard

BBox = tuple[float, float, float, float]
# called with an image that cannot be decoded and the error; None: the error is raised
OnBadImage = Callable[["ImageItem", ImageDecodeError], None]


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


Loaded = tuple[int, torch.Tensor | ImageDecodeError]


class _ImageDataset(Dataset[Loaded]):
    """Item i -> (i, CHW uint8 tensor), or (i, the decode error): a bad file is reported, not raised, so one
    image cannot stop a DataLoader worker (whose exceptions reach the parent as a traceback text only)."""

    def __init__(self, items: Sequence[ImageItem], long_side: int) -> None:
        self.items, self.long_side = items, long_side

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Loaded:
        try:
            image = load_resized(self.items[i], self.long_side)
        except ImageDecodeError as exc:
            return i, exc
        return i, torch.from_numpy(image).permute(2, 0, 1)


def _collate(
    samples: Sequence[Loaded],
) -> tuple[list[int], torch.Tensor | None, list[tuple[int, ImageDecodeError]]]:
    """A batch of one shape: (indices of the decoded items, their (n, 3, H, W) stack or None, failures)."""
    good = [(i, x) for i, x in samples if isinstance(x, torch.Tensor)]
    bad = [(i, x) for i, x in samples if isinstance(x, ImageDecodeError)]
    stacked = torch.stack([x for _, x in good]) if good else None
    return [i for i, _ in good], stacked, bad


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
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
    resized = resize_long_side(image, cfg.image_size)
    batch = torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1)[None].to(device)
    use_fp16 = cfg.fp16_on_cuda and device.startswith("cuda")
    return describe_batch(model, batch, cfg.scales, use_fp16)[0].cpu().numpy().astype(np.float32)


def _readable_shapes(
    items: Sequence[ImageItem], long_side: int, on_bad: OnBadImage | None
) -> tuple[list[int], list[tuple[int, int]]]:
    """Positions of the items whose header reads, and their resized (h, w); the others go to ``on_bad``."""
    positions, shapes = [], []
    for i, item in enumerate(items):
        try:
            shapes.append(target_shape(*_crop_size(item), long_side))
        except ImageDecodeError as exc:
            _report(item, exc, on_bad)
            continue
        positions.append(i)
    return positions, shapes


def _report(item: ImageItem, error: ImageDecodeError, on_bad: OnBadImage | None) -> None:
    if on_bad is None:
        raise error
    on_bad(item, error)


def _plan_batches(
    items: Sequence[ImageItem], cfg: ExtractConfig, chunk_images: int, on_bad: OnBadImage | None
) -> tuple[list[list[int]], list[int]]:
    """Batches of item positions (images of one resized shape, never across a chunk of ``chunk_images``) and the
    chunk each batch belongs to, in chunk order; unreadable headers go to ``on_bad``."""
    batches: list[list[int]] = []
    owner: list[int] = []
    for k, start in enumerate(range(0, len(items), chunk_images)):
        positions, shapes = _readable_shapes(items[start : start + chunk_images], cfg.image_size, on_bad)
        for batch in shape_batches(shapes, cfg.batch_size):
            batches.append([start + positions[j] for j in batch])
            owner.append(k)
    return batches, owner


def _described_batches(
    model: torch.nn.Module,
    items: Sequence[ImageItem],
    cfg: ExtractConfig,
    device: str,
    progress: bool,
    on_bad: OnBadImage | None,
    chunk_images: int,
) -> Iterator[tuple[int, list[str], np.ndarray]]:
    """(chunk, ids, descriptors (n, dim) float32) per batch with at least one decoded image, in chunk order."""
    from tqdm.auto import tqdm

    batches, owner = _plan_batches(items, cfg, max(chunk_images, 1), on_bad)
    planned = sum(len(b) for b in batches)
    loader = DataLoader(
        _ImageDataset(items, cfg.image_size),
        batch_sampler=batches,
        num_workers=cfg.workers,
        collate_fn=_collate,
        pin_memory=device.startswith("cuda"),
    )
    use_fp16 = cfg.fp16_on_cuda and device.startswith("cuda")
    model.eval().to(device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    with tqdm(total=len(items), desc="extract", unit="img", disable=not progress) as bar:
        bar.update(len(items) - planned)
        for b, (idx, images, failed) in enumerate(loader):
            for i, error in failed:
                _report(items[i], error, on_bad)
            if images is not None:
                desc = describe_batch(model, images.to(device, non_blocking=True), cfg.scales, use_fp16)
                yield owner[b], [items[i].image_id for i in idx], desc.cpu().numpy().astype(np.float32)
            bar.update(len(idx) + len(failed))


def iter_descriptors(
    model: torch.nn.Module,
    items: Sequence[ImageItem],
    cfg: ExtractConfig,
    device: str,
    progress: bool = True,
    *,
    on_bad: OnBadImage | None = None,
) -> Iterator[tuple[list[str], np.ndarray]]:
    """Yield (ids, descriptors (n, dim) float32) batch by batch, over ``items``.

    An image that cannot be decoded (its header, or its pixels in a loader worker) is passed to ``on_bad`` with
    the :class:`ImageDecodeError` and left out; without ``on_bad`` the error is raised here, naming the file.
    The other images' descriptors do not depend on it (batches hold images of one shape, no padding).
    """
    whole = max(len(items), 1)
    for _, ids, desc in _described_batches(model, items, cfg, device, progress, on_bad, whole):
        yield ids, desc


def iter_chunk_descriptors(
    model: torch.nn.Module,
    items: Sequence[ImageItem],
    cfg: ExtractConfig,
    device: str,
    chunk_images: int,
    *,
    progress: bool = True,
    on_bad: OnBadImage | None = None,
) -> Iterator[tuple[int, list[str], np.ndarray]]:
    """Yield (chunk number, ids, descriptors (n, dim) float32) for every chunk of ``chunk_images`` consecutive
    items, in order (a chunk whose images all failed yields no rows).

    Batches never cross a chunk, so a chunk's descriptors are the same whether the chunks run here one after
    the other (one DataLoader over all of them) or each on its own (a Dask worker): what a store holds does not
    depend on the backend.
    """
    if chunk_images < 1:
        raise ValueError(f"chunk_images must be >= 1, got {chunk_images}")
    dim = int(getattr(model, "dim"))  # noqa: B009
    chunks = -(-len(items) // chunk_images)
    current = 0
    ids: list[str] = []
    parts: list[np.ndarray] = []
    for k, batch_ids, desc in _described_batches(model, items, cfg, device, progress, on_bad, chunk_images):
        while current < k:
            yield current, ids, _stack(parts, dim)
            current, ids, parts = current + 1, [], []
        ids.extend(batch_ids)
        parts.append(desc)
    while current < chunks:
        yield current, ids, _stack(parts, dim)
        current, ids, parts = current + 1, [], []


def _stack(parts: Sequence[np.ndarray], dim: int) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)


def write_chunks(
    chunks: Iterator[tuple[int, list[str], np.ndarray]], out_dir: Path, first_shard: int
) -> Iterator[int]:
    """Write each non-empty chunk as store shard ``first_shard + chunk``; yields the rows written per chunk."""
    for k, ids, desc in chunks:
        if ids:
            write_shard(out_dir, first_shard + k, ids, desc)
        yield len(ids)


def extract_to_store(
    model: torch.nn.Module,
    items: Sequence[ImageItem],
    cfg: ExtractConfig,
    device: str,
    out_dir: Path,
    *,
    meta: Mapping[str, object] | None = None,
    progress: bool = True,
    on_bad: OnBadImage | None = None,
    chunk_images: int = 256,
) -> int:
    """Extract descriptors for the items not yet in the store at ``out_dir``; returns how many were added.

    Each chunk of ``chunk_images`` missing items becomes one store shard (numbered after the stored ones), as
    on a Dask cluster. Undecodable images go to ``on_bad`` and are not stored (see :func:`iter_descriptors`); a
    later run tries them again.
    """
    done = set(stored_ids(out_dir)) if out_dir.exists() else set()
    todo = [item for item in items if item.image_id not in done]
    ensure_meta(out_dir, int(getattr(model, "dim")), "float32", meta)  # noqa: B009
    first = next_shard_number(out_dir)
    described = iter_chunk_descriptors(
        model, todo, cfg, device, chunk_images, progress=progress, on_bad=on_bad
    )
    return sum(write_chunks(described, out_dir, first))
