"""Incremental ingestion: one batch of new images per run, bad items quarantined, a killed run resumed.

A run (:func:`ingest_batch`) takes the items a source lists and:

1. **plans** the batch: items whose (image id, url) pair is already in the split's manifest are skipped, as
   are exact repeats inside the source, so re-ingesting the same CSV adds nothing; except items quarantined
   for a transient reason (``retryable``: a timeout, a cut connection, a 5xx or 429) by fewer than
   ``max_attempts`` runs: those are fetched again;
2. **fetches, checks and stores** the rest concurrently (:func:`process_items`): download in threads (see
   :mod:`landmark.data.fetch`), SHA-1, full decode (truncated, corrupt, non-image, decompression-bomb files fail
   here) on the ``parallel`` backend (in the thread, local processes or a Dask cluster:
   :func:`landmark.platform.parallel.submitter`), then a content-addressed put (see
   :mod:`landmark.data.imagestore`). Each finished item is appended to the batch journal;
3. **commits**: the outcomes, in source order, become manifest rows with the batch id and status. A second
   row for an id already in the manifest or earlier in the batch is skipped when its bytes are identical,
   quarantined as ``duplicate_id`` when they differ; a new id whose bytes are already stored under another id
   is quarantined as ``duplicate_content``. A retried item's row replaces its quarantined row in place (with
   ``attempts`` one higher); a transient failure on the ``max_attempts``-th run becomes permanent. The manifest
   is written atomically, then the journal removed.

A run that dies at any point loses nothing: stored objects are content-addressed (a redo overwrites nothing),
the journal says which items are done, and the manifest changes only in step 3. Rerunning the same source
resumes the same batch (same batch id) and ends with the manifest an uninterrupted run would have written
(up to ``ingested_at``, which is each item's own completion time). If a different source is ingested while a
batch is pending, the finished part of the pending batch is committed first.

Layout under ``out_dir``: ``manifests/<split>.parquet``, ``images/`` (local store), ``batches/<id>.json``
(one summary per batch), ``.journal/<split>.jsonl`` (only while a batch is in flight).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
from tqdm.auto import tqdm

from landmark.config import ParallelConfig
from landmark.data.atomic import atomic_path
from landmark.data.fetch import Fetcher, FetchError
from landmark.data.images import ImageDecodeError, decode_image
from landmark.data.imagestore import ImageStore, content_key, sniff_extension
from landmark.data.journal import BatchJournal, JournalHeader
from landmark.data.manifest import (
    STATUS_OK,
    STATUS_QUARANTINED,
    empty_manifest,
    format_reason,
    make_manifest,
    manifest_path,
    read_manifest,
    reason_code,
    write_manifest,
)
from landmark.data.sources import SourceItem
from landmark.errors import InputError
from landmark.platform.parallel import submitter

logger = logging.getLogger(__name__)

MANIFESTS_DIR = "manifests"
BATCHES_DIR = "batches"
JOURNAL_DIR = ".journal"
DEFAULT_MAX_ATTEMPTS = 3

T = TypeVar("T")
R = TypeVar("R")
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class ItemOutcome:
    """What happened to one planned item (one journal record).

    Attributes:
        position: the item's index in the source listing.
        reason: "" when fetched, decoded and stored; else the quarantine reason.
        uri: where the bytes were stored ("" when they never were).
        sha1: hex SHA-1 of the bytes ("" when not fetched).
        width, height: decoded size after EXIF orientation (-1 when not decoded).
        ingested_at: ISO-8601 UTC time the item finished.
        retryable: the failure is transient (another run may succeed).
    """

    position: int
    image_id: str
    url: str
    landmark_id: int
    reason: str = ""
    uri: str = ""
    sha1: str = ""
    width: int = -1
    height: int = -1
    ingested_at: str = ""
    retryable: bool = False

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ItemOutcome:
        """Rebuild from a journal record (unknown keys are an error: the journal is ours)."""
        return cls(**record)


@dataclass(frozen=True)
class BatchPlan:
    """The items a run has to process, and what it skipped.

    Attributes:
        todo: (position, item) of every item to fetch or quarantine, in source order.
        listed: items the source listed.
        known: items whose (image_id, url) is already in the manifest and not due for a retry.
        repeated: exact repeats of an earlier (image_id, url) in the same listing.
        fingerprint: hash of ``todo``; equal plans resume the same batch.
        retried: items of ``todo`` fetched again after a transient failure in an earlier run.
    """

    todo: tuple[tuple[int, SourceItem], ...]
    listed: int
    known: int
    repeated: int
    fingerprint: str
    retried: int = 0


@dataclass
class BatchSummary:
    """Counts of one ingestion batch (also written to ``batches/<batch_id>.json``).

    Attributes:
        added: new ok rows in the manifest.
        quarantined: reason code -> new quarantined rows.
        known: skipped: already in the manifest (same id and url) and not due for a retry.
        repeated: skipped: repeated in the source (same id and url, or same id and identical bytes).
        unchanged: skipped: an id already in the manifest served identical bytes from a new url.
        retried: items quarantined for a transient reason by an earlier run and fetched again (their rows are
            replaced: counted in ``added`` or ``quarantined`` like new items).
        resumed: items restored from the journal of an interrupted run instead of being fetched again.
        processed: items fetched (or quarantined without fetching) by this run.
        partial: True for the finished part of an interrupted batch committed before another source's batch.
    """

    batch_id: str
    split: str
    source: str
    listed: int = 0
    added: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    known: int = 0
    repeated: int = 0
    unchanged: int = 0
    retried: int = 0
    resumed: int = 0
    processed: int = 0
    partial: bool = False
    seconds: float = 0.0
    manifest: str = ""

    @property
    def quarantined_total(self) -> int:
        """All new quarantined rows."""
        return sum(self.quarantined.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (with ``quarantined_total``)."""
        return {**asdict(self), "quarantined_total": self.quarantined_total}


