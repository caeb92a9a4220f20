"""Thumbnails of indexed images, rendered by the server from the catalog (the browser never reads the store)."""

from __future__ import annotations

import functools
import io
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from landmark.config import Config
from landmark.data.images import decode_image
from landmark.features.global_desc import resize_long_side

THUMB_SIDE = 256  # long side in pixels (smaller images are not enlarged)
THUMB_QUALITY = 85


def thumbnail_jpeg(path: Path, side: int = THUMB_SIDE) -> bytes:
    """Decode an image with the pipeline's decoder and encode a JPEG whose long side is at most ``side``.

    Raises:
        ImageDecodeError: the catalog image does not decode.
    """
    image = decode_image(path)
    if max(image.shape[:2]) > side:
        image = resize_long_side(image, side)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=THUMB_QUALITY)
    return buffer.getvalue()


class Thumbnails:
    """Thumbnails of a catalog split by image id, kept in a bounded LRU cache.

    Args:
        locate: image id -> local file (None when the catalog has no such image).
        cache_size: thumbnails kept in memory.
    """

    def __init__(self, locate: Callable[[str], Path | None], cache_size: int = 1024) -> None:
        self.locate = locate
        self._render = functools.lru_cache(maxsize=cache_size)(thumbnail_jpeg)

    def get(self, image_id: str) -> bytes:
        """The JPEG thumbnail of ``image_id``.

        Raises:
            KeyError: the catalog has no such image.
            ImageDecodeError: its file does not decode.
        """
        path = self.locate(image_id)
        if path is None:
            raise KeyError(image_id)
        return self._render(Path(path))


def catalog_thumbnails(cfg: Config, data_dir: Path, split: str = "index") -> Thumbnails:
    """Thumbnails of ``split`` of the dataset (or catalog) at ``data_dir``; images in the store are fetched
    into the local image cache first (:func:`landmark.data.datasets.open_dataset`)."""
    from landmark.data.datasets import open_dataset

    paths = open_dataset(cfg, Path(data_dir)).image_paths(split)
    return Thumbnails(paths.get)
