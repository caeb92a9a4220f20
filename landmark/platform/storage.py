"""The S3 object store: settings from params + environment, a thin client with clear errors.

The store speaks the S3 API only (the ``minio`` SDK), so the same code talks to the local SeaweedFS started by
``landmark infra up`` and to MinIO in production. Endpoint and bucket come from ``params.yaml`` (``storage``)
and may be overridden by environment variables; credentials never live in params or git: they come from
environment variables or from the git-ignored credentials file that ``landmark infra up`` generates.

Environment variables:
    ``LANDMARK_S3_ENDPOINT``: e.g. ``http://127.0.0.1:8333`` (overrides ``storage.endpoint``).
    ``LANDMARK_S3_BUCKET``: overrides ``storage.bucket``.
    ``LANDMARK_S3_ACCESS_KEY`` / ``LANDMARK_S3_SECRET_KEY``: credentials (both or neither).
    ``LANDMARK_S3_CREDENTIALS``: path of a JSON credentials file ``{"access_key": ..., "secret_key": ...}``
    (default ``<storage.run_dir>/credentials.json``).
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ParamSpec, TypeVar
from urllib.parse import urlsplit

from landmark.errors import InputError, LandmarkError
from landmark.platform.private_files import write_private_text

if TYPE_CHECKING:
    from minio import Minio

    from landmark.config import StorageConfig

ENV_ENDPOINT = "LANDMARK_S3_ENDPOINT"
ENV_BUCKET = "LANDMARK_S3_BUCKET"
ENV_ACCESS_KEY = "LANDMARK_S3_ACCESS_KEY"
ENV_SECRET_KEY = "LANDMARK_S3_SECRET_KEY"
ENV_CREDENTIALS_FILE = "LANDMARK_S3_CREDENTIALS"
CREDENTIALS_FILE_NAME = "credentials.json"

P = ParamSpec("P")
R = TypeVar("R")

_MISSING_CODES = frozenset({"NoSuchKey", "NoSuchObject", "NotFound", "NoSuchBucket"})
_S3_URI = re.compile(r"^s3://([^/]+)(?:/(.*))?$")


class StorageConfigError(LandmarkError, ValueError):
    """Endpoint, bucket or credentials that cannot be used (the message names the value and where it came from)."""


class StorageError(LandmarkError, RuntimeError):
    """The object store failed: unreachable, access denied, or an unexpected S3 error."""


class ObjectNotFoundError(StorageError, KeyError):
    """A key (or bucket) that does not exist in the store."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Credentials:
    """An S3 access key pair; ``repr`` hides the secret."""

    access_key: str
    secret_key: str = field(repr=False)

    def __post_init__(self) -> None:
        if not self.access_key or not self.secret_key:
            raise StorageConfigError("S3 credentials need a non-empty access key and secret key")


@dataclass(frozen=True)
class S3Settings:
    """Everything needed to talk to one bucket.

    Attributes:
        endpoint: ``http(s)://host:port``.
        bucket: the bucket name.
        region: the S3 region (SeaweedFS and MinIO accept ``us-east-1``).
        credentials: the key pair.
        timeout_s: connect/read timeout of one request, seconds.
        retries: retries of a failed request (connection errors, 5xx) inside the HTTP client.
    """

    endpoint: str
    bucket: str
    region: str
    credentials: Credentials
    timeout_s: float = 10.0
    retries: int = 2

    @property
    def host(self) -> str:
        """``host:port`` of the endpoint."""
        return parse_endpoint(self.endpoint)[0]

    @property
    def secure(self) -> bool:
        """True for an ``https`` endpoint."""
        return parse_endpoint(self.endpoint)[1]


