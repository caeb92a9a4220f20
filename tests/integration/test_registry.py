"""The model registry and the promotion gate against a real SeaweedFS: round trips, rejections, rollback, faults."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from landmark.cli import app
from landmark.config import Config, IndexConfig, PromoteConfig
from landmark.ops.registry import MANIFEST, Registry, RegistryError, check_version_id
from landmark.platform.infra import start_seaweed, stop_seaweed
from landmark.platform.storage import (
    ENV_ACCESS_KEY,
    ENV_BUCKET,
    ENV_ENDPOINT,
    ENV_SECRET_KEY,
    ObjectStore,
    S3Settings,
    StorageError,
    read_credentials_file,
)
from landmark.retrieval.index import load_index, write_index
from landmark.stages.promote import promote, rollback

pytestmark = pytest.mark.integration

SERVICES_DIR = Path(__file__).resolve().parents[2] / "build" / "test-services"
CFG = Config(promote=PromoteConfig(metrics=("revisitop.medium.mAP", "recognition.GAP"), min_improvement=0.5))


@dataclass(frozen=True)
class Candidate:
    model: Path
    index: Path
    metrics: Path


def make_candidate(root: Path, name: str, seed: int, medium: float, gap: float) -> Candidate:
    """A model directory (seeded bytes as weights), a real two-shard FAISS index and its metrics.json."""
    rng = np.random.default_rng(seed)
    model = root / name / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text(json.dumps({"format_version": 1, "seed": seed}))
    (model / "weights.pt").write_bytes(rng.bytes(150_000))
    (model / "labels.json").write_text(json.dumps([0, 1, 2]))
    (model / "logs").mkdir()
    (model / "logs" / "train.csv").write_text("step,loss\n1,0.5\n")
    vectors = rng.standard_normal((40, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"img{i:03d}" for i in range(40)]
    index = root / name / "index"
    write_index(index, [(ids, vectors)], dim=16, kind="flat", cfg=IndexConfig(shard_size=25))
    metrics = root / name / "eval" / "metrics.json"
    metrics.parent.mkdir(parents=True)
    metrics.write_text(
        json.dumps({"revisitop": {"medium": {"mAP": medium}}, "recognition": {"GAP": gap}, "n_queries": 6})
    )
    return Candidate(model, index, metrics)


def write_reports(root: Path, *, quality: bool = True, drift_share: float = 0.1) -> tuple[Path, Path]:
    quality_path, drift_path = root / "quality.json", root / "drift.json"
    quality_path.write_text(json.dumps({"gate": "manifest", "passed": quality, "checks": []}))
    drift_path.write_text(
        json.dumps({"drift_share": drift_share, "passed": drift_share <= 0.3, "max_drift_share": 0.3})
    )
    return quality_path, drift_path


def run_promote(
    cfg: Config, store: ObjectStore, c: Candidate, root: Path, **reports: Any
) -> tuple[Any, dict[str, Any]]:
    quality, drift = write_reports(root, **reports)
    summary = promote(cfg, c.model, c.index, c.metrics, quality, drift, store=store)
    return summary, json.loads(summary.decision_path.read_text())


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_publish_switch_download_round_trip(object_store: ObjectStore, tmp_path: Path) -> None:
    registry = Registry(object_store, "reg")
    assert registry.production() is None and registry.list_versions() == []
    c = make_candidate(tmp_path, "a", seed=1, medium=50.0, gap=40.0)
    metrics = json.loads(c.metrics.read_text())
    uploaded: list[str] = []
    version = registry.publish(c.model, c.index, metrics, on_uploaded=uploaded.append)
    check_version_id(version)
    n_files = len(tree(c.model)) + len(tree(c.index)) + 1  # + metrics.json
    assert len(uploaded) == n_files + 1 and uploaded[-1].endswith(f"{version}/{MANIFEST}")  # MANIFEST last
    assert registry.is_complete(version)
    [info] = registry.list_versions()
    assert (info.version, info.complete, info.files) == (version, True, n_files + 1)

    again: list[str] = []  # the same content: idempotent, nothing uploaded
    assert registry.publish(c.model, c.index, metrics, on_uploaded=again.append) == version and again == []

    pointer = registry.switch(version, decision="d1")
    assert registry.production() == pointer and pointer.version == version and pointer.history == ()
    dest = tmp_path / "downloaded"
    registry.download(version, dest)
    assert tree(dest / "model") == tree(c.model)
    assert tree(dest / "index") == tree(c.index)
    assert json.loads((dest / "metrics.json").read_text()) == metrics
    assert load_index(dest / "index", gpu="off").ntotal == 40

    # a corrupted object (same size, other bytes) is refused and the earlier download stays intact
    weights_key = registry.version_prefix(version) + "model/weights.pt"
    object_store.put_bytes(weights_key, b"\0" * object_store.stat(weights_key).size)
    with pytest.raises(RegistryError, match=r"model/weights.pt: size .* differ from the manifest"):
        registry.download(version, dest)
    assert tree(dest / "model") == tree(c.model)
    with pytest.raises(RegistryError, match="missing or incomplete"):
        registry.switch("20990101T000000000000Z-000000000000")
    with pytest.raises(RegistryError, match="not a registry version id"):
        registry.download("../x", dest)


def test_gate_keeps_production_for_bad_candidates_and_rollback_restores(
    object_store: ObjectStore, tmp_path: Path
) -> None:
    registry = Registry(object_store, CFG.promote.prefix)
    first, decision = run_promote(CFG, object_store, make_candidate(tmp_path, "v1", 1, 60.0, 50.0), tmp_path)
    assert first.outcome == "promoted" and first.previous is None and decision["outcome"] == "promoted"
    v1 = first.production
    pointer_bytes = object_store.get_bytes(registry.pointer_key)

    worse = make_candidate(tmp_path, "worse", 2, 59.0, 55.0)
    bad_data = make_candidate(tmp_path, "bad-data", 3, 70.0, 60.0)
    drifted = make_candidate(tmp_path, "drifted", 4, 70.0, 60.0)
    cases = [
        (worse, {}, "revisitop.medium.mAP: candidate 59.000 vs production 60.000 (-1.000 points"),
        (bad_data, {"quality": False}, "data quality: the candidate's data failed validation"),
        (drifted, {"drift_share": 0.45}, "drift: share 0.450 exceeds the bound 0.300"),
    ]
    for candidate, reports, reason in cases:
        summary, decision = run_promote(CFG, object_store, candidate, tmp_path, **reports)
        assert summary.outcome == "rejected" and not summary.promoted
        assert any(r.startswith(reason) for r in decision["reasons"]), decision["reasons"]
        assert object_store.get_bytes(registry.pointer_key) == pointer_bytes  # the pointer was not touched
    assert [v.version for v in registry.list_versions()] == [v1]  # rejected candidates are not uploaded
    logged = registry.decisions(10)
    assert [d["outcome"] for d in logged] == ["promoted", "rejected", "rejected", "rejected"]
    assert logged[2]["reasons"][0] == "data quality: the candidate's data failed validation"

    better, _ = run_promote(CFG, object_store, make_candidate(tmp_path, "v2", 5, 61.0, 51.0), tmp_path)
    assert better.outcome == "promoted" and better.previous == v1
    pointer = registry.production()
    assert pointer is not None and pointer.version == better.production and pointer.history == (v1,)
    assert pointer.decision_id == better.decision_id

    back = rollback(CFG, store=object_store)
    assert (back.previous, back.production, back.history) == (better.production, v1, ())
    restored = registry.production()
    assert restored is not None and restored.version == v1
    assert registry.decisions(1)[0]["outcome"] == "rollback"
    with pytest.raises(RegistryError, match=f"production version {v1} has no previous version"):
        rollback(CFG, store=object_store)


def test_retention_keeps_production_and_history(object_store: ObjectStore, tmp_path: Path) -> None:
    cfg = replace(CFG, promote=replace(CFG.promote, keep_versions=1))
    registry = Registry(object_store, cfg.promote.prefix)
    versions = []
    for i, score in enumerate((50.0, 51.0, 52.0)):
        summary, _ = run_promote(
            cfg, object_store, make_candidate(tmp_path, f"v{i}", i, score, score), tmp_path
        )
        versions.append(summary.production)
    assert summary.pruned == [versions[0]]
    assert [v.version for v in registry.list_versions()] == versions[1:]
    pointer = registry.production()
    assert pointer is not None and pointer.history == (versions[1],)


def test_cli_promote_rollback_and_registry(
    s3_settings: S3Settings, object_store: ObjectStore, tmp_path: Path
) -> None:
    env = {
        ENV_ENDPOINT: s3_settings.endpoint,
        ENV_BUCKET: s3_settings.bucket,
        ENV_ACCESS_KEY: s3_settings.credentials.access_key,
        ENV_SECRET_KEY: s3_settings.credentials.secret_key,
    }
    base = [
        "--set",
        "storage.timeout_s=5",
        "--set",
        "storage.retries=1",
        "--set",
        "promote.min_improvement=0.5",
    ]
    quality, drift = write_reports(tmp_path)
    runner = CliRunner()

    def cli_promote(c: Candidate, *extra: str) -> Any:
        args = [
            *base,
            "promote",
            "--model",
            str(c.model),
            "--index",
            str(c.index),
            "--metrics",
            str(c.metrics),
        ]
        return runner.invoke(
            app,
            [*args, "--quality", str(quality), "--drift", str(drift), *extra],
            env=env,
            terminal_width=200,
        )

    first = cli_promote(make_candidate(tmp_path, "v1", 1, 60.0, 50.0))
    assert first.exit_code == 0, first.output
    assert "PROMOTED" in first.output and "production: (none) -> " in first.output
    decision = json.loads((tmp_path / "v1" / "eval" / "decision.json").read_text())
    v1 = decision["production_after"]

    worse = make_candidate(tmp_path, "worse", 2, 59.0, 50.0)
    rejected = cli_promote(worse)
    assert rejected.exit_code == 0, rejected.output  # a decision was made: not an error
    assert (
        "NOT PROMOTED" in rejected.output
        and "(-1.000 points, needs >= +0.500): not enough" in rejected.output
    )

    # a re-evaluation of production on the same set can be passed explicitly
    baseline = tmp_path / "prod-metrics.json"
    baseline.write_text(json.dumps({"revisitop": {"medium": {"mAP": 55.0}}, "recognition": {"GAP": 45.0}}))
    out = tmp_path / "decisions" / "d.json"
    promoted = cli_promote(worse, "--production-metrics", str(baseline), "--out", str(out))
    assert promoted.exit_code == 0 and "PROMOTED" in promoted.output, promoted.output
    assert json.loads(out.read_text())["deltas"] == {"revisitop.medium.mAP": 4.0, "recognition.GAP": 5.0}

    missing = cli_promote(worse, "--production-metrics", str(tmp_path / "nope.json"))
    assert missing.exit_code == 1 and "production metrics not found" in missing.output

    listing = runner.invoke(app, [*base, "registry", "list"], env=env, terminal_width=200)
    assert listing.exit_code == 0 and "production" in listing.output and "rollback #1" in listing.output
    back = runner.invoke(app, [*base, "rollback"], env=env, terminal_width=200)
    assert back.exit_code == 0 and f"-> {v1}" in back.output, back.output
    show = runner.invoke(app, [*base, "registry", "show"], env=env, terminal_width=200)
    assert (
        show.exit_code == 0
        and f"production: {v1}" in show.output
        and "revisitop.medium.mAP = 60.000" in show.output
    )
    again = runner.invoke(app, [*base, "rollback"], env=env, terminal_width=200)
    assert again.exit_code == 1 and "has no previous version" in again.output


# --- fault: the store goes down in the middle of a promotion ---------------------------------------------------


@pytest.fixture
def private_store() -> Iterator[tuple[Path, ObjectStore]]:
    """A SeaweedFS server of its own (the test stops and restarts it) and a fail-fast store on it."""
    SERVICES_DIR.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="registry-", dir=SERVICES_DIR))
    try:
        info = start_seaweed(run_dir)
        settings = S3Settings(
            info.endpoint, "registry-fault", "us-east-1", read_credentials_file(info.credentials_file), 5.0, 1
        )
        store = ObjectStore(settings)
        store.ensure_bucket()
        yield run_dir, store
    finally:
        stop_seaweed(run_dir)
        shutil.rmtree(run_dir, ignore_errors=True)


def test_store_down_during_promotion_keeps_a_complete_production(
    private_store: tuple[Path, ObjectStore], tmp_path: Path
) -> None:
    run_dir, store = private_store
    registry = Registry(store, CFG.promote.prefix)
    first, _ = run_promote(CFG, store, make_candidate(tmp_path, "v1", 1, 60.0, 50.0), tmp_path)
    v1 = first.production
    candidate = make_candidate(tmp_path, "v2", 2, 65.0, 55.0)
    quality, drift = write_reports(tmp_path)
    uploads: list[str] = []

    def stop_after_two(key: str) -> None:
        uploads.append(key)
        if len(uploads) == 2:
            assert stop_seaweed(run_dir)

    with pytest.raises(StorageError) as failure:
        promote(
            CFG,
            candidate.model,
            candidate.index,
            candidate.metrics,
            quality,
            drift,
            store=store,
            on_uploaded=stop_after_two,
        )
    message = str(failure.value)
    assert store.settings.endpoint in message and "unreachable" in message
    assert f"production still {v1}" in message
    assert len(uploads) == 2
    failed = json.loads((candidate.metrics.parent / "decision.json").read_text())
    assert failed["outcome"] == "failed" and failed["production_before"] == v1 and failed["promote"] is True

    start_seaweed(run_dir)  # same ports, same data
    pointer = registry.production()
    assert pointer is not None and pointer.version == v1 and registry.is_complete(v1)
    partial = [v for v in registry.list_versions() if not v.complete]
    assert len(partial) == 1 and partial[0].files == 2  # the cut-off upload: no MANIFEST, ignored
    assert f"promotion of {partial[0].version} failed" in message

    summary = promote(CFG, candidate.model, candidate.index, candidate.metrics, quality, drift, store=store)
    assert (
        summary.outcome == "promoted" and summary.production == partial[0].version
    )  # overwritten, completed
    assert [(v.version, v.complete) for v in registry.list_versions()] == [
        (v1, True),
        (summary.production, True),
    ]
    after = registry.production()
    assert after is not None and after.version == summary.production and after.history == (v1,)
    registry.download(summary.production, tmp_path / "served")
    assert tree(tmp_path / "served" / "model") == tree(candidate.model)
