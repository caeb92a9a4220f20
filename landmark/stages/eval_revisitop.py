"""Stage ``eval-revisitop``: the direct evaluation of a Revisited Oxford/Paris-format benchmark.

``root/name`` holds ``gnd_<name>.pkl`` and ``jpg/``; :func:`landmark.retrieval.revisitop_eval.evaluate_revisitop`
describes its database images and cropped queries and scores retrieval with the configured re-ranking; this stage
adds the local features that spatial verification needs. ``out_dir`` receives ``ranks.npy`` and ``metrics.json``
(easy/medium/hard mAP and mP@k in percent).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from landmark.cleaning.verify import StoreVerifier
from landmark.config import Config, resolve_device
from landmark.data.revisitop import image_uri
from landmark.features.local_extract import LocalItem, extract_local_to_store
from landmark.retrieval.rerank import Verifier
from landmark.retrieval.revisitop_eval import RevisitopBenchmark, SpatialSetup, evaluate_revisitop


def revisitop_local_verifier(
    cfg: Config,
    benchmark: RevisitopBenchmark,
    db_store: Path,
    query_store: Path,
    *,
    progress: bool = True,
) -> tuple[Verifier, dict[str, Any]]:
    """Local features (``cfg.local``) of a Revisited-format benchmark's database images and of its queries cropped
    to their bbx, each extracted into its store unless already there (keyed by image id), and a spatial verifier
    over them (``cfg.verify``): queries come from ``query_store``, candidates from ``db_store``. When every query is
    a database photo described whole (a leave-one-out set), the queries' features are the database's.

    Returns:
        The verifier and what was extracted (for metrics.json).
    """
    device = resolve_device(cfg.device)
    dataset_dir, truths = benchmark.dataset_dir, benchmark.truths
    if benchmark.whole_image_positions is not None:
        query_store, truths = db_store, ()
    runs = {
        name: extract_local_to_store(
            items, store, cfg.local, device=device, desc=f"local {name}", progress=progress
        )
        for name, items, store in (
            ("database", [LocalItem(i, dataset_dir / image_uri(i)) for i in benchmark.db_names], db_store),
            (
                "queries",
                [LocalItem(t.query_id, dataset_dir / image_uri(t.query_id), t.bbox) for t in truths],
                query_store,
            ),
        )
    }
    report = {
        "backend": cfg.local.backend,
        "image_size": cfg.local.image_size,
        "max_features": cfg.local.max_features,
        "stores": {"database": str(db_store), "queries": str(query_store)},
        "extracted": {name: run.extracted for name, run in runs.items()},
    }
    return StoreVerifier([db_store], cfg.verify, query_store=query_store), report


def _local_verifier_setup(cfg: Config, db_store: Path, query_store: Path, *, progress: bool) -> SpatialSetup:
    """Spatial verification for :func:`evaluate_revisitop`: :func:`revisitop_local_verifier` over a benchmark's
    images, with the database's local features in ``db_store`` and the cropped queries' in ``query_store``."""

    def setup(benchmark: RevisitopBenchmark) -> tuple[Verifier, dict[str, Any]]:
        return revisitop_local_verifier(cfg, benchmark, db_store, query_store, progress=progress)

    return setup


def eval_revisitop(
    cfg: Config,
    root: Path,
    name: str,
    out_dir: Path,
    *,
    model: Path | None = None,
    rerank_steps: Sequence[str] | None = None,
    spatial: bool = False,
    local_cache: Path | None = None,
    features_cache: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate retrieval on ``root/name`` (``gnd_<name>.pkl`` + ``jpg/``) with the configured model.

    Queries are cropped to their bbx; descriptors are cached (resumably) under ``out_dir/features``. Writes
    ``out_dir/ranks.npy`` (int64, (n_database, n_queries), column q = database indices best first, 0-based)
    and ``out_dir/metrics.json`` (easy/medium/hard mAP and mP@k in percent).

    Args:
        cfg: the config (``model``, ``extract``, ``rerank``, ``index``, ``evaluate``; with ``spatial`` also
            ``local`` and ``verify``).
        root: directory holding ``<name>/``.
        name: dataset name, e.g. "roxford5k".
        out_dir: output directory.
        model: a trained model directory (``landmark train``), or a checkpoint file used as
            ``model.pretrained`` (timm backbone weights); None = the off-the-shelf pretrained backbone + GeM.
        rerank_steps: re-ranking steps (see :func:`rerank_for_steps`); None = the config's (DBA/QE only).
        spatial: after them, re-rank the top ``rerank.spatial_top`` by spatial-verification inliers (the same
            step as :func:`evaluate`), with local features (``local.backend``) of the database images and of the
            cropped queries.
        local_cache: local feature root for the database images (``<local_cache>/index``, keyed by image id, so
            benchmarks over the same images share it); default ``out_dir/local``. Cropped queries always go to
            ``out_dir/local/queries``.
        features_cache: global descriptor root for the database images (``<features_cache>/index``, keyed by
            image id; one model per root); default ``out_dir/features``. Cropped queries always go to
            ``out_dir/features/test``.
        progress: show extraction progress.

    Returns:
        The metrics written.
    """
    out_dir = Path(out_dir)
    setup = None
    if spatial:
        db_local = (Path(local_cache) if local_cache is not None else out_dir / "local") / "index"
        setup = _local_verifier_setup(cfg, db_local, out_dir / "local" / "queries", progress=progress)
    return evaluate_revisitop(
        cfg,
        root,
        name,
        out_dir,
        model=model,
        rerank_steps=rerank_steps,
        spatial=setup,
        features_cache=features_cache,
        progress=progress,
    )