def parse_endpoint(endpoint: str) -> tuple[str, bool]:
    """Split ``http(s)://host:port`` into (``host:port``, secure).

    Raises:
        StorageConfigError: another scheme, a path, or no host.
    """
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        raise StorageConfigError(f"S3 endpoint must look like http://host:port, got {endpoint!r}")
    return parts.netloc, parts.scheme == "https"


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key/prefix`` -> (bucket, key); the key may be empty.

    Raises:
        ValueError: not an ``s3://`` URI, or a key containing ``..`` segments.
    """
    match = _S3_URI.match(uri)
    if match is None:
        raise InputError(f"not an s3:// URI: {uri!r}")
    bucket, key = match.group(1), match.group(2) or ""
    if ".." in key.split("/"):
        raise InputError(f"S3 key must not contain '..' segments: {uri!r}")
    return bucket, key


def s3_uri(bucket: str, key: str) -> str:
    """``s3://bucket/key``."""
    return f"s3://{bucket}/{key}"


def read_credentials_file(path: str | Path) -> Credentials:
    """Read a JSON credentials file ``{"access_key": ..., "secret_key": ...}``.

    Raises:
        FileNotFoundError: no such file (the message says how to create one).
        StorageConfigError: not JSON, or keys missing.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"S3 credentials file {path} not found: run `landmark infra up` to start the local store and "
            f"generate it, or set {ENV_ACCESS_KEY} and {ENV_SECRET_KEY}"
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise StorageConfigError(f"S3 credentials file {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not {"access_key", "secret_key"} <= set(data):
        raise StorageConfigError(f"S3 credentials file {path} needs the keys 'access_key' and 'secret_key'")
    return Credentials(str(data["access_key"]), str(data["secret_key"]))


def write_credentials_file(path: str | Path, credentials: Credentials) -> Path:
    """Write credentials as JSON readable by the owner only (mode 0600), atomically."""
    payload = {"access_key": credentials.access_key, "secret_key": credentials.secret_key}
    return write_private_text(path, json.dumps(payload))


def resolve_credentials(cfg: StorageConfig, env: Mapping[str, str]) -> Credentials:
    """Credentials from ``LANDMARK_S3_ACCESS_KEY``/``_SECRET_KEY``, else from the credentials file.

    Raises:
        StorageConfigError: only one of the two variables is set.
        FileNotFoundError: no variables and no credentials file.
    """
    access, secret = env.get(ENV_ACCESS_KEY, ""), env.get(ENV_SECRET_KEY, "")
    if access or secret:
        if not (access and secret):
            raise StorageConfigError(f"set both {ENV_ACCESS_KEY} and {ENV_SECRET_KEY}, or neither")
        return Credentials(access, secret)
    path = env.get(ENV_CREDENTIALS_FILE) or str(Path(cfg.run_dir) / CREDENTIALS_FILE_NAME)
    return read_credentials_file(path)


def resolve_settings(cfg: StorageConfig, env: Mapping[str, str] | None = None) -> S3Settings:
    """Settings from the ``storage`` params section, overridden by the environment (see module docstring)."""
    env = os.environ if env is None else env
    endpoint = env.get(ENV_ENDPOINT) or cfg.endpoint
    parse_endpoint(endpoint)
    return S3Settings(
        endpoint=endpoint,
        bucket=env.get(ENV_BUCKET) or cfg.bucket,
        region=cfg.region,
        credentials=resolve_credentials(cfg, env),
        timeout_s=cfg.timeout_s,
        retries=cfg.retries,
    )


def create_client(settings: S3Settings) -> Minio:
    """A ``minio.Minio`` client with bounded timeouts and retries (minio's default retries for ~6 s)."""
    import urllib3
    from minio import Minio

    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=settings.timeout_s, read=settings.timeout_s),
        maxsize=16,
        retries=urllib3.Retry(
            total=settings.retries,
            connect=settings.retries,
            read=settings.retries,
            backoff_factor=0.2,
            status_forcelist=(500, 502, 503, 504),
        ),
    )
    return Minio(
        settings.host,
        access_key=settings.credentials.access_key,
        secret_key=settings.credentials.secret_key,
        secure=settings.secure,
        region=settings.region,
        http_client=http,
    )


