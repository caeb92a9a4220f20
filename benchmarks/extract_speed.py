"""Global descriptor extraction and training speed on this machine (CPU, and GPU when present).

Measures images/s of extraction at a given size, single-scale and multi-scale (1/sqrt2, 1, sqrt2), peak GPU
memory when on CUDA, and training steps/s (forward + backward + optimizer step) at the training size.

    python benchmarks/extract_speed.py [--size 512] [--images 48] [--device auto]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result

from landmark.config import ExtractConfig, ModelConfig, TrainConfig, resolve_device
from landmark.features.global_desc import describe_batch
from landmark.models.global_model import create_global_model
from landmark.models.heads import create_head
from landmark.training.loop import freeze_leading


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def extraction_rate(
    model: torch.nn.Module, device: str, size: int, scales: tuple[float, ...], images: int, batch: int
) -> float:
    """Images per second for (batch, 3, size*3/4, size) uint8 inputs, after one warm-up batch."""
    x = torch.randint(0, 255, (batch, 3, size * 3 // 4, size), dtype=torch.uint8, device=device)
    fp16 = device.startswith("cuda")
    describe_batch(model, x, scales, fp16)
    _sync(device)
    start = time.perf_counter()
    done = 0
    while done < images:
        describe_batch(model, x, scales, fp16)
        done += batch
    _sync(device)
    return done / (time.perf_counter() - start)


def training_rate(device: str, size: int, batch: int, steps: int, frozen_fraction: float) -> float:
    """Optimizer steps per second of the training forward/backward at ``size`` (AMP on CUDA)."""
    cfg = TrainConfig()
    model = create_global_model(ModelConfig())
    freeze_leading(model.backbone, frozen_fraction)
    model = model.to(device).train()
    head = create_head(cfg.head, model.dim, 1000).to(device)
    if device.startswith("cuda"):
        model = model.to(memory_format=torch.channels_last)
    trainable = [p for p in [*model.parameters(), *head.parameters()] if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", enabled=device.startswith("cuda"))
    x = torch.rand(batch, 3, size * 3 // 4, size, device=device)
    labels = torch.randint(0, 1000, (batch,), device=device)

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.float16, enabled=device.startswith("cuda")):
            loss = torch.nn.functional.cross_entropy(head(model.embed(x), labels).float(), labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=512, help="long side of the extraction images")
    parser.add_argument("--images", type=int, default=48, help="images per measurement")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--train-size", type=int, default=TrainConfig().image_size)
    parser.add_argument("--train-batch", type=int, default=TrainConfig().batch_size)
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    device = resolve_device(args.device)
    torch.manual_seed(0)
    model = create_global_model(ModelConfig(embedding_dim=0)).eval().to(device)
    model = model.to(memory_format=torch.channels_last)
    multi = ExtractConfig().scales
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    result = {
        "device": device,
        "backbone": ModelConfig().backbone,
        "extract_size": args.size,
        "extract_images_per_s_single_scale": round(
            extraction_rate(model, device, args.size, (1.0,), args.images, args.batch), 2
        ),
        "extract_images_per_s_multi_scale": round(
            extraction_rate(model, device, args.size, multi, args.images, args.batch), 2
        ),
        "multi_scales": multi,
        "batch": args.batch,
    }
    if device.startswith("cuda"):
        result["extract_peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    result.update(train_size=args.train_size, train_batch=args.train_batch)
    for frozen in sorted({0.0, TrainConfig().frozen_fraction}):
        rate = training_rate(device, args.train_size, args.train_batch, args.train_steps, frozen)
        result[f"train_steps_per_s_frozen_{frozen}"] = round(rate, 4)
        result[f"train_images_per_s_frozen_{frozen}"] = round(rate * args.train_batch, 2)
    write_result("extract_speed" if device == "cpu" else "extract_speed_gpu", result, args.out)


if __name__ == "__main__":
    main()
