"""Stage ``ingest``: new images from a CSV of URLs, a local dataset, an S3 prefix, the generator, or an inbox.

:func:`ingest` adds one batch to one split. :func:`ingest_source` is what the pipeline runs: every split a
dataset source has (``split="all"``), the ground truth it carries merged into the catalog, and for an *inbox*
(a directory of batches: dataset directories in any format and CSVs of URLs, e.g. one per day) only the batches
not ingested before, in name order, each recorded in ``<out>/inbox.json`` once it is in.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from landmark.config import Config
from landmark.data.atomic import atomic_path
from landmark.data.catalog import groundtruth_counts, merge_groundtruth
from landmark.data.fetch import FileFetcher, HttpFetcher, ObjectFetcher
from landmark.data.formats import detect_format, read_dataset
from landmark.data.groundtruth import DatasetFormatError
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
    from landmark.platform.storage import ObjectStore

Listing = tuple[list[SourceItem], "Fetcher", str]


def _object_store(cfg: Config, given: ObjectStore | None) -> ObjectStore:
    from landmark.platform.storage import open_store

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
            min_bytes_per_s=limits.min_bytes_per_s,
        )
        yield csv_items(source), fetcher, str(Path(source).resolve())
    elif kind == "folder":
        yield folder_items(source, split), FileFetcher(limits.max_bytes), str(Path(source).resolve())
    elif kind == "s3":
        from landmark.platform.storage import ObjectStore, parse_s3_uri

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
            max_attempts=cfg.ingest.max_attempts,
            check_workers=cfg.ingest.check_workers,
            parallel=cfg.parallel,
            on_outcome=on_outcome,
            progress=progress,
        )


def _check_kind(kind: str) -> SourceKind:
    for known in SOURCE_KINDS:
        if kind == known:
            return known
    raise SourceError(f"unknown source kind {kind!r}; expected auto or one of {SOURCE_KINDS}")


ALL_SPLITS = "all"
INBOX_RECORD = "inbox.json"


@dataclass
class IngestReport:
    """What one :func:`ingest_source` run did.

    Attributes:
        batches: one summary per (source batch, split) ingested, in order.
        inbox_batches: names of the inbox batches ingested by this run (empty for a plain source).
        skipped_batches: inbox batches already ingested by earlier runs.
        groundtruth: rows in the catalog's ground-truth tables after the run.
    """

    source: str
    batches: list[BatchSummary] = field(default_factory=list)
    inbox_batches: list[str] = field(default_factory=list)
    skipped_batches: int = 0
    groundtruth: dict[str, int] = field(default_factory=dict)

    @property
    def added(self) -> int:
        return sum(b.added for b in self.batches)

    @property
    def quarantined(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for batch in self.batches:
            for reason, n in batch.quarantined.items():
                counts[reason] = counts.get(reason, 0) + n
        return counts

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: totals first, then one entry per batch."""
        return {
            "source": self.source,
            "added": self.added,
            "quarantined": self.quarantined,
            "quarantined_total": sum(self.quarantined.values()),
            "inbox_batches": list(self.inbox_batches),
            "skipped_batches": self.skipped_batches,
            "groundtruth": dict(self.groundtruth),
            "batches": [b.to_dict() for b in self.batches],
        }


def inbox_entries(inbox: Path) -> list[Path]:
    """The batches of an inbox directory in name order: dataset directories and ``.csv`` files (hidden names
    and anything else are ignored)."""
    entries = []
    for entry in sorted(inbox.iterdir()):
        if entry.name.startswith("."):
            continue
        if (entry.is_file() and entry.suffix.lower() == ".csv") or (entry.is_dir() and _is_dataset(entry)):
            entries.append(entry)
    return entries


def _is_dataset(path: Path) -> bool:
    try:
        detect_format(path)
    except DatasetFormatError:
        return False
    return True


def is_inbox(source: str) -> bool:
    """True for a local directory that is not a dataset itself but holds batches (datasets or CSVs)."""
    path = Path(source)
    return path.is_dir() and not _is_dataset(path) and bool(inbox_entries(path))


def _read_record(out_dir: Path) -> dict[str, Any]:
    path = out_dir / INBOX_RECORD
    return json.loads(path.read_text()) if path.is_file() else {"batches": {}}


def _write_record(out_dir: Path, record: dict[str, Any]) -> None:
    with atomic_path(out_dir / INBOX_RECORD) as tmp:
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def source_splits(source: str, kind: SourceKind, split: str) -> list[str]:
    """The splits to ingest: ``split`` itself, or for ``all`` every split a dataset source has (a CSV or an S3
    prefix lists one split: train)."""
    if split != ALL_SPLITS:
        return [split]
    if kind == "folder":
        return list(read_dataset(Path(source)).splits)
    return ["train"]


def _ingest_one(
    cfg: Config, source: str, out_dir: Path, split: str, kind: str, report: IngestReport, **options: Any
) -> None:
    chosen: SourceKind = detect_source_kind(source) if kind == "auto" else _check_kind(kind)
    for name in source_splits(source, chosen, split):
        report.batches.append(ingest(cfg, source, out_dir, split=name, kind=chosen, **options))
    if chosen == "folder":
        report.groundtruth = merge_groundtruth(out_dir, read_dataset(Path(source)))


def ingest_source(
    cfg: Config,
    source: str,
    out_dir: Path,
    *,
    split: str = ALL_SPLITS,
    kind: str = "auto",
    object_store: ObjectStore | None = None,
    progress: bool = True,
) -> IngestReport:
    """Ingest what is new in ``source`` into the catalog at ``out_dir`` (see the module docstring).

    Args:
        source: an inbox directory, ``synth``, ``s3://bucket/prefix``, a ``.csv`` of id,url[,landmark_id], or a
            dataset directory in any format.
        split: ``all`` (every split of a dataset source; ``train`` for a CSV or an S3 prefix) or one split.

    Raises:
        SourceError: the source cannot be recognised or listed.
        StorageError: the object store is unreachable or failed (rerun to resume).
    """
    out_dir = Path(out_dir)
    report = IngestReport(source=source)
    options: dict[str, Any] = {"object_store": object_store, "progress": progress}
    if kind != "auto" or not is_inbox(source):
        _ingest_one(cfg, source, out_dir, split, kind, report, **options)
        return report
    record = _read_record(out_dir)
    for entry in inbox_entries(Path(source)):
        if entry.name in record["batches"]:
            report.skipped_batches += 1
            continue
        first = len(report.batches)
        _ingest_one(cfg, str(entry), out_dir, split, "auto", report, **options)
        record["batches"][entry.name] = {
            "added": sum(b.added for b in report.batches[first:]),
            "batch_ids": [b.batch_id for b in report.batches[first:]],
        }
        _write_record(out_dir, record)  # after each batch: a killed run resumes with the next one
        report.inbox_batches.append(entry.name)
    if not report.groundtruth:
        report.groundtruth = groundtruth_counts(out_dir)
    return report
