"""Ingestion from a real local HTTP server into a real SeaweedFS: quarantine, idempotence, resume after a kill."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pytest

from landmark.config import Config, IngestConfig
from landmark.data.ingest import journal_path
from landmark.data.manifest import read_manifest, reason_code
from landmark.platform.infra import SeaweedInfo, start_seaweed, stop_seaweed
from landmark.platform.storage import (
    ENV_ACCESS_KEY,
    ENV_BUCKET,
    ENV_ENDPOINT,
    ENV_SECRET_KEY,
    ObjectStore,
    StorageError,
)
from landmark.stages.ingest import ingest

if TYPE_CHECKING:
    from http_images import ImageServer

pytestmark = pytest.mark.integration

LIMITS = IngestConfig(
    store="s3", workers=4, timeout_s=0.5, retries=1, backoff_s=0.05, max_bytes=100_000, max_pixels=4_000_000
)
# Comparing two runs' manifests, these legitimately differ: each item's completion time, and the batch id
# (UTC start time + plan hash) of runs started at different times. Everything else must be identical.
VOLATILE = ["ingested_at", "batch_id"]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def config(store: ObjectStore, **limits: object) -> Config:
    cfg = Config()
    storage = dataclasses.replace(cfg.storage, endpoint=store.settings.endpoint, bucket=store.bucket)
    return dataclasses.replace(cfg, storage=storage, ingest=dataclasses.replace(LIMITS, **limits))


def write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text("id,url,landmark_id\n" + "\n".join(rows) + "\n")
    return path


def bad_cases_csv(server: ImageServer, path: Path) -> tuple[Path, dict[str, str], dict[tuple[str, str], str]]:
    """The CSV with every bad case; returns it, the expected ok ids -> served image name, and the expected
    quarantined (id, url) -> reason code."""
    u = server.url
    down = f"http://127.0.0.1:{closed_port()}/x.jpg"
    rows = [
        f"a1,{u('/img/a.jpg')},1",
        f"b1,{u('/img/b.jpg')},1",
        f"c1,{u('/img/c.jpg')},2",
        f"d1,{u('/img/d.jpg')},2",
        f"m1,{u('/img/m.png')},3",
        f"flaky1,{u('/flaky.jpg')},3",
        f"miss1,{u('/missing.jpg')},4",
        f"slow1,{u('/slow.jpg')},4",
        f"trunc1,{u('/truncated.jpg')},4",
        f"cut1,{u('/cut.jpg')},4",
        f"html1,{u('/page.html')},4",
        f"fake1,{u('/fake.jpg')},4",
        f"huge1,{u('/huge.jpg')},4",
        f"bomb1,{u('/bomb.png')},4",
        f"empty1,{u('/empty.jpg')},4",
        f"redir1,{u('/redirect.jpg')},4",
        f"a1,{u('/img/a-v2.jpg')},1",  # same id, different content
        f"b1,{u('/img/b.jpg')},1",  # exact repeat: skipped, not a row
        f"copy1,{u('/img/a-copy.jpg')},1",  # new id, same bytes as a1
        f"../evil,{u('/img/e.jpg')},1",
        f"down1,{down},5",
        "ftp1,ftp://example.com/x.jpg,5",
        f"lbl1,{u('/img/f.jpg')},notanumber",
        f"short1,{u('/img/g.jpg')}",
    ]
    ok = {"a1": "a.jpg", "b1": "b.jpg", "c1": "c.jpg", "d1": "d.jpg", "m1": "m.png", "flaky1": "flaky-ok.jpg"}
    bad = {
        ("miss1", u("/missing.jpg")): "http_error",
        ("slow1", u("/slow.jpg")): "timeout",
        ("trunc1", u("/truncated.jpg")): "truncated",
        ("cut1", u("/cut.jpg")): "truncated",
        ("html1", u("/page.html")): "bad_content_type",
        ("fake1", u("/fake.jpg")): "not_an_image",
        ("huge1", u("/huge.jpg")): "too_large",
        ("bomb1", u("/bomb.png")): "too_large",
        ("empty1", u("/empty.jpg")): "empty",
        ("redir1", u("/redirect.jpg")): "bad_url",
        ("a1", u("/img/a-v2.jpg")): "duplicate_id",
        ("copy1", u("/img/a-copy.jpg")): "duplicate_content",
        ("../evil", u("/img/e.jpg")): "unsafe_id",
        ("down1", down): "connection_error",
        ("ftp1", "ftp://example.com/x.jpg"): "bad_url",
        ("lbl1", u("/img/f.jpg")): "malformed_row",
        ("short1", ""): "malformed_row",
    }
    return write_csv(path, rows), ok, bad


def stable(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=VOLATILE).reset_index(drop=True)


def test_bad_items_are_quarantined_with_reasons_and_rerun_adds_nothing(
    tmp_path: Path, image_server: ImageServer, object_store: ObjectStore
) -> None:
    csv, expected_ok, expected_bad = bad_cases_csv(image_server, tmp_path / "batch.csv")
    cfg = config(object_store)
    summary = ingest(cfg, str(csv), tmp_path / "out", object_store=object_store, progress=False)
    manifest = read_manifest(tmp_path / "out" / "manifests" / "train.parquet")

    ok = manifest[manifest["status"] == "ok"].set_index("image_id")
    assert set(ok.index) == set(expected_ok)
    for image_id, name in expected_ok.items():
        data = image_server.images[name]
        sha1 = hashlib.sha1(data).hexdigest()
        row = ok.loc[image_id]
        assert row["sha1"] == sha1 and row["width"] > 0 and row["height"] > 0
        key = f"images/{sha1[:2]}/{sha1}{'.png' if name.endswith('.png') else '.jpg'}"
        assert row["uri"] == f"s3://{object_store.bucket}/{key}"
        assert object_store.get_bytes(key) == data  # stored byte for byte
    assert ok.loc["a1", "landmark_id"] == 1 and ok.loc["m1", "landmark_id"] == 3

    quarantined = manifest[manifest["status"] == "quarantined"]
    found = {
        (i, u): reason_code(r)
        for i, u, r in zip(quarantined["image_id"], quarantined["url"], quarantined["reason"], strict=True)
    }
    assert found == expected_bad
    assert all(manifest["batch_id"] == summary.batch_id)
    assert summary.added == 6 and summary.repeated == 1 and summary.listed == 24
    assert summary.quarantined == dict(sorted(Counter(expected_bad.values()).items()))
    # readable reasons name what went wrong
    reasons = dict(zip(quarantined["image_id"], quarantined["reason"], strict=True))
    assert "404" in reasons["miss1"] and "max_bytes=100000" in reasons["huge1"]
    assert "same bytes as image 'a1'" in reasons["copy1"]
    assert "connection closed after 200 of" in reasons["cut1"] and "after 2 attempts" in reasons["cut1"]
    # retries only where they can help: a 404 once, a 503 then success, a timeout twice (retries=1)
    assert image_server.requests["/missing.jpg"] == 1
    assert image_server.requests["/flaky.jpg"] == 2
    assert image_server.requests["/slow.jpg"] == 2
    assert image_server.requests["/img/e.jpg"] == 0  # an unsafe id is never fetched
    assert not journal_path(tmp_path / "out", "train").exists()

    # a rerun fetches again only the transient failures (see test_ingest_retry.py), and finds them failing again
    transient = manifest["retryable"]
    assert set(manifest.loc[transient, "image_id"]) == {"slow1", "cut1", "down1"}
    served = image_server.requests.copy()
    again = ingest(cfg, str(csv), tmp_path / "out", object_store=object_store, progress=False)
    assert again.added == 0 and again.processed == again.retried == 3
    assert again.quarantined == {"connection_error": 1, "timeout": 1, "truncated": 1}
    assert again.known == 21 and again.repeated == 0  # the repeat is known now too
    assert set(image_server.requests - served) == {"/slow.jpg", "/cut.jpg"}  # no permanent failure again
    rerun = read_manifest(tmp_path / "out" / "manifests" / "train.parquet")
    pd.testing.assert_frame_equal(rerun[~transient], manifest[~transient])
    assert (rerun.loc[transient, "attempts"] == 2).all() and rerun.loc[transient, "retryable"].all()


def slow_csv(server: ImageServer, path: Path, route: str = "slowok", names: str = "abcdefghijkl") -> Path:
    return write_csv(path, [f"{c}{k},{server.url(f'/{route}/{c}.jpg')},{k % 3}" for k, c in enumerate(names)])


def test_killed_ingestion_resumes_to_the_uninterrupted_manifest(
    tmp_path: Path, image_server: ImageServer, object_store: ObjectStore, seaweed: SeaweedInfo
) -> None:
    image_server.delay_s = 0.3
    csv = slow_csv(image_server, tmp_path / "slow.csv")
    out = tmp_path / "killed"
    settings = object_store.settings
    env = {
        **os.environ,
        ENV_ENDPOINT: settings.endpoint,
        ENV_BUCKET: settings.bucket,
        ENV_ACCESS_KEY: settings.credentials.access_key,
        ENV_SECRET_KEY: settings.credentials.secret_key,
        "TMPDIR": str(tmp_path),
    }
    command = [
        str(Path(sys.executable).parent / "landmark"),
        *("--set", "ingest.store=s3", "--set", "ingest.workers=2"),
        *("ingest", str(csv), "--out", str(out)),
    ]
    log = tmp_path / "killed.log"
    with open(log, "wb") as sink:  # a file, not a pipe: a full pipe would stall the child
        process = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT)
    journal = journal_path(out, "train")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            if journal.is_file() and journal.read_text().count("\n") >= 1 + 4:  # header + 4 finished items
                break
            time.sleep(0.02)
        assert process.poll() is None, log.read_text()
        process.send_signal(signal.SIGKILL)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
    assert not (out / "manifests" / "train.parquet").exists()  # killed before the commit
    done_before = journal.read_text().count("\n") - 1
    assert 4 <= done_before < 12

    cfg = config(object_store, workers=2)
    resumed = ingest(cfg, str(csv), out, object_store=object_store, progress=False)
    reference = ingest(cfg, str(csv), tmp_path / "reference", object_store=object_store, progress=False)
    assert resumed.resumed >= done_before and resumed.processed == 12 - resumed.resumed
    assert resumed.added == reference.added == 12
    killed_manifest = read_manifest(out / "manifests" / "train.parquet")
    pd.testing.assert_frame_equal(
        stable(killed_manifest), stable(read_manifest(tmp_path / "reference" / "manifests" / "train.parquet"))
    )
    assert killed_manifest["image_id"].is_unique  # no duplicates
    stored = [o.key for o in object_store.list("images/")]
    assert sorted(stored) == sorted(set(stored)) and len(stored) == 12  # one object per image, none lost


def test_store_down_mid_batch_stops_with_clear_error_and_resumes(
    tmp_path: Path, image_server: ImageServer, object_store: ObjectStore, seaweed: SeaweedInfo
) -> None:
    rows = [f"{c}0,{image_server.url(f'/img/{c}.jpg')},0" for c in "abc"]
    rows += [f"{c}1,{image_server.url(f'/gated/{c}.jpg')},1" for c in "defghijkl"]
    csv = write_csv(tmp_path / "gated.csv", rows)
    cfg = config(object_store, workers=2, timeout_s=20.0)  # gated downloads wait while the store stops
    finished: list[str] = []

    def stop_store_after_three(outcome: object) -> None:
        finished.append(str(outcome))
        if len(finished) == 3:
            stop_seaweed(seaweed.run_dir)  # the store goes down; the remaining downloads are released
            image_server.gate.set()

    try:
        with pytest.raises(StorageError, match=r"unreachable|failed") as info:
            ingest(
                cfg,
                str(csv),
                tmp_path / "out",
                object_store=object_store,
                on_outcome=stop_store_after_three,
                progress=False,
            )
        assert seaweed.endpoint in str(info.value)
    finally:
        start_seaweed(seaweed.run_dir)  # same data dir, ports and credentials
    journal = journal_path(tmp_path / "out", "train")
    assert journal.is_file() and not (tmp_path / "out" / "manifests" / "train.parquet").exists()

    summary = ingest(cfg, str(csv), tmp_path / "out", object_store=object_store, progress=False)
    assert summary.resumed >= 3 and summary.added == 12 and summary.quarantined_total == 0
    manifest = read_manifest(tmp_path / "out" / "manifests" / "train.parquet")
    for uri, sha1 in zip(manifest["uri"], manifest["sha1"], strict=True):
        assert (
            hashlib.sha1(object_store.get_bytes(uri.split("/", 3)[3])).hexdigest() == sha1
        )  # nothing corrupt