# ---------------------------------------------------------------------------------------------------------------
# Planning and resolving (pure)


def fingerprint_plan(todo: Sequence[tuple[int, SourceItem]]) -> str:
    """Hex SHA-1 over the planned items (position, id, url, label, reason): equal listings, equal hashes."""
    digest = hashlib.sha1(usedforsecurity=False)
    for position, item in todo:
        digest.update(json.dumps([position, item.image_id, item.url, item.landmark_id, item.reason]).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def retry_rows(manifest: pd.DataFrame) -> pd.Series:
    """Boolean mask of the quarantined rows whose reason is transient (``retryable``)."""
    return (manifest["status"] == STATUS_QUARANTINED) & manifest["retryable"]


def plan_batch(
    items: Sequence[SourceItem], manifest: pd.DataFrame, *, max_attempts: int = DEFAULT_MAX_ATTEMPTS
) -> BatchPlan:
    """Which items of a listing are new relative to ``manifest`` (any status), in source order.

    An item already in the manifest is planned again only when its row is quarantined for a transient reason
    and fewer than ``max_attempts`` runs have tried it.
    """
    pairs = list(zip(manifest["image_id"], manifest["url"], strict=True))
    due_mask = (retry_rows(manifest) & (manifest["attempts"] < max_attempts)).to_numpy()
    due = {pair for pair, is_due in zip(pairs, due_mask, strict=True) if is_due}
    final = {pair for pair, is_due in zip(pairs, due_mask, strict=True) if not is_due}
    seen: set[tuple[str, str]] = set()
    todo: list[tuple[int, SourceItem]] = []
    known = repeated = retried = 0
    for position, item in enumerate(items):
        pair = (item.image_id, item.url)
        if pair in final:
            known += 1
        elif pair in seen:
            repeated += 1
        else:
            seen.add(pair)
            todo.append((position, item))
            retried += pair in due
    return BatchPlan(
        todo=tuple(todo),
        listed=len(items),
        known=known,
        repeated=repeated,
        fingerprint=fingerprint_plan(todo),
        retried=retried,
    )


def _row(
    outcome: ItemOutcome, batch_id: str, reason: str = "", attempts: int = 1, retryable: bool = False
) -> dict[str, Any]:
    return {
        "image_id": outcome.image_id,
        "landmark_id": outcome.landmark_id,
        "uri": outcome.uri,
        "url": outcome.url,
        "width": outcome.width,
        "height": outcome.height,
        "sha1": outcome.sha1,
        "batch_id": batch_id,
        "ingested_at": outcome.ingested_at or None,
        "status": STATUS_QUARANTINED if reason else STATUS_OK,
        "reason": reason,
        "attempts": attempts,
        "retryable": retryable,
    }


@dataclass
class Resolution:
    """How finished items change the manifest.

    Attributes:
        rows: new rows, appended in position order.
        replaced: manifest row index -> the row of a retried item that takes its place.
        dropped: manifest rows of retried items that turned out to be identical to an ok row (counted
            "unchanged" or "repeated"; the item is accounted for there).
        counts: "added", "unchanged", "repeated".
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    replaced: dict[int, dict[str, Any]] = field(default_factory=dict)
    dropped: list[int] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)

    @property
    def written(self) -> list[dict[str, Any]]:
        """Every row this batch writes (new and replacing)."""
        return [*self.rows, *self.replaced.values()]

    def place(self, row: dict[str, Any] | None, previous: int | None) -> None:
        """Append ``row``, or put it in place of manifest row ``previous``; no row drops ``previous``."""
        if previous is None:
            if row is not None:
                self.rows.append(row)
        elif row is None:
            self.dropped.append(previous)
        else:
            self.replaced[previous] = row


def _failed_row(outcome: ItemOutcome, batch_id: str, attempts: int, max_attempts: int) -> dict[str, Any]:
    """The quarantined row of a failed item; a transient failure on the last allowed run becomes permanent."""
    if not outcome.retryable or attempts < max_attempts:
        return _row(outcome, batch_id, outcome.reason, attempts, outcome.retryable)
    final = f"{outcome.reason} (gave up after {attempts} ingest runs, ingest.max_attempts={max_attempts})"
    return _row(outcome, batch_id, final, attempts)


def resolve_outcomes(
    outcomes: Iterable[ItemOutcome],
    manifest: pd.DataFrame,
    batch_id: str,
    *,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> Resolution:
    """Turn finished items into manifest rows, deciding duplicates in source order.

    Rules: a failed item -> quarantined with its reason (retryable while the failure is transient and fewer than
    ``max_attempts`` runs have tried it); an id that is already ok (in the manifest or earlier in this batch) ->
    skipped when the bytes are identical (counted "unchanged" / "repeated"), else quarantined ``duplicate_id``;
    bytes already stored under another ok id -> quarantined ``duplicate_content``; otherwise an ok row. An item
    with a retryable quarantined row in the manifest (a retry) takes that row's place, ``attempts`` one higher.
    """
    ok = manifest[manifest["status"] == STATUS_OK]
    manifest_sha = dict(zip(ok["image_id"], ok["sha1"], strict=True))
    id_sha: dict[str, str] = dict(manifest_sha)
    sha_id: dict[str, str] = {sha: image_id for image_id, sha in manifest_sha.items() if sha}
    retries = manifest[retry_rows(manifest)]
    previous_rows: dict[tuple[str, str], tuple[int, int]] = {
        (image_id, url): (int(index), int(attempts))
        for index, image_id, url, attempts in zip(
            retries.index, retries["image_id"], retries["url"], retries["attempts"], strict=True
        )
    }
    resolution = Resolution()
    for outcome in sorted(outcomes, key=lambda o: o.position):
        previous, attempts_before = previous_rows.get((outcome.image_id, outcome.url), (None, 0))
        attempts = attempts_before + 1
        if outcome.reason:
            resolution.place(_failed_row(outcome, batch_id, attempts, max_attempts), previous)
            continue
        known_sha = id_sha.get(outcome.image_id)
        if known_sha is not None:
            if known_sha == outcome.sha1:
                resolution.counts["unchanged" if outcome.image_id in manifest_sha else "repeated"] += 1
                resolution.place(None, previous)
                continue
            detail = (
                f"{outcome.image_id!r} is already ingested with different content (sha1 {known_sha[:12]}...)"
            )
            row = _row(outcome, batch_id, format_reason("duplicate_id", detail), attempts)
            resolution.place(row, previous)
            continue
        if outcome.sha1 in sha_id:
            detail = f"same bytes as image {sha_id[outcome.sha1]!r}"
            resolution.place(
                _row(outcome, batch_id, format_reason("duplicate_content", detail), attempts), previous
            )
            continue
        id_sha[outcome.image_id] = outcome.sha1
        sha_id[outcome.sha1] = outcome.image_id
        resolution.place(_row(outcome, batch_id, attempts=attempts), previous)
        resolution.counts["added"] += 1
    return resolution


def apply_resolution(manifest: pd.DataFrame, resolution: Resolution) -> pd.DataFrame:
    """``manifest`` with the resolution's rows replaced in place, dropped, and appended (a validated copy)."""
    if not (resolution.rows or resolution.replaced or resolution.dropped):
        return manifest
    kept = manifest.drop(index=[*resolution.replaced, *resolution.dropped])
    parts = [kept]
    if resolution.replaced:
        parts.append(make_manifest(list(resolution.replaced.values())).set_axis(list(resolution.replaced)))
    if resolution.rows:
        appended = make_manifest(resolution.rows)
        parts.append(appended.set_axis(range(len(manifest), len(manifest) + len(appended))))
    return make_manifest(pd.concat(parts).sort_index())


def new_batch_id(now: datetime, fingerprint: str) -> str:
    """``<UTC time>-<fingerprint[:8]>``, e.g. ``20250101T120000Z-3f786850`` (a safe file name)."""
    return f"{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{fingerprint[:8]}"


# ---------------------------------------------------------------------------------------------------------------
# Processing one item


def inspect_image(data: bytes, *, max_pixels: int, name: str) -> tuple[int, int]:
    """Decode ``data`` completely (the real test that it is a usable image) and return (width, height).

    Raises:
        ImageDecodeError: empty, truncated, not an image, too many pixels, corrupt.
    """
    pixels = decode_image(data, max_pixels=max_pixels, name=name)
    return int(pixels.shape[1]), int(pixels.shape[0])


@dataclass(frozen=True)
class FetchedItem:
    """An item whose bytes arrived, before its decode check: its outcome so far, the bytes and their SHA-1."""

    base: ItemOutcome
    data: bytes
    sha1: str


def fetch_item(position: int, item: SourceItem, fetcher: Fetcher, *, clock: Clock) -> ItemOutcome | FetchedItem:
    """Fetch one item: its bytes, or its final outcome when the source row is bad or the fetch fails."""
    base = ItemOutcome(position=position, image_id=item.image_id, url=item.url, landmark_id=item.landmark_id)
    if item.reason:
        return dataclasses.replace(base, reason=item.reason, ingested_at=clock().isoformat())
    try:
        data = fetcher.fetch(item)
    except FetchError as exc:
        return dataclasses.replace(
            base,
            reason=format_reason(exc.code, exc.detail),
            retryable=exc.retryable,
            ingested_at=clock().isoformat(),
        )
    return FetchedItem(base, data, hashlib.sha1(data, usedforsecurity=False).hexdigest())


def check_image(task: tuple[bytes, int, str]) -> tuple[int, int] | ImageDecodeError:
    """The decode check of one image's ``(bytes, max_pixels, name)``: (width, height), or the error (returned,
    not raised: a module-level function whose result travels back from a worker process or a Dask worker)."""
    data, max_pixels, name = task
    try:
        return inspect_image(data, max_pixels=max_pixels, name=name)
    except ImageDecodeError as exc:
        return exc


def store_item(
    fetched: FetchedItem, checked: tuple[int, int] | ImageDecodeError, store: ImageStore, *, clock: Clock
) -> ItemOutcome:
    """The outcome of a checked item: stored under its content key, or quarantined with the decode error.

    Store faults (StorageError) propagate.
    """
    base, sha1 = fetched.base, fetched.sha1
    if isinstance(checked, ImageDecodeError):
        reason = format_reason(checked.reason, checked.detail)
        return dataclasses.replace(base, reason=reason, sha1=sha1, ingested_at=clock().isoformat())
    uri = store.put(content_key(sha1, sniff_extension(fetched.data)), fetched.data)
    width, height = checked
    return dataclasses.replace(
        base, uri=uri, sha1=sha1, width=width, height=height, ingested_at=clock().isoformat()
    )


@dataclass(frozen=True)
class ItemWork:
    """How a batch's items are processed: ``workers`` threads fetch, check and store; each thread's decode check
    runs on the ``parallel`` backend (:func:`landmark.platform.parallel.submitter`: local, ``check_workers``
    processes, 0 or 1 = in the thread; Dask: a task on the cluster)."""

    fetcher: Fetcher
    store: ImageStore
    max_pixels: int
    clock: Clock
    workers: int
    check_workers: int = 0
    parallel: ParallelConfig | None = None


def process_items(
    jobs: Sequence[tuple[int, SourceItem]], work: ItemWork
) -> Generator[ItemOutcome, None, None]:
    """Fetch, decode-check, hash and store items (position, item); yields each outcome as it is known.

    Items stream through: an item is checked and stored as soon as its download ends, never waiting for slower
    downloads. Item faults become an outcome with a quarantine reason; store faults (StorageError) propagate.
    Outcomes do not depend on the backend or the number of workers.
    """
    with submitter(work.parallel, work.check_workers) as run:

        def one(job: tuple[int, SourceItem]) -> ItemOutcome:
            fetched = fetch_item(*job, work.fetcher, clock=work.clock)
            if isinstance(fetched, ItemOutcome):
                return fetched
            checked = run(check_image, (fetched.data, work.max_pixels, fetched.base.url))
            return store_item(fetched, checked, work.store, clock=work.clock)

        yield from run_concurrently(one, jobs, work.workers)


def run_concurrently(fn: Callable[[T], R], jobs: Iterable[T], workers: int) -> Generator[R, None, None]:
    """Yield ``fn(job)`` in completion order, with at most ``4 * workers`` jobs in flight.

    The first exception raised by ``fn`` propagates; queued jobs are cancelled, running ones finish.
    """
    pending = iter(jobs)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ingest")
    running: set[Future[R]] = set()
    try:
        for job in pending:
            running.add(pool.submit(fn, job))
            if len(running) >= 4 * workers:
                break
        while running:
            finished, running = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                yield future.result()
                for job in itertools.islice(pending, 1):  # refill the window by one
                    running.add(pool.submit(fn, job))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------------------------------------------------------
# The batch


def journal_path(out_dir: Path, split: str) -> Path:
    """``out_dir/.journal/<split>.jsonl``."""
    return Path(out_dir) / JOURNAL_DIR / f"{split}.jsonl"


def batch_summary_path(out_dir: Path, batch_id: str) -> Path:
    """``out_dir/batches/<batch_id>.json``."""
    return Path(out_dir) / BATCHES_DIR / f"{batch_id}.json"


def _read_or_empty(path: Path) -> pd.DataFrame:
    return read_manifest(path) if path.is_file() else empty_manifest()


def _write_summary(out_dir: Path, summary: BatchSummary) -> None:
    with atomic_path(batch_summary_path(out_dir, summary.batch_id)) as tmp:
        tmp.write_text(json.dumps(summary.to_dict(), indent=2, sort_keys=True) + "\n")


def _commit(
    journal: BatchJournal,
    manifest: pd.DataFrame,
    manifest_file: Path,
    summary: BatchSummary,
    max_attempts: int,
) -> pd.DataFrame:
    """Resolve the journal's outcomes into rows, write the manifest atomically; fills ``summary``'s counts."""
    # One outcome per position (the last, should a record ever repeat).
    outcomes = list({o.position: o for o in map(ItemOutcome.from_record, journal.records())}.values())
    resolution = resolve_outcomes(outcomes, manifest, journal.header.batch_id, max_attempts=max_attempts)
    updated = apply_resolution(manifest, resolution)
    if updated is not manifest or not manifest_file.is_file():
        write_manifest(updated, manifest_file)
    summary.added = resolution.counts["added"]
    summary.unchanged = resolution.counts["unchanged"]
    summary.repeated += resolution.counts["repeated"]
    summary.quarantined = dict(
        sorted(
            Counter(
                reason_code(r["reason"]) for r in resolution.written if r["status"] == STATUS_QUARANTINED
            ).items()
        )
    )
    return updated


def _settle_pending(
    journal: BatchJournal | None,
    plan: BatchPlan,
    manifest: pd.DataFrame,
    manifest_file: Path,
    out_dir: Path,
    max_attempts: int,
) -> tuple[BatchJournal | None, pd.DataFrame]:
    """Decide what to do with a journal left by an interrupted run.

    Already committed (its batch id is in the manifest) -> removed. Same plan -> kept, to resume. Another
    plan (another source) -> its finished items are committed as a partial batch, then removed.
    """
    if journal is None:
        return None, manifest
    batch_id = journal.header.batch_id
    if (manifest["batch_id"] == batch_id).any():
        logger.info("batch %s was committed before the run stopped; removing its journal", batch_id)
        journal.remove()
        return None, manifest
    if journal.header.fingerprint == plan.fingerprint:
        return journal, manifest
    logger.warning(
        "committing the finished part of interrupted batch %s (source %s) before the new batch",
        batch_id,
        journal.header.source,
    )
    summary = BatchSummary(
        batch_id=batch_id, split=journal.header.split, source=journal.header.source, partial=True
    )
    updated = _commit(journal, manifest, manifest_file, summary, max_attempts)
    summary.manifest = str(manifest_file)
    _write_summary(out_dir, summary)
    journal.remove()
    return None, updated


def _open_batch(
    items: Sequence[SourceItem], out_dir: Path, split: str, source: str, max_attempts: int, clock: Clock
) -> tuple[BatchJournal, BatchPlan, pd.DataFrame, Path]:
    """The batch to run: a pending one of the same plan resumed, else a new journal (a pending batch of another
    source is committed first); with its plan, the manifest it appends to and that manifest's path."""
    manifest_file = manifest_path(out_dir / MANIFESTS_DIR, split)
    manifest = _read_or_empty(manifest_file)
    plan = plan_batch(items, manifest, max_attempts=max_attempts)
    journal, manifest = _settle_pending(
        BatchJournal.open(journal_path(out_dir, split)), plan, manifest, manifest_file, out_dir, max_attempts
    )
    if journal is None:
        plan = plan_batch(items, manifest, max_attempts=max_attempts)
        header = JournalHeader(
            batch_id=new_batch_id(clock(), plan.fingerprint),
            split=split,
            source=source,
            fingerprint=plan.fingerprint,
            started_at=clock().isoformat(),
        )
        journal = BatchJournal.create(journal_path(out_dir, split), header)
    return journal, plan, manifest, manifest_file


def _journal_outcomes(
    journal: BatchJournal,
    todo: Sequence[tuple[int, SourceItem]],
    work: ItemWork,
    summary: BatchSummary,
    on_outcome: Callable[[ItemOutcome], None] | None,
    progress: bool,
) -> None:
    """Process the items still to do, appending each outcome to the journal as it is known."""
    bar = tqdm(total=len(todo), desc=f"ingest {summary.split}", unit="img", disable=not progress)
    with bar, contextlib.closing(process_items(todo, work)) as outcomes:
        for outcome in outcomes:
            journal.append(asdict(outcome))
            summary.processed += 1
            bar.update(1)
            if on_outcome is not None:
                on_outcome(outcome)


def ingest_batch(
    items: Sequence[SourceItem],
    fetcher: Fetcher,
    store: ImageStore,
    out_dir: str | Path,
    *,
    split: str,
    source: str,
    workers: int,
    max_pixels: int,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    check_workers: int = 0,
    parallel: ParallelConfig | None = None,
    on_outcome: Callable[[ItemOutcome], None] | None = None,
    progress: bool = True,
    clock: Clock = utc_now,
) -> BatchSummary:
    """Ingest the new items of one source listing as one batch (see the module docstring).

    Args:
        items: the source listing, in a stable order.
        fetcher: gets the bytes of an item.
        store: where checked images go.
        out_dir: the ingestion root (manifests, batch summaries, journal; local images).
        split: the manifest to append to ("train", "index", "test", ...; a safe file name).
        source: a label for the source, recorded in the journal and summary.
        workers: concurrent fetches (and store writes).
        max_pixels: decompression-bomb limit of the decode check.
        max_attempts: ingest runs that may try an item whose failures are transient; the last one's failure
            is permanent.
        check_workers: local processes for the decode checks (0 or 1: this process).
        parallel: where the decode checks run (the ``parallel`` section; None: locally); the outcomes are the
            same on every backend.
        on_outcome: called after each item is journaled (progress hooks, fault-injection in tests).
        progress: show a progress bar.
        clock: the time source.

    Returns:
        The batch summary (also written to ``batches/<batch_id>.json``).

    Raises:
        InputError: ``max_attempts`` < 1.
        StorageError: the object store failed; finished items stay journaled for the rerun.
    """
    if max_attempts < 1:
        raise InputError(f"max_attempts must be >= 1, got {max_attempts}")
    start = time.perf_counter()
    out_dir = Path(out_dir)
    journal, plan, manifest, manifest_file = _open_batch(items, out_dir, split, source, max_attempts, clock)
    done = {o.position: o for o in (ItemOutcome.from_record(r) for r in journal.records())}
    summary = BatchSummary(
        batch_id=journal.header.batch_id,
        split=split,
        source=source,
        listed=plan.listed,
        known=plan.known,
        repeated=plan.repeated,
        retried=plan.retried,
        resumed=len(done),
        manifest=str(manifest_file),
    )
    todo = [(position, item) for position, item in plan.todo if position not in done]
    work = ItemWork(fetcher, store, max_pixels, clock, workers, check_workers, parallel)
    with journal:
        _journal_outcomes(journal, todo, work, summary, on_outcome, progress)
        _commit(journal, manifest, manifest_file, summary, max_attempts)
    summary.seconds = round(time.perf_counter() - start, 3)
    _write_summary(out_dir, summary)
    journal.remove()
    logger.info(
        "batch %s: %d added, %d quarantined %s",
        summary.batch_id,
        summary.added,
        summary.quarantined_total,
        summary.quarantined,
    )
    return summary
