"""The HTTP API of ``landmark serve`` (FastAPI on uvicorn).

Endpoints:

- ``POST /search?top=K`` and ``POST /recognize[?top=K]``: the query image as a multipart upload (field
  ``image``), as the raw request body (``Content-Type: image/...`` or ``application/octet-stream``), or as an
  image URL (form field ``url`` or JSON ``{"url": ...}``) when ``serve.allow_urls`` is on. ``/recognize`` with
  ``top`` also returns the search results of the same descriptor.
- ``GET /healthz``: the version in service, its model and index, the registry follower's state (200 while a
  version serves, 503 before the first load).
- ``GET /metrics``: Prometheus text.
- ``GET /``: a page to try it (:mod:`landmark.serving.page`); ``GET /thumbs/<image id>``: a JPEG thumbnail of an
  indexed image, rendered from the catalog (when the server was given one).

Every answer carries the version that produced it (``version`` in the JSON body and the ``X-Landmark-Version``
header). Refused requests get a 4xx with ``{"error": <reason code>, "detail": ...}``; image reasons are the
pipeline decoder's (:data:`landmark.data.images.DECODE_REASONS`), URL reasons the ingest fetcher's.

With a :class:`~landmark.serving.query_log.QueryLog`, every query image that reached the decoder is logged (its
statistics, its descriptor, or the decoder's reason).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from landmark.config import ServeConfig
from landmark.data.fetch import FetchError, HttpFetcher
from landmark.data.images import ImageDecodeError
from landmark.data.sources import SourceItem
from landmark.ops.drift import decoded_row, failed_row
from landmark.serving.bundle import ServedModel
from landmark.serving.metrics import CONTENT_TYPE, ServingMetrics
from landmark.serving.page import PAGE_HTML
from landmark.serving.query import (
    Query,
    RecognitionUnavailableError,
    decode_query,
    describe_query,
    recognize,
    search,
)
from landmark.serving.query_log import LoggedQuery, QueryLog, new_query_id
from landmark.serving.service import ModelSlot, RegistryFollower
from landmark.serving.thumbs import Thumbnails

logger = logging.getLogger(__name__)

VERSION_HEADER = "X-Landmark-Version"
FORM_OVERHEAD = 64 * 1024  # multipart boundaries and headers allowed on top of serve.max_bytes
IMAGE_FIELDS = ("image", "file")

# HTTP status of each refusal reason
REASON_STATUS = {
    # the request itself
    "missing_image": 400,
    "ambiguous_input": 400,
    "bad_request": 400,
    "bad_top": 400,
    # the pipeline decoder's reasons (landmark.data.images.DECODE_REASONS)
    "empty": 400,
    "not_an_image": 415,
    "too_large": 413,
    "truncated": 422,
    "corrupt": 422,
    "unreadable": 422,
    # image URLs (the ingest fetcher's reasons, plus the server's policy)
    "urls_disabled": 403,
    "url_host_not_allowed": 403,
    "bad_url": 400,
    "bad_content_type": 415,
    "http_error": 422,
    "timeout": 422,
    "connection_error": 422,
    "missing_file": 422,
    # thumbnails
    "unknown_image": 404,
    "no_catalog": 404,
    # the server's state
    "recognition_unavailable": 409,
    "no_model": 503,
}


class RequestRefused(Exception):
    """A request answered with an error status and a reason code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail
        self.status = REASON_STATUS.get(reason, 400)


@dataclass
class ServingState:
    """What the API serves from: the model slot, the config, metrics, the registry follower, the catalog's
    thumbnails and the query log (each optional)."""

    slot: ModelSlot
    cfg: ServeConfig
    metrics: ServingMetrics = field(default_factory=ServingMetrics)
    follower: RegistryFollower | None = None
    thumbnails: Thumbnails | None = None
    query_log: QueryLog | None = None

    def fetcher(self) -> HttpFetcher:
        return HttpFetcher(
            timeout_s=self.cfg.url_timeout_s,
            retries=0,
            backoff_s=0.0,
            max_bytes=self.cfg.max_bytes,
            content_types=("image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp", "image/tiff"),
            user_agent="landmark-serve/0.1",
        )


