"""Content-addressed image storage: the DVC-tracked data directory, the S3 store, or both.

An image is stored under ``<prefix>/<sha1[:2]>/<sha1><ext>``: the same bytes always get the same name, so
storing twice (a resumed batch, a duplicate) never creates a second copy, and a half-written object never
shadows a good one (local files are written to a temporary name and renamed; S3 PUTs are atomic).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from landmark.errors import InputError
from landmark.data.atomic import atomic_path

if TYPE_CHECKING:
    from landmark.platform.storage import ObjectStore

StoreKind = Literal["local", "s3", "both"]
DEFAULT_PREFIX = "images"
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", ".jpg"),
    (b"\x89PNG\r\n\x1a\n", ".png"),
    (b"GIF87a", ".gif"),
    (b"GIF89a", ".gif"),
    (b"BM", ".bmp"),
    (b"II*\x00", ".tif"),
    (b"MM\x00*", ".tif"),
)
CONTENT_TYPES = {
    ".jpg": "image/jpeg",
    ".png": "image/png",
    ".gif": "image/gif",
    ".bmp": "image/bmp",
    ".tif": "image/tiff",
    ".webp": "image/webp",
}


def sniff_extension(data: bytes) -> str:
    """File extension for encoded image bytes from their magic number (".img" when unknown)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    for magic, extension in _MAGIC:
        if data.startswith(magic):
            return extension
    return ".img"


def content_key(sha1: str, extension: str) -> str:
    """``<sha1[:2]>/<sha1><extension>``, e.g. ``"3f/3f786850e387550fdab836ed7e6dc881de23001b.jpg"``.

    Raises:
        ValueError: ``sha1`` is not 40 lowercase hex characters.
    """
    if len(sha1) != 40 or any(c not in "0123456789abcdef" for c in sha1):
        raise ValueError(f"not a lowercase hex SHA-1: {sha1!r}")
    return f"{sha1[:2]}/{sha1}{extension}"


class ImageStore(Protocol):
    """Stores image bytes under a content key and says where they went."""

    def put(self, key: str, data: bytes) -> str:
        """Store ``data`` under ``key`` unless already there; returns the manifest uri."""
        ...


@dataclass
class LocalImageStore:
    """Files under ``root/prefix``; uris are relative to ``root`` (the manifest's dataset root)."""

    root: Path
    prefix: str = DEFAULT_PREFIX

    def put(self, key: str, data: bytes) -> str:
        """Write ``root/prefix/key`` atomically unless it exists; returns ``prefix/key``."""
        uri = f"{self.prefix}/{key}"
        path = Path(self.root) / uri
        if not path.is_file() or path.stat().st_size != len(data):
            with atomic_path(path) as tmp:
                tmp.write_bytes(data)
        return uri


@dataclass
class S3ImageStore:
    """Objects under ``prefix/`` in the store's bucket; uris are ``s3://bucket/prefix/key``."""

    store: ObjectStore
    prefix: str = DEFAULT_PREFIX

    def put(self, key: str, data: bytes) -> str:
        """Upload unless an object of the same size is already there; returns its ``s3://`` uri."""
        from landmark.platform.storage import ObjectNotFoundError

        full_key = f"{self.prefix}/{key}"
        try:
            stored_size = self.store.stat(full_key).size
        except ObjectNotFoundError:
            stored_size = -1  # not stored yet
        if stored_size == len(data):
            return self.store.uri(full_key)
        content_type = CONTENT_TYPES.get(Path(key).suffix, "application/octet-stream")
        return self.store.put_bytes(full_key, data, content_type)


@dataclass
class MirroredImageStore:
    """Stores into every store in turn; the uri is the first store's."""

    stores: Sequence[ImageStore]

    def put(self, key: str, data: bytes) -> str:
        """Store everywhere; returns the first store's uri."""
        uris = [store.put(key, data) for store in self.stores]
        return uris[0]


def create_image_store(
    kind: StoreKind, root: Path, object_store: ObjectStore | None, prefix: str = DEFAULT_PREFIX
) -> ImageStore:
    """The store for ``kind``: local files under ``root``, S3, or both (uris then stay local).

    Raises:
        ValueError: an unknown kind, or ``s3``/``both`` without an object store.
    """
    if kind == "local":
        return LocalImageStore(Path(root), prefix)
    if kind not in ("s3", "both"):
        raise InputError(f"unknown image store {kind!r}; expected 'local', 's3' or 'both'")
    if object_store is None:
        raise InputError(f"image store {kind!r} needs an object store (storage settings)")
    remote = S3ImageStore(object_store, prefix)
    if kind == "s3":
        return remote
    return MirroredImageStore([LocalImageStore(Path(root), prefix), remote])
