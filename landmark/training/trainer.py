"""One small trainer for every model: seeding, the DDP context, the optimizer step, checkpoints and the step log.

A model's training module builds its network, optimizer and data plan and hands them to :class:`Trainer` with a
``forward`` callable (batch in, loss and class scores out). The trainer owns the rest: AMP (only ever on CUDA)
with a GradScaler, gradient accumulation, the per-step learning rate (warm-up + cosine, scaled per parameter
group by ``lr_scale``), DistributedDataParallel under ``torchrun``, checkpoints written atomically with the
exact-resume state (weights, optimizer, scaler, every RNG, the position in the epoch plan, time spent), and the
per-step CSV log (:class:`TrainLog`). Epoch plans and augmentations are pure functions of (seed, epoch,
position), so a resumed run replays exactly what an uninterrupted one would have done.
"""

from __future__ import annotations

import csv
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from landmark.errors import LandmarkError
from landmark.training.sampling import Sample
from landmark.training.schedule import lr_at

CHECKPOINT = "checkpoint.pt"
LOG = "train_log.csv"
LOG_FIELDS = ("step", "epoch", "loss", "accuracy", "lr", "seconds")

# (module as the trainer runs it, DDP-wrapped or not; images; labels) -> (loss, class scores (N, C))
Forward = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class CheckpointError(LandmarkError, ValueError):
    """A checkpoint that cannot be resumed with the current data or config."""


# ---------------------------------------------------------------------------------------------------------------
# Set-up: seeding and the process group


def seed_everything(seed: int) -> None:
    """Seed torch, numpy's global generator and ``random`` (model initialisation draws from them)."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def launcher_rank() -> int:
    """This process's rank as ``torchrun`` set it (0 outside torchrun), readable before and after training."""
    return int(os.environ.get("RANK", "0"))


@dataclass(frozen=True)
class Dist:
    """Where this process trains: its rank among ``world_size`` processes and its device."""

    rank: int
    world_size: int
    device: str

    @property
    def main(self) -> bool:
        return self.rank == 0


