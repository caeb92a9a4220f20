"""Pure parts of ingestion: planning, duplicate rules, journal, content keys, source listing, fetch helpers."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from landmark.data.fetch import FetchError, FileFetcher, backoff_delay, content_type_allowed
from landmark.data.imagestore import LocalImageStore, content_key, create_image_store, sniff_extension
from landmark.data.ingest import (
    ItemOutcome,
    apply_resolution,
    new_batch_id,
    plan_batch,
    resolve_outcomes,
)
from landmark.data.journal import BatchJournal, JournalError, JournalHeader
from landmark.data.manifest import empty_manifest, make_manifest, read_manifest, reason_code
from landmark.data.sources import SourceError, SourceItem, csv_items, detect_source_kind

SHA_A = "a" * 40
SHA_B = "b" * 40


def outcome(
    position: int, image_id: str, sha1: str = "", reason: str = "", url: str = "", retryable: bool = False
) -> ItemOutcome:
    return ItemOutcome(
        position=position,
        image_id=image_id,
        url=url or f"http://h/{position}.jpg",
        landmark_id=1,
        reason=reason,
        uri=f"images/{sha1[:2]}/{sha1}.jpg" if sha1 and not reason else "",
        sha1=sha1,
        width=64 if sha1 else -1,
        height=48 if sha1 else -1,
        ingested_at="2025-01-01T00:00:00+00:00",
        retryable=retryable,
    )


def test_plan_skips_known_pairs_and_exact_repeats() -> None:
    existing = make_manifest([{"image_id": "a", "url": "http://h/a", "uri": "images/a.jpg"}])
    items = [
        SourceItem("a", "http://h/a"),  # known
        SourceItem("a", "http://h/a2"),  # same id, new url: planned (content decides later)
        SourceItem("b", "http://h/b"),
        SourceItem("b", "http://h/b"),  # exact repeat
    ]
    plan = plan_batch(items, existing)
    assert [p for p, _ in plan.todo] == [1, 2]
    assert (plan.listed, plan.known, plan.repeated) == (4, 1, 1)
    assert plan.fingerprint == plan_batch(items, existing).fingerprint
    assert plan.fingerprint != plan_batch(items[:2], existing).fingerprint  # other todo, other batch


def test_resolve_applies_duplicate_rules_in_source_order() -> None:
    existing = make_manifest([{"image_id": "old", "uri": "images/o.jpg", "sha1": SHA_A}])
    outcomes = [
        outcome(4, "x", SHA_B),  # resolved in position order, whatever the completion order
        outcome(0, "old", SHA_A),  # same id, same bytes as the manifest: unchanged, no row
        outcome(1, "old", SHA_B),  # same id, other bytes: duplicate_id
        outcome(2, "new", SHA_B),  # first holder of SHA_B: ok
        outcome(3, "copy", SHA_A),  # bytes of "old": duplicate_content
        outcome(5, "new", SHA_B),  # repeated id with identical bytes: no row
        outcome(6, "bad", reason="http_error: 404"),
    ]
    resolution = resolve_outcomes(outcomes, existing, "batch-1")
    rows, counts = resolution.rows, resolution.counts
    assert not resolution.replaced and not resolution.dropped
    summary = [(r["image_id"], r["status"], reason_code(r["reason"]) if r["reason"] else "") for r in rows]
    assert summary == [
        ("old", "quarantined", "duplicate_id"),
        ("new", "ok", ""),
        ("copy", "quarantined", "duplicate_content"),
        ("x", "quarantined", "duplicate_content"),
        ("bad", "quarantined", "http_error"),
    ]
    assert counts == {"added": 1, "unchanged": 1, "repeated": 1}
    assert all(r["batch_id"] == "batch-1" for r in rows)
    make_manifest(rows)  # the rows satisfy the manifest schema


def test_batch_id_is_a_safe_name() -> None:
    when = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
    assert new_batch_id(when, "0123456789abcdef") == "20250304T050607Z-01234567"


def test_content_keys_and_extensions(tmp_path: Path) -> None:
    sha = hashlib.sha1(b"x").hexdigest()
    assert content_key(sha, ".jpg") == f"{sha[:2]}/{sha}.jpg"
    with pytest.raises(ValueError, match="not a lowercase hex SHA-1"):
        content_key("../etc", ".jpg")
    assert sniff_extension(b"\xff\xd8\xff\xe0rest") == ".jpg"
    assert sniff_extension(b"\x89PNG\r\n\x1a\nrest") == ".png"
    assert sniff_extension(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == ".webp"
    assert sniff_extension(b"<html>") == ".img"
    store = LocalImageStore(tmp_path)
    uri = store.put(content_key(sha, ".jpg"), b"x")
    assert uri == f"images/{sha[:2]}/{sha}.jpg" and (tmp_path / uri).read_bytes() == b"x"
    assert store.put(content_key(sha, ".jpg"), b"x") == uri  # idempotent
    with pytest.raises(ValueError, match="needs an object store"):
        create_image_store("s3", tmp_path, None)


def test_journal_survives_a_torn_last_line(tmp_path: Path) -> None:
    header = JournalHeader("b1", "train", "src.csv", "f" * 40, "2025-01-01T00:00:00+00:00")
    path = tmp_path / ".journal" / "train.jsonl"
    journal = BatchJournal.create(path, header)
    journal.append({"position": 0})
    journal.append({"position": 1})
    journal.close()
    with open(path, "a") as stream:
        stream.write('{"position": 2, "ima')  # killed mid-write
    reopened = BatchJournal.open(path)
    assert reopened is not None and reopened.header == header
    assert reopened.records() == [{"position": 0}, {"position": 1}]
    reopened.append({"position": 2})  # the torn tail is cut before appending
    assert [r["position"] for r in reopened.records()] == [0, 1, 2]
    reopened.remove()
    assert BatchJournal.open(path) is None
    path.write_text("not json\n")
    with pytest.raises(JournalError, match="unreadable header"):
        BatchJournal.open(path)


def test_csv_items_mark_bad_rows_before_fetching(tmp_path: Path) -> None:
    csv = tmp_path / "train.csv"
    csv.write_text(
        "id,url,landmark_id\n"
        "ok1,https://h/1.jpg,3\n"
        "../x,https://h/2.jpg,3\n"
        "ok2,file:///etc/passwd,3\n"
        "ok3,https://h/3.jpg,-4\n"
        "ok4,https://h/4.jpg,\n"
        "short,https://h/5.jpg\n"
    )
    items = csv_items(csv)
    codes = {i.image_id: reason_code(i.reason) if i.reason else "" for i in items}
    assert codes == {
        "ok1": "",
        "../x": "unsafe_id",
        "ok2": "bad_url",
        "ok3": "malformed_row",
        "ok4": "",
        "short": "malformed_row",
    }
    assert items[0].landmark_id == 3 and items[4].landmark_id == -1
    assert "line 7" in items[-1].reason


def test_detect_source_kind(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("id,url\n")
    assert detect_source_kind("synth") == "synth"
    assert detect_source_kind("s3://bucket/prefix") == "s3"
    assert detect_source_kind(str(tmp_path / "a.csv")) == "csv"
    assert detect_source_kind(str(tmp_path)) == "folder"
    with pytest.raises(SourceError, match="cannot tell what source"):
        detect_source_kind(str(tmp_path / "missing.csv"))


def test_fetch_helpers(tmp_path: Path) -> None:
    assert [backoff_delay(k, 0.5) for k in range(3)] == [0.5, 1.0, 2.0]
    allowed = ("image/jpeg", "image/png")
    assert content_type_allowed("image/JPEG; charset=binary", allowed)
    assert content_type_allowed(None, allowed)  # the decode check decides
    assert not content_type_allowed("text/html", allowed)
    big = tmp_path / "big.jpg"
    big.write_bytes(b"x" * 11)
    fetcher = FileFetcher(max_bytes=10)
    with pytest.raises(FetchError) as info:
        fetcher.fetch(SourceItem("big", big.as_uri(), location=str(big)))
    assert info.value.code == "too_large"
    with pytest.raises(FetchError) as missing:
        fetcher.fetch(SourceItem("gone", "file:///gone", location=str(tmp_path / "gone.jpg")))
    assert missing.value.code == "missing_file"
    with pytest.raises(ValueError, match="unknown fetch reason"):
        FetchError("nope", "x")


def test_empty_manifest_plans_everything() -> None:
    plan = plan_batch([SourceItem("a", "u1"), SourceItem("b", "u2")], empty_manifest())
    assert len(plan.todo) == 2 and plan.known == 0


def retry_manifest() -> pd.DataFrame:
    """ok a; transient failures t1 (1 run), t2 (2 runs), t3 (3 runs); permanent failure p."""
    quarantined = {"status": "quarantined", "uri": ""}
    return make_manifest(
        [
            {"image_id": "a", "url": "http://h/a", "uri": "images/a.jpg", "sha1": SHA_A},
            {"image_id": "t1", "url": "http://h/t1", "reason": "timeout: slow", "retryable": True, **quarantined},
            {"image_id": "p", "url": "http://h/p", "reason": "http_error: HTTP 404", **quarantined},
            {"image_id": "t2", "url": "http://h/t2", "reason": "http_error: 503", "retryable": True,
             "attempts": 2, **quarantined},
            {"image_id": "t3", "url": "http://h/t3", "reason": "timeout: slow", "retryable": True,
             "attempts": 3, **quarantined},
        ]
    )  # fmt: skip


def test_plan_retries_transient_failures_until_max_attempts() -> None:
    manifest = retry_manifest()
    items = [SourceItem(i, f"http://h/{i}") for i in ("a", "t1", "p", "t2", "t3", "t1")]
    plan = plan_batch(items, manifest, max_attempts=3)
    assert [item.image_id for _, item in plan.todo] == ["t1", "t2"]
    assert (plan.known, plan.repeated, plan.retried) == (3, 1, 2)
    assert [item.image_id for _, item in plan_batch(items, manifest, max_attempts=2).todo] == ["t1"]


def test_retried_rows_replace_their_quarantined_rows_in_place() -> None:
    manifest = retry_manifest()
    outcomes = [
        outcome(1, "t1", SHA_B, url="http://h/t1"),  # succeeds now
        outcome(3, "t2", reason="timeout: slow again", url="http://h/t2", retryable=True),  # third run fails
    ]
    resolution = resolve_outcomes(outcomes, manifest, "b2", max_attempts=3)
    assert not resolution.rows and sorted(resolution.replaced) == [1, 3]
    updated = apply_resolution(manifest, resolution)
    assert list(updated["image_id"]) == ["a", "t1", "p", "t2", "t3"]  # same order, same length
    t1, t2 = updated.iloc[1], updated.iloc[3]
    assert (t1["status"], t1["attempts"], t1["retryable"], t1["batch_id"]) == ("ok", 2, False, "b2")
    assert (t2["status"], t2["attempts"], t2["retryable"]) == ("quarantined", 3, False)
    assert "gave up after 3 ingest runs" in t2["reason"] and reason_code(t2["reason"]) == "timeout"
    untouched = [0, 2, 4]
    pd.testing.assert_frame_equal(updated.iloc[untouched], manifest.iloc[untouched])


def test_new_transient_failures_are_retryable_and_retries_follow_the_duplicate_rules() -> None:
    manifest = retry_manifest()
    outcomes = [
        outcome(0, "n", reason="connection_error: reset", url="http://h/n", retryable=True),
        outcome(1, "a", SHA_A, url="http://h/t1-moved"),  # not a retry: a's bytes from a new url
        outcome(2, "t1", SHA_A, url="http://h/t1"),  # the retry serves a's bytes: duplicate_content
    ]
    resolution = resolve_outcomes(outcomes, manifest, "b3", max_attempts=3)
    new = resolution.rows[0]
    assert (new["image_id"], new["attempts"], new["retryable"]) == ("n", 1, True)
    assert resolution.counts == {"unchanged": 1}
    assert reason_code(resolution.replaced[1]["reason"]) == "duplicate_content"
    assert not resolution.replaced[1]["retryable"]
    single = resolve_outcomes(
        [outcome(0, "t1", reason="timeout: x", url="http://h/t1", retryable=True)],
        manifest,
        "b",
        max_attempts=1,
    )
    assert "ingest.max_attempts=1" in single.replaced[1]["reason"]
    # a retried (id, url) of an ok id serving the same bytes is accounted for by that row: its row goes
    mirror = make_manifest(
        [
            *retry_manifest().to_dict("records"),
            {
                "image_id": "a",
                "url": "http://h/a2",
                "status": "quarantined",
                "reason": "timeout",
                "retryable": True,
            },
        ]
    )
    same = resolve_outcomes([outcome(0, "a", SHA_A, url="http://h/a2")], mirror, "b4")
    assert same.dropped == [5] and same.counts == {"unchanged": 1}
    assert list(apply_resolution(mirror, same)["url"]) == list(retry_manifest()["url"])


def test_old_manifests_without_retry_columns_read_with_defaults(tmp_path: Path) -> None:
    frame = retry_manifest().drop(columns=["attempts", "retryable"])
    frame.to_parquet(tmp_path / "old.parquet", index=False)
    old = read_manifest(tmp_path / "old.parquet")
    assert list(old["attempts"]) == [1] * 5 and not old["retryable"].any()
    plan = plan_batch([SourceItem("t1", "http://h/t1")], old)
    assert plan.known == 1 and not plan.todo  # unknown retryability: treated as permanent