@dataclass(frozen=True)
class QueryInput:
    """The query image's bytes (or the URL to fetch them from) and a name for messages."""

    data: bytes | None
    url: str | None
    name: str


# ---------------------------------------------------------------------------------------------------------------
# Reading the request


async def read_capped(request: Request, limit: int) -> bytes:
    """The raw body, refused as "too_large" as soon as it exceeds ``limit`` bytes."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestRefused("too_large", f"request body exceeds max_bytes={limit}")
        chunks.append(chunk)
    return b"".join(chunks)


def check_length(request: Request, limit: int) -> None:
    """Refuse early when the declared Content-Length is over ``limit``."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise RequestRefused("too_large", f"Content-Length {length} exceeds the limit of {limit} bytes")


async def read_query_input(request: Request, cfg: ServeConfig) -> QueryInput:
    """The query from a form (multipart upload or ``url`` field), a JSON ``{"url"}`` body, or a raw image body."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media in ("multipart/form-data", "application/x-www-form-urlencoded"):
        check_length(request, cfg.max_bytes + FORM_OVERHEAD)
        return await _read_form(request, cfg)
    if media == "application/json":
        check_length(request, FORM_OVERHEAD)
        try:
            payload = await request.json()
        except ValueError as exc:
            raise RequestRefused("bad_request", f"the JSON body does not parse: {exc}") from exc
        url = payload.get("url") if isinstance(payload, dict) else None
        if not isinstance(url, str) or not url:
            raise RequestRefused("missing_image", 'a JSON body must be {"url": "<image url>"}')
        return QueryInput(None, url, url)
    check_length(request, cfg.max_bytes)
    return QueryInput(await read_capped(request, cfg.max_bytes), None, "<body>")


async def _read_form(request: Request, cfg: ServeConfig) -> QueryInput:
    try:
        form = await request.form(max_files=1, max_fields=8)
    except MultiPartException as exc:
        raise RequestRefused("bad_request", f"malformed multipart form: {exc}") from exc
    uploads = [form.get(name) for name in IMAGE_FIELDS]
    upload = next((u for u in uploads if isinstance(u, UploadFile)), None)
    url = form.get("url")
    url = url if isinstance(url, str) and url.strip() else None
    if url is not None:
        if upload is not None:
            raise RequestRefused("ambiguous_input", "give either an uploaded image or a url, not both")
        return QueryInput(None, url.strip(), url.strip())
    if upload is None:
        raise RequestRefused("missing_image", "no image: upload one in the 'image' field or give a 'url'")
    data = await upload.read(cfg.max_bytes + 1)
    return QueryInput(data, None, upload.filename or "<upload>")


def check_url(url: str, cfg: ServeConfig) -> None:
    """Refuse URLs unless ``serve.allow_urls``; only http(s) to an allowed host."""
    if not cfg.allow_urls:
        raise RequestRefused(
            "urls_disabled", "this server does not fetch image URLs (serve.allow_urls is off)"
        )
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RequestRefused("bad_url", f"only http(s) URLs with a host are fetched, got {url!r}")
    if cfg.url_hosts and parts.hostname.lower() not in {h.lower() for h in cfg.url_hosts}:
        raise RequestRefused("url_host_not_allowed", f"host {parts.hostname!r} is not in serve.url_hosts")


def parse_top(raw: str | None, default: int, served: ServedModel) -> int:
    """The ``top`` query parameter, in [0, evaluate.topk] (0 only where results are optional)."""
    if raw is None:
        return default
    try:
        top = int(raw)
    except ValueError as exc:
        raise RequestRefused("bad_top", f"top must be an integer, got {raw!r}") from exc
    if not 0 <= top <= served.topk:
        raise RequestRefused("bad_top", f"top must be in [0, {served.topk}], got {top}")
    return top


# ---------------------------------------------------------------------------------------------------------------
# Answering


def query_bytes(state: ServingState, query: QueryInput) -> bytes:
    """The image bytes: as sent, or fetched from the (allowed) URL."""
    if query.data is not None:
        return query.data
    url = query.url or ""
    check_url(url, state.cfg)
    try:
        return state.fetcher().fetch(SourceItem("query", url))
    except FetchError as exc:
        raise RequestRefused(exc.code, exc.detail) from exc


def answer_search(served: ServedModel, image: np.ndarray, query: Query, top: int) -> dict[str, Any]:
    """Search with one described image and ``served`` (a single version from start to end)."""
    hits = search(served, [query], top)[0] if top else []
    return {
        "version": served.version,
        "model_id": served.model_id,
        "query": {"width": int(image.shape[1]), "height": int(image.shape[0])},
        "results": [h.to_dict() for h in hits[:top]],
    }


def answer_recognize(served: ServedModel, image: np.ndarray, query: Query, top: int) -> dict[str, Any]:
    """Recognise one described image with ``served`` (and search it when ``top`` > 0)."""
    try:
        recognition = recognize(served, [query])[0]
    except RecognitionUnavailableError as exc:
        raise RequestRefused("recognition_unavailable", str(exc)) from exc
    body: dict[str, Any] = {
        "version": served.version,
        "model_id": served.model_id,
        "query": {"width": int(image.shape[1]), "height": int(image.shape[0])},
        **recognition.to_dict(),
    }
    if top:
        body["results"] = [h.to_dict() for h in search(served, [query], top)[0]]
    return body


Answer = Callable[[ServedModel, np.ndarray, Query, int], dict[str, Any]]


def answer_query(
    state: ServingState, endpoint: str, served: ServedModel, data: bytes, name: str, top: int, answer: Answer
) -> dict[str, Any]:
    """Decode and describe one image, log it, and answer it with ``served``; an image the decoder refuses is
    logged with the decoder's reason."""
    query_id = new_query_id()
    try:
        image = decode_image_or_refuse(data, name, state.cfg)
    except RequestRefused as exc:
        log_query(state, endpoint, served, failed_row(query_id, exc.reason, float(len(data))), None, data)
        raise
    query = describe_query(served, image)
    log_query(state, endpoint, served, decoded_row(query_id, image, len(data)), query.vector, data)
    return answer(served, image, query, top)


