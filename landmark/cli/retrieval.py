"""Retrieval commands: ``extract`` global descriptors, build the ``index``, ``evaluate`` retrieval and recognition,
``eval-revisitop`` on a Revisited Oxford/Paris-format benchmark."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from landmark.cli._app import FORMAT_HELP, app, out, state, user_errors

# stages are imported inside the commands: measured, `landmark --help` takes 0.5 s, importing the stages 5.4 s


@app.command()
@user_errors
def extract(
    data: Annotated[
        Path | None, typer.Option(help="dataset root (default: paths.catalog, the validated catalog)")
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="feature store root (default: paths.features)")
    ] = None,
    split: Annotated[list[str] | None, typer.Option(help="split(s) to extract (default: all)")] = None,
    fmt: Annotated[str, typer.Option("--format", help=FORMAT_HELP)] = "auto",
    model: Annotated[
        Path | None, typer.Option(help="trained model directory (default: off-the-shelf backbone + GeM)")
    ] = None,
) -> None:
    """Extract multi-scale global descriptors into memory-mapped shards (resumable); undecodable images are
    skipped and listed in <out>/<split>/quarantined.json (the split fails above extract.max_bad_share)."""
    from landmark.data.bad_images import QUARANTINE_FILE, reason_counts
    from landmark.stages.extract import extract as run_extract

    cfg = state.config()
    start = time.perf_counter()
    added = run_extract(
        cfg,
        data or Path(cfg.paths.catalog),
        out_dir or Path(cfg.paths.features),
        splits=split or (),
        fmt=fmt,
        model_dir=model,
    )
    seconds = time.perf_counter() - start
    out.print(f"extracted {sum(added.values())} new descriptors {dict(added)} in {seconds:.1f}s")
    for name, bad in added.bad_images.items():
        if bad:
            out.print(
                f"{name}: skipped {len(bad)} undecodable images {reason_counts(bad)}, listed in "
                f"{(out_dir or Path(cfg.paths.features)) / name / QUARANTINE_FILE}",
                markup=False, soft_wrap=True,
            )  # fmt: skip


@app.command()
@user_errors
def index(
    data: Annotated[
        Path | None, typer.Option(help="dataset root (default: paths.catalog, the validated catalog)")
    ] = None,
    features: Annotated[
        Path | None, typer.Option(help="feature store root (default: paths.features)")
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="index directory (default: paths.index)")
    ] = None,
    split: Annotated[str, typer.Option(help="split to index")] = "index",
    fmt: Annotated[str, typer.Option("--format", help=FORMAT_HELP)] = "auto",
) -> None:
    """Build the FAISS index of the index split (exact or IVF-PQ, sharded, written atomically)."""
    from landmark.stages.index import build_index

    cfg = state.config()
    target = out_dir or Path(cfg.paths.index)
    start = time.perf_counter()
    meta = build_index(
        cfg,
        data or Path(cfg.paths.catalog),
        features or Path(cfg.paths.features),
        target,
        split=split,
        fmt=fmt,
    )
    seconds = time.perf_counter() - start
    out.print(
        f"{meta['kind']} index of {meta['ntotal']} x {meta['dim']} vectors in {len(meta['shards'])} shard(s), "
        f"model version {meta['model_version']}, written to [bold]{target}[/] in {seconds:.1f}s"
    )


@app.command()
@user_errors
def evaluate(
    data: Annotated[
        Path | None, typer.Option(help="dataset root (default: paths.catalog, the validated catalog)")
    ] = None,
    features: Annotated[
        Path | None, typer.Option(help="feature store root (default: paths.features)")
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="output directory (default: paths.eval)")
    ] = None,
    index_dir: Annotated[
        Path | None,
        typer.Option("--index", help="saved index (`landmark index`) for the first-stage search"),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help=FORMAT_HELP)] = "auto",
    local: Annotated[
        Path | None,
        typer.Option(
            help="local features (`landmark local`) for rerank.spatial / recognize.inliers (default: paths.local)"
        ),
    ] = None,
) -> None:
    """Retrieve (+ re-rank) and recognise the test images; write metrics.json, ranks.npy and plots."""
    from landmark.stages.evaluate import evaluate as run_evaluate

    cfg = state.config()
    target = out_dir or Path(cfg.paths.eval)
    metrics = run_evaluate(
        cfg,
        data or Path(cfg.paths.catalog),
        features or Path(cfg.paths.features),
        target,
        index_dir=index_dir,
        fmt=fmt,
        local_dir=local or Path(cfg.paths.local),
    )
    if "revisitop" in metrics:
        out.print(metrics_table(metrics))
    out.print(summary_line(metrics))
    out.print(f"metrics written to [bold]{target / 'metrics.json'}[/]")


@app.command("eval-revisitop")
@user_errors
def eval_revisitop(
    root: Annotated[
        Path, typer.Option(help="directory holding <dataset>/gnd_<dataset>.pkl and <dataset>/jpg/")
    ],
    dataset: Annotated[str, typer.Option(help="dataset name, e.g. roxford5k")],
    out_dir: Annotated[Path, typer.Option("--out", help="output directory (ranks.npy, metrics.json)")],
    model: Annotated[
        Path | None,
        typer.Option(
            help="trained model directory, or a checkpoint file used as model.pretrained "
            "(default: the configured pretrained backbone)"
        ),
    ] = None,
    rerank: Annotated[
        list[str] | None,
        typer.Option(
            help="re-ranking step, repeatable: dba, qe (alpha-QE), dqe or none (default: the config's)"
        ),
    ] = None,
    spatial: Annotated[
        bool,
        typer.Option(
            help="then re-rank the top rerank.spatial_top by spatial-verification inliers (local features of "
            "the database and the cropped queries with local.backend, extracted once and cached)"
        ),
    ] = False,
    local_cache: Annotated[
        Path | None,
        typer.Option(
            help="local features of the database images, shared between runs (default: <out>/local)"
        ),
    ] = None,
    features_cache: Annotated[
        Path | None,
        typer.Option(
            help="global descriptors of the database images, shared between runs of one model "
            "(default: <out>/features)"
        ),
    ] = None,
) -> None:
    """Evaluate on a Revisited Oxford/Paris-format benchmark: ranks.npy (n_db, n_queries) + metrics.json."""
    from landmark.stages.eval_revisitop import eval_revisitop as run_eval_revisitop

    cfg = state.config()
    metrics = run_eval_revisitop(
        cfg,
        root,
        dataset,
        out_dir,
        model=model,
        rerank_steps=rerank,
        spatial=spatial,
        local_cache=local_cache,
        features_cache=features_cache,
    )
    out.print(metrics_table(metrics))
    out.print(f"ranks and metrics written to [bold]{out_dir}[/]")


def summary_line(metrics: dict[str, Any]) -> str:
    """One line with the GLDv2 retrieval and recognition figures that are present."""
    parts = [f"re-ranking: {' -> '.join(metrics['rerank']['steps']) or 'none'}"]
    if "gldv2_retrieval" in metrics:
        parts.append(f"mAP@100 {metrics['gldv2_retrieval']['mAP@100']:.2f}")
    recognition = metrics.get("recognition", {})
    if "GAP" in recognition:
        parts.append(f"GAP {recognition['GAP']:.2f}, top-1 {recognition['top1']:.2f}")
    elif "skipped" in recognition:
        parts.append(f"recognition skipped: {recognition['skipped']}")
    return "; ".join(parts)


def metrics_table(metrics: dict[str, Any]) -> Table:
    """A rich table of the revisited-protocol metrics."""
    rev = metrics["revisitop"]
    columns = [k for k in rev["medium"] if k != "queries"]
    table = Table(
        title=f"Retrieval: {metrics['n_queries']} queries x {metrics['n_database']} database images"
    )
    table.add_column("protocol")
    for column in columns:
        table.add_column(column, justify="right")
    for protocol in ("easy", "medium", "hard"):
        table.add_row(protocol, *(f"{rev[protocol][c]:.2f}" for c in columns))
    return table
