"""Retries across ingest runs against a real local HTTP server: transient failures are fetched again, until
``max_attempts``; permanent ones never are."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pytest

from landmark.config import Config, IngestConfig
from landmark.data.manifest import read_manifest, reason_code
from landmark.stages.ingest import ingest

if TYPE_CHECKING:
    from http_images import ImageServer

pytestmark = pytest.mark.integration

# retries=0: every run makes one attempt per item, so the counts below are runs
LIMITS = IngestConfig(store="local", workers=2, timeout_s=2.0, retries=0, backoff_s=0.0)


def test_transient_failures_are_fetched_again_by_the_next_run(
    tmp_path: Path, image_server: ImageServer
) -> None:
    u = image_server.url
    rows = [
        f"ok1,{u('/img/a.jpg')},1",
        f"rec1,{u('/recovering/b.jpg')},1",  # 503 until the server recovers
        f"miss1,{u('/missing.jpg')},2",  # 404: permanent
        f"cut1,{u('/cut.jpg')},2",  # connection closed halfway: transient, every time
        f"trunc1,{u('/truncated.jpg')},2",  # a complete transfer of half a JPEG: permanent
    ]
    csv = tmp_path / "batch.csv"
    csv.write_text("id,url,landmark_id\n" + "\n".join(rows) + "\n")
    cfg = dataclasses.replace(Config(), ingest=LIMITS)
    out = tmp_path / "out"
    manifest_file = out / "manifests" / "train.parquet"

    first = ingest(cfg, str(csv), out, progress=False)
    assert first.added == 1 and first.retried == 0
    before = read_manifest(manifest_file).set_index("image_id")
    assert before["retryable"].to_dict() == {
        "ok1": False, "rec1": True, "miss1": False, "cut1": True, "trunc1": False
    }  # fmt: skip
    assert reason_code(before.loc["rec1", "reason"]) == "http_error" and "503" in before.loc["rec1", "reason"]
    assert (before["attempts"] == 1).all()

    image_server.recovered.set()
    second = ingest(cfg, str(csv), out, progress=False)
    assert (second.retried, second.added, second.known, second.quarantined) == (2, 1, 3, {"truncated": 1})
    after = read_manifest(manifest_file).set_index("image_id")
    assert list(after.index) == list(before.index)  # replaced in place, nothing appended
    rec = after.loc["rec1"]
    assert (rec["status"], rec["reason"], rec["attempts"], rec["retryable"]) == ("ok", "", 2, False)
    assert rec["width"] > 0 and rec["batch_id"] == second.batch_id
    assert (after.loc["cut1", "attempts"], after.loc["cut1", "retryable"]) == (2, True)
    unchanged = ["ok1", "miss1", "trunc1"]
    pd.testing.assert_frame_equal(after.loc[unchanged], before.loc[unchanged])  # nothing else changed
    assert image_server.requests["/missing.jpg"] == 1 and image_server.requests["/truncated.jpg"] == 1
    assert image_server.requests["/recovering/b.jpg"] == 2 and image_server.requests["/img/a.jpg"] == 1

    third = ingest(cfg, str(csv), out, progress=False)  # the third run of cut1 is its last
    assert third.retried == 1 and third.quarantined == {"truncated": 1}
    cut = read_manifest(manifest_file).set_index("image_id").loc["cut1"]
    assert (cut["attempts"], cut["retryable"]) == (3, False)
    assert "gave up after 3 ingest runs, ingest.max_attempts=3" in cut["reason"]

    fourth = ingest(cfg, str(csv), out, progress=False)
    assert fourth.processed == 0 and fourth.known == 5
    assert image_server.requests["/cut.jpg"] == 3