def log_query(
    state: ServingState,
    endpoint: str,
    served: ServedModel,
    stats: dict[str, Any],
    descriptor: np.ndarray | None,
    data: bytes,
) -> None:
    """Append one query to the query log (when the server keeps one)."""
    if state.query_log is None:
        return
    state.query_log.append(
        LoggedQuery(
            query_id=str(stats["image_id"]),
            endpoint=endpoint,
            version=served.version,
            model_id=served.model_id,
            stats=stats,
            descriptor=descriptor,
            image=data,
        )
    )


def decode_image_or_refuse(data: bytes, name: str, cfg: ServeConfig) -> Any:
    try:
        return decode_query(data, max_bytes=cfg.max_bytes, max_pixels=cfg.max_pixels, name=name)
    except ImageDecodeError as exc:
        raise RequestRefused(exc.reason, exc.detail) from exc


async def handle_query(
    request: Request, state: ServingState, endpoint: str, answer: Answer, default_top: int
) -> Response:
    """Read, answer and time one query request; refusals become 4xx JSON with their reason."""
    start = time.perf_counter()
    served = state.slot.get()  # this one version answers the whole request
    version = None if served is None else served.version
    try:
        if served is None:
            raise RequestRefused("no_model", "no version is in service yet (see /healthz)")
        top = parse_top(request.query_params.get("top"), default_top, served)
        query = await read_query_input(request, state.cfg)
        data = await run_in_threadpool(query_bytes, state, query)
        body = await run_in_threadpool(answer_query, state, endpoint, served, data, query.name, top, answer)
    except RequestRefused as exc:
        state.metrics.observe(endpoint, exc.status, time.perf_counter() - start, exc.reason)
        return refusal(exc, version)
    body["seconds"] = round(time.perf_counter() - start, 4)
    state.metrics.observe(endpoint, 200, time.perf_counter() - start)
    return JSONResponse(body, headers={VERSION_HEADER: body["version"]})


