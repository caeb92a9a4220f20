"""The served version and how it follows the registry's production pointer.

- :class:`ModelSlot` holds the :class:`~landmark.serving.bundle.ServedModel` in service: one reference, swapped
  under a lock. A request takes the reference once and answers with it alone, so a swap never fails a request
  in flight or mixes two versions in one answer.
- :class:`RegistryFollower` polls ``production.json`` every ``serve.poll_s`` seconds; a new version (a
  promotion or a rollback) is downloaded into the cache, verified against its MANIFEST, loaded and warmed up
  beside the old one, then swapped in. A failed load keeps the old version and is reported (``/healthz``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from landmark.config import Config
from landmark.ops.registry import Registry
from landmark.serving.bundle import ServedModel, load_version_dir
from landmark.serving.cache import cached_version, prune_cache
from landmark.serving.metrics import ServingMetrics
from landmark.serving.query import describe_query, recognize, search

logger = logging.getLogger(__name__)

Loader = Callable[[str], ServedModel]


def utc_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class ModelSlot:
    """The version in service: read by every request, replaced atomically by :meth:`swap`."""

    def __init__(self, served: ServedModel | None = None) -> None:
        self._lock = threading.Lock()
        self._served = served

    def get(self) -> ServedModel | None:
        """The version in service now (None before the first load)."""
        with self._lock:
            return self._served

    def swap(self, served: ServedModel) -> ServedModel | None:
        """Put ``served`` in service; returns the version it replaced."""
        with self._lock:
            previous, self._served = self._served, served
        return previous


@dataclass(frozen=True)
class LoadFailure:
    """A version that could not be put into service, and why."""

    version: str
    error: str
    at: str
    attempt_time: float  # monotonic seconds, for the retry delay


def warm_up(served: ServedModel) -> None:
    """Run one search (and recognition) on a blank image: proves the version answers before it serves, and
    pays one-off costs (allocations, lazy inits) outside a request."""
    blank = np.full((64, 64, 3), 127, dtype=np.uint8)
    query = describe_query(served, blank)
    search(served, [query], 1)
    if served.train is not None:
        recognize(served, [query])


def registry_loader(
    cfg: Config, registry: Registry, cache_root: Path, local_dir: Path | None = None
) -> Loader:
    """A loader that fetches a version into the cache (verified), loads it (with the local feature stores under
    ``local_dir`` for spatial verification, when they cover it) and warms it up."""

    def load(version: str) -> ServedModel:
        root = cached_version(registry, version, cache_root)
        served = load_version_dir(cfg, root, version=version, local_dir=local_dir)
        warm_up(served)
        return served

    return load


class RegistryFollower:
    """Polls the production pointer and swaps in the version it names.

    Args:
        slot: where the served version lives.
        read_pointer: returns the production version id (None when nothing is promoted).
        load: loads (and verifies) a version; any exception it raises is a failed load.
        poll_s: seconds between polls.
        metrics: counters of swaps and failures (optional).
        retry_s: a version that failed to load is tried again after this long (default 6 polls).
        on_swap: called with the new version id after each swap (e.g. cache pruning).
    """

    def __init__(
        self,
        slot: ModelSlot,
        read_pointer: Callable[[], str | None],
        load: Loader,
        poll_s: float,
        *,
        metrics: ServingMetrics | None = None,
        retry_s: float | None = None,
        on_swap: Callable[[str], None] | None = None,
    ) -> None:
        self.slot, self.read_pointer, self.load, self.poll_s = slot, read_pointer, load, poll_s
        self.metrics = metrics
        self.retry_s = 6 * poll_s if retry_s is None else retry_s
        self.on_swap = on_swap
        self.pointer: str | None = None
        self.checked_at: str | None = None
        self.poll_error: str | None = None
        self.failure: LoadFailure | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._check_lock = threading.Lock()

    def check(self) -> bool:
        """One poll: read the pointer and, when it names another version, load and swap it in.

        Returns:
            True when a new version went into service.
        """
        with self._check_lock:
            try:
                pointer = self.read_pointer()
            except Exception as exc:  # a store outage must not stop serving: reported
                self.poll_error = f"{type(exc).__name__}: {exc}"
                logger.warning("serving: cannot read the production pointer: %s", self.poll_error)
                return False
            self.pointer, self.poll_error, self.checked_at = pointer, None, utc_iso()
            current = self.slot.get()
            if pointer is None or (current is not None and current.version == pointer):
                if current is not None and current.version == pointer:
                    self.failure = None
                return False
            if self._recently_failed(pointer):
                return False
            return self._load_and_swap(pointer)

    def _recently_failed(self, version: str) -> bool:
        failure = self.failure
        return (
            failure is not None
            and failure.version == version
            and time.monotonic() - failure.attempt_time < self.retry_s
        )

    def _load_and_swap(self, version: str) -> bool:
        try:
            served = self.load(version)
        except Exception as exc:  # any failed load keeps the old version: reported
            self.failure = LoadFailure(version, f"{type(exc).__name__}: {exc}", utc_iso(), time.monotonic())
            logger.error("serving: version %s failed to load, keeping the current one: %s", version, exc)
            if self.metrics is not None:
                self.metrics.load_failures.inc()
            return False
        self.slot.swap(served)
        self.failure = None
        if self.metrics is not None:
            self.metrics.served(served.version, served.model_id, int(served.db.shape[0]))
        logger.info("serving: version %s in service", version)
        if self.on_swap is not None:
            self.on_swap(version)
        return True

    def status(self) -> dict[str, Any]:
        """What the follower knows: the pointer, the last poll, the last failed load."""
        failure = self.failure
        return {
            "production": self.pointer,
            "poll_s": self.poll_s,
            "checked_at": self.checked_at,
            "poll_error": self.poll_error,
            "load_error": None
            if failure is None
            else {"version": failure.version, "error": failure.error, "at": failure.at},
        }

    def start(self) -> None:
        """Poll in a daemon thread until :meth:`stop`."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="registry-follower", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.check()
            self._stop.wait(self.poll_s)

    def stop(self) -> None:
        """Stop polling (waits for a load in progress to finish)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


def cache_pruner(cache_root: Path, keep: int) -> Callable[[str], None]:
    """An ``on_swap`` hook deleting cached versions beyond the serving one and ``keep`` others."""

    def prune(version: str) -> None:
        deleted = prune_cache(cache_root, {version}, keep)
        if deleted:
            logger.info("serving: removed cached versions %s", ", ".join(deleted))

    return prune
