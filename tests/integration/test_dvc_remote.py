"""DVC with git and a real SeaweedFS remote: repro twice, push, wipe, pull; a push that loses the store midway."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from landmark.platform.infra import SeaweedInfo, configure_dvc_remote, start_seaweed, stop_seaweed
from landmark.platform.storage import ObjectStore, S3Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

VENV_BIN = Path(sys.executable).parent
TINY_PARAMS = """\
seed: 3
synth:
  num_landmarks: 3
  train_per_landmark: 3
  index_per_landmark: 2
  queries: 2
  index_distractors: 2
  test_distractors: 1
  image_size: 96
  facet_size: 128
  workers: 0
ingest:
  workers: 2
"""
PIPELINE = """\
stages:
  synth:
    cmd: landmark synth --out data/synth
    params: [seed, synth]
    outs: [data/synth]
  ingest:
    cmd: landmark ingest data/synth --out data/ingest
    deps: [data/synth]
    params: [ingest]
    outs:
      - data/ingest:
          persist: true
"""


def run(
    args: list[str], repo: Path, env: dict[str, str], *, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=300, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def dvc(repo: Path, env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run([str(VENV_BIN / "dvc"), *args], repo, env, check=check)


def snapshot(root: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under ``root``."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A fresh git + DVC repo and the environment to run commands in it (project-local TMPDIR, no analytics)."""
    root = tmp_path / "repo"
    root.mkdir()
    (tmp_path / "tmp").mkdir()
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "TMPDIR": str(tmp_path / "tmp"),
        "DVC_NO_ANALYTICS": "1",
        "DO_NOT_TRACK": "1",
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
        # One attempt per request: a push to a dead store fails in seconds instead of retrying for minutes.
        "AWS_MAX_ATTEMPTS": "1",
        "AWS_RETRY_MODE": "standard",
    }
    run(["git", "init", "-q"], root, env)
    dvc(root, env, "init", "-q")
    return root, env


def connect(repo: Path, settings: S3Settings) -> ObjectStore:
    """Create the bucket (DVC does not) and make it the repo's default remote (credentials in config.local)."""
    store = ObjectStore(settings)
    store.ensure_bucket()
    configure_dvc_remote(
        repo, "store", settings.endpoint, settings.credentials, url=f"s3://{settings.bucket}/dvc"
    )
    return store


def test_repro_is_idempotent_and_push_pull_round_trips(
    repo: tuple[Path, dict[str, str]], s3_settings: S3Settings
) -> None:
    root, env = repo
    (root / "params.yaml").write_text(TINY_PARAMS)
    (root / "dvc.yaml").write_text(PIPELINE)
    first = dvc(root, env, "repro")
    assert "Running stage 'synth'" in first.stdout and "Running stage 'ingest'" in first.stdout
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "pipeline"], root, env)
    before = snapshot(root / "data")
    assert any(k.startswith("ingest/manifests/") for k in before) and any(
        k.startswith("ingest/images/") for k in before
    )

    second = dvc(root, env, "repro")
    assert "Running stage" not in second.stdout, second.stdout  # nothing changed, nothing runs
    assert "up to date" in second.stdout.lower()
    assert snapshot(root / "data") == before

    store = connect(root, s3_settings)
    run(["git", "check-ignore", "-q", ".dvc/config.local"], root, env)  # credentials live in an ignored file
    assert s3_settings.credentials.secret_key not in (root / ".dvc" / "config").read_text()  # never committed
    dvc(root, env, "push")
    assert any(True for _ in store.list("dvc/"))

    shutil.rmtree(root / ".dvc" / "cache")
    for output in ("synth", "ingest"):
        shutil.rmtree(root / "data" / output)
    dvc(root, env, "pull")
    assert snapshot(root / "data") == before
    assert "Running stage" not in dvc(root, env, "repro").stdout  # pulled outputs count as up to date


def test_push_fails_clearly_when_the_store_goes_down_and_completes_after_restart(
    repo: tuple[Path, dict[str, str]], s3_settings: S3Settings, seaweed: SeaweedInfo
) -> None:
    root, env = repo
    blobs = root / "data" / "blobs"
    blobs.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(150):
        (blobs / f"{k:04d}.bin").write_bytes(rng.bytes(64 * 1024))
    dvc(root, env, "add", "-q", "data/blobs")
    before = snapshot(blobs)
    store = connect(root, s3_settings)

    push = subprocess.Popen(
        [str(VENV_BIN / "dvc"), "push", "-j", "1"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and push.poll() is None and sum(1 for _ in store.list("dvc/")) < 5:
            time.sleep(0.05)
        assert push.poll() is None, "the push finished before the store could be stopped"
        stop_seaweed(seaweed.run_dir)
        _, stderr = push.communicate(timeout=120)
    finally:
        if push.poll() is None:
            push.kill()
            push.wait()
        start_seaweed(seaweed.run_dir)  # same data dir, ports and credentials
    assert push.returncode != 0
    assert "failed to push data to the cloud" in stderr and "failed to upload" in stderr, stderr[-2000:]

    uploaded = sum(1 for _ in store.list("dvc/"))
    assert 0 < uploaded < 151  # it really stopped midway
    dvc(root, env, "push")
    assert "in sync" in dvc(root, env, "status", "--cloud").stdout
    shutil.rmtree(root / ".dvc" / "cache")
    shutil.rmtree(blobs)
    dvc(root, env, "pull")
    assert snapshot(blobs) == before  # nothing lost, nothing corrupt
