"""Serving commands: ``search`` and ``recognize`` (images on the command line) and ``serve`` (the HTTP API)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from landmark.cli._app import app, console, out, state, user_errors
from landmark.config import Config
from landmark.errors import InputError

if TYPE_CHECKING:
    from landmark.serving.api import ServingState
    from landmark.serving.bundle import ServedModel
    from landmark.serving.service import RegistryFollower

VersionOption = Annotated[
    str | None, typer.Option("--version", help="registry version to use (default: production)")
]
LocalOption = Annotated[
    Path | None,
    typer.Option(
        "--local",
        help="serve from disk, no store: a version-like directory (model/ + index/), or a model directory "
        "with --index",
    ),
]
IndexOption = Annotated[
    Path | None, typer.Option("--index", help="index directory for a --local model directory")
]
MetricsOption = Annotated[
    Path | None,
    typer.Option("--metrics", help="evaluation metrics.json with the 'no landmark' threshold (with --local)"),
]
LocalFeaturesOption = Annotated[
    Path | None,
    typer.Option(
        "--local-features",
        help="local feature stores index/ and train/ (`landmark local`) for rerank.spatial / recognize.inliers "
        "(default: paths.local)",
    ),
]
ImagesArgument = Annotated[
    list[Path], typer.Argument(help="image files to query with", metavar="IMAGE", show_default=False)
]
JsonOption = Annotated[bool, typer.Option("--json", help="print one JSON document instead of tables")]


@dataclass(frozen=True)
class Source:
    """Where the served model comes from: a registry version (None = production) or a directory on disk."""

    version: str | None = None
    local: Path | None = None
    index: Path | None = None
    metrics: Path | None = None
    local_features: Path | None = None

    def check(self) -> None:
        if self.local is None and (self.index is not None or self.metrics is not None):
            raise InputError("--index and --metrics go with --local (a model directory on disk)")
        if self.local is not None and self.version is not None:
            raise InputError("give --version (a registry version) or --local (a directory), not both")


def production_version(cfg: Config) -> str:
    """The registry's production version id.

    Raises:
        RegistryError: nothing is in production.
    """
    from landmark.ops.registry import RegistryError
    from landmark.stages.promote import open_registry

    pointer = open_registry(cfg).production()
    if pointer is None:
        raise RegistryError(
            f"nothing is in production in the registry '{cfg.promote.prefix}' (promote a model, or use --local)"
        )
    return pointer.version


def open_served(cfg: Config, source: Source) -> ServedModel:
    """Load the model to answer with: from disk (``--local``) or a registry version, cached and verified."""
    from landmark.serving.bundle import load_local, load_version_dir
    from landmark.serving.cache import cached_version
    from landmark.stages.promote import open_registry

    source.check()
    local_dir = source.local_features or Path(cfg.paths.local)
    if source.local is not None:
        return load_local(cfg, source.local, source.index, metrics_path=source.metrics, local_dir=local_dir)
    registry = open_registry(cfg)
    version = source.version or production_version(cfg)
    root = cached_version(registry, version, Path(cfg.serve.cache))
    return load_version_dir(cfg, root, version=version, local_dir=local_dir)


def read_image(path: Path, cfg: Config) -> Any:
    """Decode an image file with the pipeline's decoder and the serving limits."""
    from landmark.data.images import ImageDecodeError
    from landmark.serving.query import decode_query

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ImageDecodeError(
            str(path), "unreadable", f"{type(exc).__name__}: {exc.strerror or exc}"
        ) from exc
    return decode_query(data, max_bytes=cfg.serve.max_bytes, max_pixels=cfg.serve.max_pixels, name=str(path))


