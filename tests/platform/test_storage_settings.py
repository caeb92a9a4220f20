"""Object-store settings, credentials resolution, the SeaweedFS command line and the new config sections."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from landmark.config import ConfigError, StorageConfig, load_config
from landmark.platform.infra import (
    GRPC_OFFSET,
    SeaweedLayout,
    SeaweedPorts,
    generate_credentials,
    s3_identity_config,
    weed_command,
)
from landmark.platform.storage import (
    CREDENTIALS_FILE_NAME,
    ENV_ACCESS_KEY,
    ENV_BUCKET,
    ENV_CREDENTIALS_FILE,
    ENV_ENDPOINT,
    ENV_SECRET_KEY,
    Credentials,
    StorageConfigError,
    parse_endpoint,
    parse_s3_uri,
    resolve_settings,
    write_credentials_file,
)


def test_parse_endpoint_and_uris() -> None:
    assert parse_endpoint("http://127.0.0.1:8333") == ("127.0.0.1:8333", False)
    assert parse_endpoint("https://minio.example.com") == ("minio.example.com", True)
    for bad in ("127.0.0.1:8333", "ftp://h:1", "http://h:1/path"):
        with pytest.raises(StorageConfigError, match="http://host:port"):
            parse_endpoint(bad)
    assert parse_s3_uri("s3://bucket/a/b.jpg") == ("bucket", "a/b.jpg")
    assert parse_s3_uri("s3://bucket") == ("bucket", "")
    with pytest.raises(ValueError, match=r"'\.\.'"):
        parse_s3_uri("s3://bucket/a/../b")


def test_credentials_come_from_env_then_file(tmp_path: Path) -> None:
    cfg = StorageConfig(run_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="landmark infra up"):
        resolve_settings(cfg, env={})
    path = write_credentials_file(tmp_path / CREDENTIALS_FILE_NAME, Credentials("AK", "SK"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    settings = resolve_settings(cfg, env={})
    assert settings.credentials == Credentials("AK", "SK") and settings.endpoint == cfg.endpoint
    assert "SK" not in repr(settings)  # the secret never shows in logs
    env = {
        ENV_ACCESS_KEY: "AK2",
        ENV_SECRET_KEY: "SK2",
        ENV_ENDPOINT: "http://127.0.0.1:9000",
        ENV_BUCKET: "other",
    }
    settings = resolve_settings(cfg, env=env)
    assert (settings.credentials.access_key, settings.host, settings.bucket) == (
        "AK2",
        "127.0.0.1:9000",
        "other",
    )
    with pytest.raises(StorageConfigError, match="both"):
        resolve_settings(cfg, env={ENV_ACCESS_KEY: "AK2"})
    elsewhere = write_credentials_file(tmp_path / "other.json", Credentials("AK3", "SK3"))
    assert resolve_settings(cfg, env={ENV_CREDENTIALS_FILE: str(elsewhere)}).credentials.access_key == "AK3"


def test_weed_command_binds_loopback_and_sets_every_port(tmp_path: Path) -> None:
    ports = SeaweedPorts(*(10000 + k for k in range(10)))
    command = weed_command(Path("/bin/weed"), SeaweedLayout(tmp_path), ports)
    assert "-ip=127.0.0.1" in command and "-ip.bind=127.0.0.1" in command
    assert "-admin.ui=false" in command and "-webdav=false" in command
    for port in (10000 + k for k in range(10)):
        assert any(arg.endswith(f"={port}") for arg in command)
    assert f"-s3.config={tmp_path / 's3.json'}" in command


def test_generated_credentials_and_identity() -> None:
    first, second = generate_credentials(), generate_credentials()
    assert first != second and len(first.access_key) == 20 and len(first.secret_key) >= 40
    identity = s3_identity_config(first)["identities"][0]  # type: ignore[index]
    assert identity["credentials"][0]["accessKey"] == first.access_key
    assert GRPC_OFFSET == 10000


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("storage:\n  endpoint: 127.0.0.1:8333\n", "endpoint must look like"),
        ("storage:\n  bucket: A_B\n", "not a valid S3 name"),
        ("storage:\n  images_prefix: ../x\n", "images_prefix"),
        ("storage:\n  access_key: x\n", "unknown key 'storage.access_key'"),
        ("ingest:\n  store: ftp\n", "store must be one of"),
        ("ingest:\n  workers: 0\n", "workers must be >= 1"),
        ("ingest:\n  content_types: [jpeg]\n", "MIME types"),
        ("validate:\n  max_quarantined_share: 2\n", "max_quarantined_share must be in [0, 1]"),
        ("validate:\n  min_side: 100\n  max_side: 10\n", "min_side <= max_side"),
    ],
)
def test_new_sections_reject_bad_values(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert fragment in str(info.value)