def refusal(exc: RequestRefused, version: str | None) -> JSONResponse:
    headers = {VERSION_HEADER: version} if version else {}
    return JSONResponse(
        {"error": exc.reason, "detail": exc.detail, "version": version},
        status_code=exc.status,
        headers=headers,
    )


def thumbnail_bytes(state: ServingState, served: ServedModel | None, image_id: str) -> bytes:
    """The thumbnail of an indexed image; refused for images the served index does not hold."""
    if served is None:
        raise RequestRefused("no_model", "no version is in service yet (see /healthz)")
    if image_id not in served.id_set:
        raise RequestRefused("unknown_image", f"{image_id!r} is not in the index of version {served.version}")
    if state.thumbnails is None:
        raise RequestRefused(
            "no_catalog", "this server was started without a catalog (landmark serve --data)"
        )
    try:
        return state.thumbnails.get(image_id)
    except KeyError as exc:
        raise RequestRefused("unknown_image", f"{image_id!r} is not in the catalog") from exc
    except ImageDecodeError as exc:
        raise RequestRefused(exc.reason, exc.detail) from exc


def health(state: ServingState) -> tuple[int, dict[str, Any]]:
    """``/healthz``: 200 with the served version while one serves, else 503."""
    served = state.slot.get()
    registry = None if state.follower is None else state.follower.status()
    degraded = registry is not None and (registry["load_error"] or registry["poll_error"])
    status = "unavailable" if served is None else "degraded" if degraded else "ok"
    body: dict[str, Any] = {
        "status": status,
        "version": None if served is None else served.version,
        "model_id": None if served is None else served.model_id,
        "index_size": None if served is None else int(served.db.shape[0]),
        "served": None if served is None else served.summary(),
        "registry": registry,
    }
    return (503 if served is None else 200), body


# ---------------------------------------------------------------------------------------------------------------
# The app


def create_app(state: ServingState) -> FastAPI:
    """The FastAPI app over ``state`` (no side effects until a server runs it)."""
    app = FastAPI(title="landmark serving", version="1", docs_url="/docs", redoc_url=None)

    @app.post("/search")
    async def search(request: Request) -> Response:
        """Search the index with one image: rank, image id, landmark, score."""
        return await handle_query(request, state, "search", answer_search, state.cfg.top)

    @app.post("/recognize")
    async def recognize(request: Request) -> Response:
        """Recognise the landmark of one image (or "no landmark" below the calibrated threshold)."""
        return await handle_query(request, state, "recognize", answer_recognize, 0)

    @app.get("/healthz")
    def healthz() -> Response:
        code, body = health(state)
        headers = {VERSION_HEADER: body["version"]} if body["version"] else {}
        return JSONResponse(body, status_code=code, headers=headers)

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(state.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        return HTMLResponse(PAGE_HTML)

    @app.get("/thumbs/{image_id}")
    def thumbnail(image_id: str) -> Response:
        """A JPEG thumbnail of an image of the served index, from the catalog."""
        served = state.slot.get()
        version = None if served is None else served.version
        try:
            data = thumbnail_bytes(state, served, image_id)
        except RequestRefused as exc:
            return refusal(exc, version)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    return app


@dataclass
class BackgroundServer:
    """A uvicorn server running an app in a thread of this process (tests, benchmarks).

    Attributes:
        app: the ASGI app.
        host: bind address (127.0.0.1).
        port: bind port (0 = a free one, read :attr:`port` after :meth:`start`).
    """

    app: FastAPI
    host: str = "127.0.0.1"
    port: int = 0
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    def start(self, timeout_s: float = 20.0) -> BackgroundServer:
        config = uvicorn.Config(self.app, host=self.host, port=self.port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="uvicorn", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"the HTTP server did not start on {self.host}:{self.port}")
            time.sleep(0.02)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