def answer_files(
    cfg: Config, served: ServedModel, images: list[Path], *, top: int, recognize: bool
) -> list[dict[str, Any]]:
    """One JSON-ready answer per image (an ``error`` and ``reason`` for images that do not decode)."""
    from landmark.data.images import ImageDecodeError
    from landmark.serving.query import describe_query
    from landmark.serving.query import recognize as recognize_queries
    from landmark.serving.query import search as search_queries

    answers = []
    for path in images:
        entry: dict[str, Any] = {"image": str(path), "version": served.version}
        try:
            query = describe_query(served, read_image(path, cfg))
        except ImageDecodeError as exc:
            answers.append({**entry, "error": exc.reason, "detail": exc.detail})
            continue
        if recognize:
            entry.update(recognize_queries(served, [query])[0].to_dict())
        else:
            entry["results"] = [h.to_dict() for h in search_queries(served, [query], top)[0]]
        answers.append(entry)
    return answers


def results_table(answer: dict[str, Any]) -> Table:
    """Rank, image id, landmark, score (and inliers when verification ran) of one search."""
    hits = answer["results"]
    with_inliers = any(h["inliers"] is not None for h in hits)
    table = Table()
    for column in ("rank", "image id", "landmark", "score") + (("inliers",) if with_inliers else ()):
        table.add_column(column, justify="right" if column != "image id" else "left")
    for hit in hits:
        landmark = "-" if hit["landmark"] is None else str(hit["landmark"])
        if hit["landmark_source"] == "predicted":
            landmark += " (predicted)"
        row = [str(hit["rank"]), hit["image_id"], landmark, f"{hit['score']:.4f}"]
        table.add_row(*row, *([str(hit["inliers"])] if with_inliers else []))
    return table


def recognition_line(answer: dict[str, Any]) -> str:
    """``IMAGE: landmark L (confidence C)`` or ``IMAGE: no landmark (...)``."""
    threshold = "uncalibrated" if answer["threshold"] is None else f"threshold {answer['threshold']:.4f}"
    if answer["accepted"]:
        verdict = (
            f"landmark [bold]{answer['landmark']}[/] (confidence {answer['confidence']:.4f}, {threshold})"
        )
    elif answer["predicted"] is None:
        verdict = "[yellow]no landmark[/] (no neighbour voted)"
    else:
        verdict = (
            f"[yellow]no landmark[/] (best {answer['predicted']} at confidence {answer['confidence']:.4f}, "
            f"{threshold})"
        )
    return f"{escape(answer['image'])}: {verdict}  [dim]version {answer['version']}[/]"


def print_answers(answers: list[dict[str, Any]], *, as_json: bool, recognize: bool) -> None:
    """Print answers as one JSON document or as tables / lines; exit 1 when an image failed."""
    if as_json:
        out.print_json(json.dumps(answers))
    else:
        for answer in answers:
            if "error" in answer:
                console.print(
                    f"[bold red]error:[/] {escape(answer['image'])}: {answer['error']}: {escape(answer['detail'])}",
                    soft_wrap=True,
                )
            elif recognize:
                out.print(recognition_line(answer), soft_wrap=True)
            else:
                out.print(f"{escape(answer['image'])}  [dim]version {answer['version']}[/]", soft_wrap=True)
                out.print(results_table(answer))
    if any("error" in a for a in answers):
        raise typer.Exit(1)


@app.command()
@user_errors
def search(
    images: ImagesArgument,
    top: Annotated[
        int | None, typer.Option("--top", "-k", help="results per image (default: serve.top)")
    ] = None,
    as_json: JsonOption = False,
    version: VersionOption = None,
    local: LocalOption = None,
    index: IndexOption = None,
    metrics: MetricsOption = None,
    local_features: LocalFeaturesOption = None,
) -> None:
    """Search the production index (or --version / --local) with image files: rank, image id, landmark, score."""
    cfg = state.config()
    served = open_served(cfg, Source(version, local, index, metrics, local_features))
    answers = answer_files(cfg, served, images, top=top or cfg.serve.top, recognize=False)
    print_answers(answers, as_json=as_json, recognize=False)


@app.command()
@user_errors
def recognize(
    images: ImagesArgument,
    as_json: JsonOption = False,
    version: VersionOption = None,
    local: LocalOption = None,
    index: IndexOption = None,
    metrics: MetricsOption = None,
    local_features: LocalFeaturesOption = None,
) -> None:
    """Recognise the landmark in image files, or "no landmark" below the calibrated threshold."""
    cfg = state.config()
    served = open_served(cfg, Source(version, local, index, metrics, local_features))
    answers = answer_files(cfg, served, images, top=1, recognize=True)
    print_answers(answers, as_json=as_json, recognize=True)


