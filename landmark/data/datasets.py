"""Open a dataset for a stage: any format, with catalog images that live in the S3 store streamed into the
local content-addressed cache (``paths.image_cache``) first, so every stage reads local files."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from landmark.config import Config
from landmark.data.catalog import localize_remote_images
from landmark.data.formats import read_dataset
from landmark.data.groundtruth import LandmarkDataset


def has_remote_images(dataset: LandmarkDataset) -> bool:
    """True when some row's uri is in object storage (``s3://``)."""
    return any(frame["uri"].astype(str).str.startswith("s3://").any() for frame in dataset.manifests.values())


def open_dataset(cfg: Config, root: str | Path, fmt: str = "auto", *, progress: bool = False) -> LandmarkDataset:
    """:func:`~landmark.data.formats.read_dataset`, then remote images fetched once into ``paths.image_cache``.

    Raises:
        FileNotFoundError, DatasetFormatError: as :func:`~landmark.data.formats.read_dataset`.
        StorageError: the object store is unreachable while images are missing from the cache.
    """
    dataset = read_dataset(Path(root), fmt)
    if not has_remote_images(dataset):
        return dataset
    from landmark.platform.storage import ObjectStore, open_store, parse_s3_uri

    store = open_store(cfg.storage)
    stores = {store.settings.bucket: store}

    def fetch(uri: str) -> bytes:
        bucket, key = parse_s3_uri(uri)
        if bucket not in stores:
            stores[bucket] = ObjectStore(dataclasses.replace(store.settings, bucket=bucket))
        return stores[bucket].get_bytes(key)

    return localize_remote_images(dataset, fetch, cfg.paths.image_cache, progress=progress)
