"""A user error is one line and exit 1; anything else is a bug: one line with a hint, exit 2; --debug: traceback."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import pytest
from typer.testing import CliRunner

import landmark.stages.index
from landmark.cli import app
from landmark.errors import ConfigError, InputError, LandmarkError, NotFoundError

runner = CliRunner()


def _raise(exc: Exception) -> NoReturn:
    raise exc


def index_raising(monkeypatch: pytest.MonkeyPatch, exc: Exception) -> None:
    """Make the ``index`` command's stage raise ``exc``."""
    monkeypatch.setattr(landmark.stages.index, "build_index", lambda *a, **k: _raise(exc))


def invoke_index(tmp_path: Path, *options: str) -> tuple[int, str]:
    result = runner.invoke(
        app, [*options, "index", "--features", str(tmp_path), "--out", str(tmp_path / "i")]
    )
    return result.exit_code, result.output


@pytest.mark.parametrize(
    "exc",
    [
        InputError("split 'index' has no usable images"),
        NotFoundError("no usable image 'x'"),
        FileNotFoundError("no such file: a.parquet"),
    ],
)
def test_user_error_is_one_line_exit_1(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, exc: Exception
) -> None:
    index_raising(monkeypatch, exc)
    code, output = invoke_index(tmp_path)
    assert code == 1
    assert output.splitlines() == [f"error: {type(exc).__name__}: {exc.args[0]}"]


def test_bad_params_are_a_config_error(tmp_path: Path) -> None:
    code, output = invoke_index(tmp_path, "--set", "index.no_such_key=1")
    assert code == 1 and output.startswith("error: ConfigError:") and "index.no_such_key" in output
    assert len(output.splitlines()) == 1


def test_internal_error_is_a_bug_with_a_hint_exit_2(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    index_raising(monkeypatch, TypeError("unsupported operand"))
    code, output = invoke_index(tmp_path)
    assert code == 2
    assert output.splitlines() == [
        "internal error: TypeError: unsupported operand",
        "this is a bug; run again with `landmark --debug ...` for the traceback and report it",
    ]


@pytest.mark.parametrize("exc", [TypeError("unsupported operand"), InputError("bad value")])
def test_debug_shows_the_traceback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, exc: Exception) -> None:
    index_raising(monkeypatch, exc)
    result = runner.invoke(
        app, ["--debug", "index", "--features", str(tmp_path), "--out", str(tmp_path / "i")]
    )
    assert result.exception is exc  # re-raised: the runner (and python) show its traceback
    assert "internal error" not in result.output and "error:" not in result.output


def test_domain_errors_are_landmark_errors_and_keep_their_builtin_base() -> None:
    from landmark.data.manifest import ManifestError
    from landmark.ops.registry import RegistryError
    from landmark.platform.infra import InfraError
    from landmark.platform.storage import ObjectNotFoundError, StorageError

    for cls, base in [
        (ConfigError, ValueError),
        (InputError, ValueError),
        (NotFoundError, KeyError),
        (ManifestError, ValueError),
        (RegistryError, ValueError),
        (StorageError, RuntimeError),
        (ObjectNotFoundError, KeyError),
        (InfraError, RuntimeError),
    ]:
        assert issubclass(cls, LandmarkError) and issubclass(cls, base), cls
    assert str(NotFoundError("no version 'v3'")) == "no version 'v3'"  # not quoted as KeyError would
