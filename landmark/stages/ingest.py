"""Stage ``ingest``: one incremental batch from a CSV of URLs, a local dataset, an S3 prefix or the generator."""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from landmark.config import Config
from landmark.data.fetch import FileFetcher, HttpFetcher, ObjectFetcher
from landmark.data.imagestore import create_image_store
from landmark.data.ingest import BatchSummary, ItemOutcome, ingest_batch
from landmark.data.sources import (
    SOURCE_KINDS,
    SourceError,
    SourceItem,
    SourceKind,
    csv_items,
    detect_source_kind,
    folder_items,
    s3_items,
)

if TYPE_CHECKING:
    from landmark.data.fetch import Fetcher
    from landmark.storage import ObjectStore

Listing = tuple[list[SourceItem], "Fetcher", str]


def _object_store(cfg: Config, given: ObjectStore | None) -> ObjectStore:
    from landmark.storage import open_store

    return given if given is not None else open_store(cfg.storage)


@contextlib.contextmanager
def open_source(
    cfg: Config,
    source: str,
    kind: SourceKind,
    split: str,
    object_store: Callable[[], ObjectStore],
    *,
    progress: bool,
) -> Iterator[Listing]:
    """List a source and pick its fetcher; yields (items, fetcher, label). Temporary files live until exit.

    Raises:
        SourceError: an unknown kind.
    """
    limits = cfg.ingest
    if kind == "csv":
        fetcher = HttpFetcher(
            timeout_s=limits.timeout_s,
            retries=limits.retries,
            backoff_s=limits.backoff_s,
            max_bytes=limits.max_bytes,
            content_types=limits.content_types,
        )
        yield csv_items(source), fetcher, str(Path(source).resolve())
    elif kind == "folder":
        yield folder_items(source, split), FileFetcher(limits.max_bytes), str(Path(source).resolve())
    elif kind == "s3":
        from landmark.storage import ObjectStore, parse_s3_uri

        bucket, prefix = parse_s3_uri(source)
        store = object_store()
        source_store = ObjectStore(dataclasses.replace(store.settings, bucket=bucket))
        yield s3_items(source_store, prefix), ObjectFetcher(source_store, limits.max_bytes), source
    elif kind == "synth":
        from landmark.data.synthetic import generate_world

        with tempfile.TemporaryDirectory(prefix="landmark-synth-") as tmp:
            generate_world(cfg.synth, Path(tmp), seed=cfg.seed, progress=progress)
            yield folder_items(tmp, split), FileFetcher(limits.max_bytes), f"synth(seed={cfg.seed})"
    else:
        raise SourceError(f"unknown source kind {kind!r}; expected one of {SOURCE_KINDS}")


def ingest(
    cfg: Config,
    source: str,
    out_dir: Path,
    *,
    split: str = "train",
    kind: str = "auto",
    object_store: ObjectStore | None = None,
    on_outcome: Callable[[ItemOutcome], None] | None = None,
    progress: bool = True,
) -> BatchSummary:
    """Ingest the new images of ``source`` into ``out_dir`` as one batch.

    Args:
        cfg: the config (``ingest`` limits, ``storage`` when images go to S3 or come from it; ``synth`` and
            ``seed`` for the generator).
        source: ``synth``, ``s3://bucket/prefix``, a ``.csv`` of id,url[,landmark_id], or a dataset directory.
        out_dir: the ingestion root (``paths.ingest``).
        split: the manifest to append to.
        kind: ``auto`` (detect from ``source``) or one of csv, folder, s3, synth.
        object_store: the S3 store to use (default: from ``cfg.storage`` and the environment).
        on_outcome: called after each finished item (hooks, tests).
        progress: show progress bars.

    Returns:
        The batch summary.

    Raises:
        SourceError: the source cannot be recognised or listed.
        StorageError: the object store is unreachable or failed (rerun to resume).
    """
    chosen: SourceKind = detect_source_kind(source) if kind == "auto" else _check_kind(kind)
    cache: list[ObjectStore] = []

    def lazy_store() -> ObjectStore:
        if not cache:
            cache.append(_object_store(cfg, object_store))
        return cache[0]

    remote = None
    if cfg.ingest.store in ("s3", "both"):
        remote = lazy_store()
        remote.ensure_bucket()
    image_store = create_image_store(cfg.ingest.store, Path(out_dir), remote, cfg.storage.images_prefix)
    with open_source(cfg, source, chosen, split, lazy_store, progress=progress) as (items, fetcher, label):
        return ingest_batch(
            items,
            fetcher,
            image_store,
            out_dir,
            split=split,
            source=label,
            workers=cfg.ingest.workers,
            max_pixels=cfg.ingest.max_pixels,
            on_outcome=on_outcome,
            progress=progress,
        )


def _check_kind(kind: str) -> SourceKind:
    for known in SOURCE_KINDS:
        if kind == known:
            return known
    raise SourceError(f"unknown source kind {kind!r}; expected auto or one of {SOURCE_KINDS}")