@dataclass(frozen=True)
class ObjectInfo:
    """One object's key and size in bytes."""

    key: str
    size: int


class ObjectStore:
    """One bucket of an S3 store, with every failure turned into :class:`StorageError` naming the endpoint.

    Args:
        settings: endpoint, bucket, credentials.
        client: an existing client (default: :func:`create_client`).
    """

    def __init__(self, settings: S3Settings, client: Minio | None = None) -> None:
        self.settings = settings
        self.bucket = settings.bucket
        self._client = client if client is not None else create_client(settings)

    def __repr__(self) -> str:
        return f"ObjectStore({self.settings.endpoint!r}, bucket={self.bucket!r})"

    def uri(self, key: str) -> str:
        """``s3://<bucket>/<key>``."""
        return s3_uri(self.bucket, key)

    def ping(self) -> None:
        """Check that the endpoint answers and the credentials are accepted (the bucket may not exist yet)."""
        self._call(f"reach bucket {self.bucket!r}", self._client.bucket_exists, self.bucket)

    def ensure_bucket(self) -> bool:
        """Create the bucket when missing; returns True when it was created."""
        if self._call(f"check bucket {self.bucket!r}", self._client.bucket_exists, self.bucket):
            return False
        self._call(f"create bucket {self.bucket!r}", self._client.make_bucket, self.bucket)
        return True

    def stat(self, key: str) -> ObjectInfo:
        """Size of an object.

        Raises:
            ObjectNotFoundError: no such key.
        """
        info = self._call(f"stat {self.uri(key)}", self._client.stat_object, self.bucket, key)
        return ObjectInfo(key=key, size=int(info.size or 0))

    def exists(self, key: str) -> bool:
        """True when the key exists."""
        try:
            self.stat(key)
        except ObjectNotFoundError:
            return False
        return True

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        """Store ``data`` under ``key`` (an S3 PUT is atomic: readers never see half an object); returns its URI."""
        self._call(
            f"upload {self.uri(key)}",
            self._client.put_object,
            self.bucket,
            key,
            io.BytesIO(data),
            len(data),
            content_type=content_type,
        )
        return self.uri(key)

    def get_bytes(self, key: str) -> bytes:
        """The bytes of one object.

        Raises:
            ObjectNotFoundError: no such key.
        """
        response = self._call(f"download {self.uri(key)}", self._client.get_object, self.bucket, key)
        try:
            return bytes(response.read())
        finally:
            response.close()
            response.release_conn()

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects under ``prefix`` (recursive), in key order."""
        objects = self._call(
            f"list {self.uri(prefix)}", self._client.list_objects, self.bucket, prefix=prefix, recursive=True
        )
        iterator = iter(objects)
        while True:
            item = self._call(f"list {self.uri(prefix)}", next, iterator, None)
            if item is None:
                return
            if item.object_name and not item.is_dir:
                yield ObjectInfo(key=item.object_name, size=int(item.size or 0))

    def _call(self, what: str, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        from minio.error import MinioException, S3Error
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, **kwargs)
        except S3Error as exc:
            if exc.code in _MISSING_CODES:
                raise ObjectNotFoundError(f"cannot {what}: {exc.code} ({self.settings.endpoint})") from exc
            raise StorageError(
                f"cannot {what} at {self.settings.endpoint}: {exc.code}: {exc.message}"
            ) from exc
        except (HTTPError, MinioException, OSError) as exc:
            raise StorageError(
                f"cannot {what}: object store at {self.settings.endpoint} is unreachable or failed "
                f"({type(exc).__name__}: {_short(exc)}); is it running? (`landmark infra up` / `make up`)"
            ) from exc


def _short(exc: BaseException, limit: int = 200) -> str:
    text = str(exc)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def open_store(cfg: StorageConfig, env: Mapping[str, str] | None = None) -> ObjectStore:
    """An :class:`ObjectStore` for the configured bucket (settings from params + environment)."""
    return ObjectStore(resolve_settings(cfg, env))