@app.command()
@user_errors
def serve(
    host: Annotated[str | None, typer.Option(help="bind address (default: serve.host)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default: serve.port)")] = None,
    version: Annotated[
        str | None,
        typer.Option("--version", help="serve this registry version only (default: follow production)"),
    ] = None,
    local: LocalOption = None,
    index: IndexOption = None,
    metrics: MetricsOption = None,
    local_features: LocalFeaturesOption = None,
    data: Annotated[
        Path | None,
        typer.Option(
            help="catalog or dataset whose index images the page shows (default: paths.catalog if present)"
        ),
    ] = None,
) -> None:
    """Serve search and recognition over HTTP, following the registry's production pointer.

    POST /search and /recognize (multipart 'image' upload, raw image body, or an allowed 'url'), GET /healthz,
    GET /metrics (Prometheus) and GET / (a page with thumbnails from --data). A promotion or rollback is served
    within serve.poll_s. Each query's image statistics and descriptor go to the query log (serve.log_dir), which
    `landmark drift --purpose serving` compares with the training data.
    """
    import uvicorn

    from landmark.serving.api import ServingState, create_app
    from landmark.serving.service import ModelSlot, warm_up
    from landmark.serving.thumbs import catalog_thumbnails

    cfg = state.config()
    source = Source(version, local, index, metrics, local_features)
    serving = ServingState(ModelSlot(), cfg.serve)
    if source.local is not None or source.version is not None:
        served = open_served(cfg, source)
        warm_up(served)
        serving.slot.swap(served)
        serving.metrics.served(served.version, served.model_id, int(served.db.shape[0]))
    else:
        serving.follower = start_follower(cfg, serving, local_features or Path(cfg.paths.local))
    catalog = data or (Path(cfg.paths.catalog) if Path(cfg.paths.catalog).is_dir() else None)
    if catalog is not None:
        serving.thumbnails = catalog_thumbnails(cfg, catalog)
    bind = f"{host or cfg.serve.host}:{port or cfg.serve.port}"
    current = serving.slot.get()
    console.print(
        f"serving {current.version if current else '(nothing yet: waiting for a production version)'} on "
        f"http://{bind}",
        soft_wrap=True,
    )
    start_query_log(cfg, serving)
    try:
        uvicorn.run(
            create_app(serving), host=host or cfg.serve.host, port=port or cfg.serve.port, log_level="info"
        )
    finally:
        if serving.follower is not None:
            serving.follower.stop()
        stop_query_log(serving)


def start_query_log(cfg: Config, serving: ServingState) -> None:
    """The query log (``serve.log``), started."""
    from landmark.serving.query_log import QueryLog

    if cfg.serve.log:
        serving.query_log = QueryLog.from_config(cfg.serve).start()
        console.print(f"query log: {cfg.serve.log_dir}", soft_wrap=True)


def stop_query_log(serving: ServingState) -> None:
    """Write the rest of the query log."""
    if serving.query_log is not None:
        serving.query_log.close()


def start_follower(cfg: Config, serving: ServingState, local_dir: Path | None) -> RegistryFollower:
    """A registry follower for ``serving`` (its first poll done here, so a production version serves at once)."""
    from landmark.serving.service import RegistryFollower, cache_pruner, registry_loader
    from landmark.stages.promote import open_registry

    registry = open_registry(cfg)
    cache = Path(cfg.serve.cache)

    def read_pointer() -> str | None:
        pointer = registry.production()
        return None if pointer is None else pointer.version

    follower = RegistryFollower(
        serving.slot,
        read_pointer,
        registry_loader(cfg, registry, cache, local_dir),
        cfg.serve.poll_s,
        metrics=serving.metrics,
        on_swap=cache_pruner(cache, cfg.serve.keep_versions),
    )
    follower.check()
    follower.start()
    return follower