@contextmanager
def distributed(device: str) -> Iterator[Dist]:
    """The process group of a ``torchrun`` launch (``WORLD_SIZE`` > 1: gloo on CPU, nccl on GPU, one device per
    local rank), started on entry and torn down on exit after every rank got there; one process otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        yield Dist(0, 1, device)
        return
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    try:
        yield Dist(dist.get_rank(), world_size, device)
        dist.barrier()
    finally:
        if owned:
            dist.destroy_process_group()


def _mean_across_ranks(values: torch.Tensor, ctx: Dist) -> torch.Tensor:
    if ctx.world_size > 1:
        values = values.clone()
        dist.all_reduce(values)
        values /= ctx.world_size
    return values


def batch_loader(
    dataset: Dataset[Any], batches: list[list[Sample]], workers: int, device: str
) -> DataLoader[Any]:
    """A loader of ``batches`` (lists of plan samples) read from ``dataset`` by ``workers`` processes."""
    return DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=workers,
        pin_memory=device.startswith("cuda"),
        persistent_workers=False,
    )


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
# The per-step log


class TrainLog:
    """``train_log.csv``: one row per optimizer step, flushed as it is written, so a killed run keeps every step
    it finished. A resumed run drops the rows past its checkpoint (it trains those steps again) and appends to
    the same file; the ``seconds`` column counts the time of every attempt.
    """

    def __init__(self, path: Path, enabled: bool, fields: Sequence[str] = LOG_FIELDS) -> None:
        self.path, self.enabled, self.fields = path, enabled, tuple(fields)
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
            writer = csv.DictWriter(stream, fieldnames=self.fields)
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
            self._writer = csv.DictWriter(self._stream, fieldnames=self.fields)
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


# ---------------------------------------------------------------------------------------------------------------
# The trainer


@dataclass(frozen=True)
class LoopSettings:
    """How the trainer steps: ``total_steps`` optimizer steps over ``epochs`` make the learning-rate schedule;
    ``max_steps`` (0 = none) stops earlier; ``checkpoint_every`` steps (0 = only at epoch ends) a checkpoint."""

    epochs: int
    total_steps: int
    lr: float
    warmup_steps: int
    accumulation_steps: int = 1
    max_steps: int = 0
    checkpoint_every: int = 0
    amp: bool = False  # mixed precision, only ever on CUDA
    workers: int = 0
    channels_last: bool = False  # images (and the module) in channels-last layout on CUDA


@dataclass
class LoopResult:
    """How a run of the trainer went: optimizer steps (of every attempt), the last step's loss and accuracy
    (mean over ranks and accumulated batches), per-epoch mean loss and accuracy of the epochs this attempt ran
    (weighted by batch size), and the training time of every attempt."""

    steps: int = 0
    last_loss: float = float("nan")
    last_accuracy: float = float("nan")
    epoch_losses: list[float] = field(default_factory=list)
    epoch_accuracies: list[float] = field(default_factory=list)
    seconds: float = 0.0


class Trainer:
    """Trains ``module`` with ``optimizer`` (parameter groups carry ``lr_scale``) on this process's device.

    Args:
        module: the network the checkpoints hold (unwrapped); under DDP the trainer wraps it.
        optimizer: its optimizer.
        settings: the schedule and stepping.
        ctx: from :func:`distributed`.
        log: the per-step log (``log_extra`` adds constant columns, ``step_offset`` shifts the step numbers).
        checkpoint: where checkpoints go (None: none written), tagged with ``key`` (what must match to resume).
    """

    def __init__(
        self,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        settings: LoopSettings,
        ctx: Dist,
        log: TrainLog,
        *,
        checkpoint: Path | None = None,
        key: dict[str, Any] | None = None,
        log_extra: dict[str, Any] | None = None,
        step_offset: int = 0,
        progress: bool = True,
        desc: str = "train",
    ) -> None:
        self.module, self.optimizer, self.settings, self.ctx, self.log = module, optimizer, settings, ctx, log
        self.checkpoint_path, self.key = checkpoint, key
        self.log_extra, self.step_offset = log_extra or {}, step_offset
        self.progress, self.desc = progress, desc
        self.cuda = ctx.device.startswith("cuda")
        self.use_amp = settings.amp and self.cuda
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.step, self.epoch, self.step_in_epoch = 0, 0, 0  # where the run (re)starts
        self.spent = 0.0  # seconds of earlier attempts
        self._start = time.perf_counter()

    def restore(self, resume: bool) -> None:
        """With ``resume``, continue from the checkpoint (if one was written) and keep the log up to it; else
        start afresh (the log of an earlier run removed).

        Raises:
            CheckpointError: the checkpoint was written with another ``key``.
        """
        path = self.checkpoint_path
        if resume and path is not None and path.exists():
            payload = _load_checkpoint(path, self.key or {})
            self.module.load_state_dict(payload["module"])
            self.optimizer.load_state_dict(payload["optimizer"])
            self.scaler.load_state_dict(payload["scaler"])
            _set_rng_state(payload["rng"])
            self.step, self.epoch = payload["step"], payload["epoch"]
            self.step_in_epoch = payload["step_in_epoch"]
            self.spent = float(payload.get("seconds", 0.0))  # absent in checkpoints of older versions
        if resume:
            self.spent = max(self.spent, self.log.resume(self.step))
        else:
            self.log.restart()

    def seconds(self) -> float:
        """Training time of every attempt so far."""
        return self.spent + time.perf_counter() - self._start

    def _stopped(self) -> bool:
        return self.settings.max_steps > 0 and self.step >= self.settings.max_steps

    def _checkpoint(self, epoch: int, step_in_epoch: int) -> None:
        if self.checkpoint_path is None:
            return
        if self.ctx.main:
            payload = {
                "key": self.key,
                "module": self.module.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": _rng_state(),
                "step": self.step,
                "epoch": epoch,
                "step_in_epoch": step_in_epoch,
                "seconds": self.seconds(),
            }
            _save_checkpoint(self.checkpoint_path, payload)
        if self.ctx.world_size > 1:
            dist.barrier()

    def run(
        self,
        dataset: Dataset[Any],
        plan: Callable[[int], list[list[Sample]]],
        forward: Forward,
        start_epoch: Callable[[int], None] | None = None,
    ) -> LoopResult:
        """Train from where :meth:`restore` left off to the end of the last epoch or ``max_steps``.

        Args:
            dataset: the training images, indexed by the plan's samples.
            plan: this process's batches of an epoch (the whole epoch: a resumed run skips what it trained).
            forward: the loss and class scores of a batch (runs under autocast on CUDA).
            start_epoch: called before each epoch (e.g. to set training modes).
        """
        wrapped = self.module
        if self.ctx.world_size > 1:
            device_ids = [torch.cuda.current_device()] if self.cuda else None
            wrapped = DistributedDataParallel(self.module, device_ids=device_ids)
        self._start = time.perf_counter()
        result = LoopResult(steps=self.step)
        bar = tqdm(
            total=self.settings.total_steps, initial=self.step, desc=self.desc, unit="step",
            disable=not (self.progress and self.ctx.main),
        )  # fmt: skip
        with self.log:
            for epoch in range(self.epoch, self.settings.epochs):
                if self._stopped():
                    break
                if start_epoch is not None:
                    start_epoch(epoch)
                first = self.step_in_epoch if epoch == self.epoch else 0
                self._epoch(wrapped, dataset, plan(epoch), first, epoch, forward, bar, result)
                if not self._stopped():
                    self._checkpoint(epoch + 1, 0)
        bar.close()
        result.steps, result.seconds = self.step, self.seconds()
        return result

    def _epoch(
        self,
        wrapped: nn.Module,
        dataset: Dataset[Any],
        batches: list[list[Sample]],
        first: int,
        epoch: int,
        forward: Forward,
        bar: Any,
        result: LoopResult,
    ) -> None:
        """One epoch from its optimizer step ``first``; its mean loss and accuracy go to ``result``."""
        accumulation = self.settings.accumulation_steps
        steps_in_epoch = len(batches) // accumulation
        step_in_epoch = first
        running = torch.zeros(2, device=self.ctx.device)
        sums, in_step = np.zeros(3), 0  # loss * n, correct, n over the epoch; images of the step so far
        loader = batch_loader(
            dataset, batches[first * accumulation :], self.settings.workers, self.ctx.device
        )
        for i, (images, labels) in enumerate(loader):
            images = images.to(self.ctx.device, non_blocking=True).float().div_(255.0)
            if self.cuda and self.settings.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            labels = labels.to(self.ctx.device, non_blocking=True)
            with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=self.use_amp):
                loss, scores = forward(wrapped, images, labels)
            self.scaler.scale(loss / accumulation).backward()
            correct = (scores.argmax(dim=1) == labels).float().mean()
            running += torch.stack([loss.detach(), correct]) / accumulation
            in_step += len(labels)
            if (i + 1) % accumulation:
                continue
            lr = self._optimizer_step()
            step_in_epoch += 1
            result.last_loss, result.last_accuracy = _mean_across_ranks(running, self.ctx).tolist()
            running.zero_()
            sums += (result.last_loss * in_step, result.last_accuracy * in_step, in_step)
            in_step = 0
            self._log_step(epoch, lr, result, bar)
            every = self.settings.checkpoint_every
            if self._stopped() or (every and self.step % every == 0):
                done_epoch = step_in_epoch >= steps_in_epoch
                self._checkpoint(epoch + 1 if done_epoch else epoch, 0 if done_epoch else step_in_epoch)
            if self._stopped():
                break
        if sums[2] > 0:
            result.epoch_losses.append(float(sums[0] / sums[2]))
            result.epoch_accuracies.append(float(sums[1] / sums[2]))

    def _optimizer_step(self) -> float:
        """Step the optimizer at this step's learning rate (returned) and clear the gradients."""
        s = self.settings
        lr = lr_at(self.step, s.total_steps, s.lr, s.warmup_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return lr

    def _log_step(self, epoch: int, lr: float, result: LoopResult, bar: Any) -> None:
        loss, accuracy = result.last_loss, result.last_accuracy
        self.log.write(
            {
                "step": self.step_offset + self.step,
                **self.log_extra,
                "epoch": epoch,
                "loss": f"{loss:.5f}",
                "accuracy": f"{accuracy:.4f}",
                "lr": f"{lr:.6g}",
                "seconds": f"{self.seconds():.2f}",
            }
        )
        bar.update(1)
        bar.set_postfix(epoch=epoch, loss=f"{loss:.3f}", acc=f"{accuracy:.2f}", lr=f"{lr:.2g}")
