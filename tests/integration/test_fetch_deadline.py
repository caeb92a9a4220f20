"""Download deadlines against a real local HTTP server: a server dripping one byte per second cannot hold a worker."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from landmark.config import Config, IngestConfig
from landmark.data.fetch import FetchError, HttpFetcher, TransferBudget, TransferTimeout
from landmark.data.manifest import read_manifest, reason_code
from landmark.data.sources import SourceItem
from landmark.stages.ingest import ingest

if TYPE_CHECKING:
    from http_images import ImageServer

pytestmark = pytest.mark.integration

TYPES = ("image/jpeg", "image/png")


def fetcher(timeout_s: float, min_bytes_per_s: float = 0.0, rate_grace_s: float = 2.0) -> HttpFetcher:
    return HttpFetcher(
        timeout_s=timeout_s,
        retries=0,
        backoff_s=0.0,
        max_bytes=1_000_000,
        content_types=TYPES,
        min_bytes_per_s=min_bytes_per_s,
        rate_grace_s=rate_grace_s,
    )


def timed_failure(http: HttpFetcher, url: str) -> tuple[FetchError, float]:
    start = time.monotonic()
    with pytest.raises(FetchError) as info:
        http.fetch(SourceItem("x", url))
    return info.value, time.monotonic() - start


@pytest.mark.parametrize("route", ["/drip.jpg", "/driphead.jpg"])
def test_a_one_byte_per_second_server_is_cut_at_the_deadline(image_server: ImageServer, route: str) -> None:
    error, seconds = timed_failure(fetcher(timeout_s=1.5), image_server.url(route))
    assert error.code == "timeout" and error.retryable
    assert "longer than 1.5s" in error.detail
    assert 1.4 <= seconds < 2.5, f"cut after {seconds:.2f}s, not at the 1.5 s deadline"


def test_a_slow_transfer_is_cut_after_the_grace_period(image_server: ImageServer) -> None:
    http = fetcher(timeout_s=30.0, min_bytes_per_s=1024.0, rate_grace_s=1.0)
    error, seconds = timed_failure(http, image_server.url("/drip.jpg"))
    assert error.code == "timeout" and error.retryable
    assert "slower than min_bytes_per_s=1024" in error.detail
    assert seconds < 3.5, f"a 1 B/s transfer ran {seconds:.2f}s with a 1 s grace period"


def test_normal_and_late_starting_downloads_pass(image_server: ImageServer) -> None:
    http = fetcher(timeout_s=5.0, min_bytes_per_s=1024.0, rate_grace_s=0.2)
    assert http.fetch(SourceItem("a", image_server.url("/img/a.jpg"))) == image_server.images["a.jpg"]
    image_server.delay_s = 0.5  # time to the first byte is bounded by the deadline, not by the rate
    assert http.fetch(SourceItem("b", image_server.url("/slowok/b.jpg"))) == image_server.images["b.jpg"]


def test_budget_checks_deadline_and_rate() -> None:
    now = [0.0]
    budget = TransferBudget(10.0, min_bytes_per_s=100.0, grace_s=1.0, clock=lambda: now[0])
    now[0] = 3.0
    assert budget.remaining_s() == 7.0  # no byte yet: only the deadline counts
    budget.count(50)  # first bytes at t=3
    now[0] = 3.5
    assert budget.remaining_s() == 6.5  # within the grace period
    now[0] = 4.5
    with pytest.raises(TransferTimeout, match=r"50 bytes in 1.5s is slower than min_bytes_per_s=100"):
        budget.remaining_s()
    budget.count(500)
    assert budget.remaining_s() == 5.5
    now[0] = 10.0
    with pytest.raises(TransferTimeout, match=r"longer than 10s \(550 bytes read\)"):
        budget.remaining_s()


def test_ingest_quarantines_a_dripping_server_as_a_retryable_timeout(
    tmp_path: Path, image_server: ImageServer
) -> None:
    csv = tmp_path / "drip.csv"
    rows = [f"good,{image_server.url('/img/a.jpg')},1", f"drip,{image_server.url('/drip.jpg')},1"]
    csv.write_text("id,url,landmark_id\n" + "\n".join(rows) + "\n")
    limits = IngestConfig(store="local", workers=2, timeout_s=1.0, retries=1, backoff_s=0.05)
    cfg = dataclasses.replace(Config(), ingest=limits)
    start = time.monotonic()
    summary = ingest(cfg, str(csv), tmp_path / "out", progress=False)
    seconds = time.monotonic() - start
    assert summary.added == 1 and summary.quarantined == {"timeout": 1}
    assert seconds < 4.0, f"two 1 s attempts took {seconds:.1f}s"
    manifest = read_manifest(tmp_path / "out" / "manifests" / "train.parquet").set_index("image_id")
    assert reason_code(manifest.loc["drip", "reason"]) == "timeout"
    assert "after 2 attempts" in manifest.loc["drip", "reason"]
