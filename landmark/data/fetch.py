"""Fetching the bytes of one source item: over HTTP(S), from a local file, or from the object store.

Item-level failures (a 404, a timeout, a body that is too large or not an image type) raise
:class:`FetchError` with a reason code, and the item is quarantined. Failures of our own infrastructure (the
object store down) are not the item's fault: they raise :class:`~landmark.platform.storage.StorageError` and stop the
batch, to be resumed later. HTTP retries (exponential backoff) happen only where another attempt can help:
timeouts, connection errors, cut transfers, 5xx, 408 and 429; never on other 4xx answers.

Every HTTP attempt runs under a :class:`TransferBudget`: one wall-clock deadline from connect to last byte,
enforced on the socket itself (each read waits at most the time left, the status line and headers included), and
a minimum transfer rate after a grace period. A server that answers one byte per second is cut at the deadline
(or as soon as its rate is known to be too low) with the retryable reason ``timeout``.
"""

from __future__ import annotations

import functools
import http.client
import io
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from landmark.data.sources import SourceItem
from landmark.errors import LandmarkError

if TYPE_CHECKING:
    from landmark.platform.storage import ObjectStore

FETCH_REASONS = (
    "http_error",
    "timeout",
    "connection_error",
    "truncated",
    "too_large",
    "bad_content_type",
    "bad_url",
    "missing_file",
    "unreadable",
)
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_CHUNK = 1 << 16


class TransferTimeout(TimeoutError):
    """A download attempt that ran past its deadline or below its minimum rate (the message says which)."""


@dataclass
class TransferBudget:
    """The time one download attempt may take, and the slowest transfer it tolerates.

    Attributes:
        timeout_s: wall-clock deadline of the attempt, connect to last byte, in seconds.
        min_bytes_per_s: minimum mean rate since the first byte, checked once ``grace_s`` have passed since it
            (0 = no minimum).
        grace_s: seconds after the first byte before the rate is checked.
        clock: monotonic time source, seconds.
    """

    timeout_s: float
    min_bytes_per_s: float = 0.0
    grace_s: float = 2.0
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    received: int = field(default=0, init=False)
    _started: float = field(default=0.0, init=False, repr=False)
    _first_byte_at: float | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._started = self.clock()

    def remaining_s(self) -> float:
        """Seconds the next socket operation may wait.

        Raises:
            TransferTimeout: the deadline has passed, or the rate since the first byte is below the minimum.
        """
        now = self.clock()
        elapsed = now - self._started
        if elapsed >= self.timeout_s:
            raise TransferTimeout(
                f"download took longer than {self.timeout_s:g}s ({self.received} bytes read)"
            )
        if self.min_bytes_per_s > 0 and self._first_byte_at is not None:
            streaming = now - self._first_byte_at
            if streaming >= self.grace_s and self.received < self.min_bytes_per_s * streaming:
                raise TransferTimeout(
                    f"{self.received} bytes in {streaming:.1f}s is slower than "
                    f"min_bytes_per_s={self.min_bytes_per_s:g}"
                )
        return self.timeout_s - elapsed

    def count(self, size: int) -> None:
        """Record ``size`` bytes received."""
        if size > 0 and self._first_byte_at is None:
            self._first_byte_at = self.clock()
        self.received += size


class _BudgetedReader(io.RawIOBase):
    """A socket reader that gives every ``recv`` only the time left in the budget (headers and body alike)."""

    def __init__(self, raw: io.RawIOBase, sock: socket.socket, budget: TransferBudget) -> None:
        super().__init__()
        self._raw, self._sock, self._budget = raw, sock, budget

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int | None:  # type: ignore[override]
        self._sock.settimeout(self._budget.remaining_s())
        size = self._raw.readinto(buffer)
        self._budget.count(size or 0)
        return size

    def close(self) -> None:
        self._raw.close()
        super().close()


class _BudgetedResponse(http.client.HTTPResponse):
    """An HTTP response whose reads, from the status line on, run under a :class:`TransferBudget`."""

    def __init__(
        self,
        sock: socket.socket,
        debuglevel: int = 0,
        method: str | None = None,
        url: str | None = None,
        *,
        budget: TransferBudget,
    ) -> None:
        super().__init__(sock, debuglevel, method, url)
        self.fp = io.BufferedReader(_BudgetedReader(self.fp.detach(), sock, budget))


class _BudgetedHTTPConnection(http.client.HTTPConnection):
    """Connects within the time left in the budget; its responses read under the budget."""

    def __init__(self, host: str, *, budget: TransferBudget, **kwargs: Any) -> None:
        super().__init__(host, **kwargs)
        self.budget = budget
        # an instance attribute: getresponse() builds ``self.response_class(sock, method=...)``
        self.response_class = functools.partial(_BudgetedResponse, budget=budget)  # type: ignore[assignment]

    def connect(self) -> None:
        self.timeout = self.budget.remaining_s()
        super().connect()


class _BudgetedHTTPSConnection(http.client.HTTPSConnection):
    """:class:`_BudgetedHTTPConnection` over TLS."""

    def __init__(self, host: str, *, budget: TransferBudget, **kwargs: Any) -> None:
        super().__init__(host, **kwargs)
        self.budget = budget
        self.response_class = functools.partial(_BudgetedResponse, budget=budget)  # type: ignore[assignment]

    def connect(self) -> None:
        self.timeout = self.budget.remaining_s()
        super().connect()


class _BudgetedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, budget: TransferBudget) -> None:
        super().__init__()
        self.budget = budget

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_BudgetedHTTPConnection, budget=self.budget), req)


class _BudgetedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, budget: TransferBudget) -> None:
        super().__init__()
        self.budget = budget

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(
            functools.partial(_BudgetedHTTPSConnection, budget=self.budget),
            req,
            context=self._context,  # type: ignore[attr-defined]
        )


def http_only_opener(budget: TransferBudget) -> urllib.request.OpenerDirector:
    """An opener for one attempt: HTTP(S) only (no file://, ftp:// or data: handlers, so a redirect cannot leave
    HTTP), every connection and read of the attempt, redirects included, under ``budget``."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),  # honours http(s)_proxy / no_proxy like urlopen
        _BudgetedHTTPHandler(budget),
        _BudgetedHTTPSHandler(budget),
        urllib.request.HTTPRedirectHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
        urllib.request.UnknownHandler(),
    ):
        opener.add_handler(handler)
    return opener


class FetchError(LandmarkError, ValueError):
    """An item whose bytes cannot be fetched.

    Attributes:
        code: one of :data:`FETCH_REASONS`.
        detail: what happened, naming the url or path.
        retryable: whether another attempt could succeed.
    """

    def __init__(self, code: str, detail: str, *, retryable: bool = False) -> None:
        if code not in FETCH_REASONS:
            raise ValueError(f"unknown fetch reason {code!r}; expected one of {FETCH_REASONS}")
        self.code = code
        self.detail = detail
        self.retryable = retryable
        super().__init__(f"{code}: {detail}")


class Fetcher(Protocol):
    """Fetches the encoded bytes of one item."""

    def fetch(self, item: SourceItem) -> bytes:
        """The item's bytes.

        Raises:
            FetchError: the item cannot be fetched (it is quarantined with this reason).
            StorageError: our object store failed (the batch stops).
        """
        ...


def backoff_delay(attempt: int, base_s: float) -> float:
    """Delay before retry ``attempt`` (0-based): ``base_s * 2**attempt`` seconds."""
    return base_s * (2**attempt)


def content_type_allowed(header: str | None, allowed: Sequence[str]) -> bool:
    """True for a missing Content-Type (the decode check decides) or one whose media type is in ``allowed``."""
    if header is None or not header.strip():
        return True
    media_type = header.split(";", 1)[0].strip().lower()
    return media_type in {a.lower() for a in allowed}


@dataclass
class HttpFetcher:
    """HTTP(S) downloads with a whole-download deadline, a minimum rate, a size limit, a Content-Type check and
    retries.

    Attributes:
        timeout_s: the longest one attempt may take, connect to last byte (enforced on the socket).
        retries: extra attempts after a retryable failure.
        backoff_s: delay before the first retry; doubles per retry.
        max_bytes: larger bodies are refused ("too_large"), by Content-Length before reading when given.
        content_types: accepted media types.
        min_bytes_per_s: slower transfers are cut ("timeout") once ``rate_grace_s`` have passed since the
            first byte; 0 = no minimum.
        rate_grace_s: seconds of transfer before the rate is checked.
        user_agent: sent with every request.
        sleep: the sleep function (tests pass a fake one).
    """

    timeout_s: float
    retries: int
    backoff_s: float
    max_bytes: int
    content_types: tuple[str, ...]
    min_bytes_per_s: float = 1024.0
    rate_grace_s: float = 2.0
    user_agent: str = "landmark-ingest/0.1"
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def fetch(self, item: SourceItem) -> bytes:
        """Download ``item.url``, retrying retryable failures; see :class:`Fetcher`."""
        attempt = 0
        while True:
            try:
                return self._fetch_once(item.url)
            except FetchError as exc:
                if not exc.retryable or attempt >= self.retries:
                    if attempt:
                        raise FetchError(
                            exc.code, f"{exc.detail} (after {attempt + 1} attempts)", retryable=exc.retryable
                        ) from exc
                    raise
            self.sleep(backoff_delay(attempt, self.backoff_s))
            attempt += 1

    def _fetch_once(self, url: str) -> bytes:
        request = urllib.request.Request(url, headers={"User-Agent": self.user_agent})
        budget = TransferBudget(self.timeout_s, self.min_bytes_per_s, self.rate_grace_s)
        try:
            with http_only_opener(budget).open(request, timeout=self.timeout_s) as response:
                self._check_headers(
                    url, response.headers.get("Content-Type"), response.headers.get("Content-Length")
                )
                body = self._read_body(url, response)
        except FetchError:
            raise
        except urllib.error.HTTPError as exc:
            raise self._http_error(url, exc) from exc
        except urllib.error.URLError as exc:
            raise self._url_error(url, exc, budget) from exc
        except TimeoutError as exc:
            raise self._timeout(url, exc, budget) from exc
        except http.client.IncompleteRead as exc:
            raise FetchError(
                "truncated", f"{url}: connection closed after {len(exc.partial)} bytes", retryable=True
            ) from exc
        except (http.client.HTTPException, ConnectionError) as exc:
            raise FetchError(
                "connection_error", f"{url}: {type(exc).__name__}: {exc}", retryable=True
            ) from exc
        except ValueError as exc:
            raise FetchError("bad_url", f"{url}: {exc}") from exc
        length = response.headers.get("Content-Length")
        if length is not None and length.isdigit() and len(body) < int(length):
            raise FetchError(
                "truncated", f"{url}: connection closed after {len(body)} of {length} bytes", retryable=True
            )
        return body

    def _timeout(self, url: str, exc: TimeoutError, budget: TransferBudget) -> FetchError:
        if isinstance(exc, TransferTimeout):
            return FetchError("timeout", f"{url}: {exc}", retryable=True)
        # a socket wait ran out: it was given exactly the time left before the deadline
        return FetchError(
            "timeout",
            f"{url}: download took longer than {self.timeout_s:g}s ({budget.received} bytes read)",
            retryable=True,
        )

    def _http_error(self, url: str, exc: urllib.error.HTTPError) -> FetchError:
        if 300 <= exc.code < 400:  # urllib refused to follow it (e.g. to file:// or ftp://) or it looped
            return FetchError("bad_url", f"{url}: HTTP {exc.code} redirect not followed: {exc.reason}")
        return FetchError(
            "http_error", f"{url}: HTTP {exc.code} {exc.reason}", retryable=exc.code in RETRYABLE_STATUS
        )

    def _url_error(self, url: str, exc: urllib.error.URLError, budget: TransferBudget) -> FetchError:
        if isinstance(exc.reason, TimeoutError):
            return self._timeout(url, exc.reason, budget)
        if isinstance(exc.reason, str) and exc.reason.startswith("unknown url type"):
            return FetchError(
                "bad_url", f"{url}: only http(s) is fetched, also after redirects ({exc.reason})"
            )
        return FetchError("connection_error", f"{url}: {exc.reason}", retryable=True)

    def _check_headers(self, url: str, content_type: str | None, length: str | None) -> None:
        if not content_type_allowed(content_type, self.content_types):
            raise FetchError(
                "bad_content_type", f"{url}: Content-Type {content_type!r} is not an accepted image type"
            )
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            raise FetchError(
                "too_large", f"{url}: Content-Length {length} exceeds max_bytes={self.max_bytes}"
            )

    def _read_body(self, url: str, response: http.client.HTTPResponse) -> bytes:
        """The body, refused as soon as it passes ``max_bytes`` (the budget bounds every read's time)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = response.read(_CHUNK)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > self.max_bytes:
                raise FetchError("too_large", f"{url}: body exceeds max_bytes={self.max_bytes}")
            chunks.append(chunk)


@dataclass
class FileFetcher:
    """Reads local files (``item.location``), refusing files above ``max_bytes``."""

    max_bytes: int

    def fetch(self, item: SourceItem) -> bytes:
        """The file's bytes; see :class:`Fetcher`."""
        path = Path(item.location)
        try:
            size = path.stat().st_size
            if size > self.max_bytes:
                raise FetchError("too_large", f"{path}: {size} bytes exceeds max_bytes={self.max_bytes}")
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise FetchError("missing_file", f"{path} does not exist") from exc
        except IsADirectoryError as exc:
            raise FetchError("unreadable", f"{path} is a directory") from exc
        except OSError as exc:
            raise FetchError("unreadable", f"{path}: {exc.strerror or exc}") from exc


@dataclass
class ObjectFetcher:
    """Reads objects of one bucket (``item.url`` = ``s3://bucket/key``), refusing objects above ``max_bytes``."""

    store: ObjectStore
    max_bytes: int

    def fetch(self, item: SourceItem) -> bytes:
        """The object's bytes; see :class:`Fetcher`. Store outages raise StorageError (the batch stops)."""
        from landmark.platform.storage import ObjectNotFoundError, parse_s3_uri

        try:
            bucket, key = parse_s3_uri(item.url)
        except ValueError as exc:
            raise FetchError("bad_url", str(exc)) from exc
        if bucket != self.store.bucket:
            raise FetchError("bad_url", f"{item.url} is not in bucket {self.store.bucket!r}")
        try:
            size = self.store.stat(key).size
            if size > self.max_bytes:
                raise FetchError("too_large", f"{item.url}: {size} bytes exceeds max_bytes={self.max_bytes}")
            return self.store.get_bytes(key)
        except ObjectNotFoundError as exc:
            raise FetchError("missing_file", f"{item.url} does not exist") from exc
