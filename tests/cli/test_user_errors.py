"""A user error is one line and exit 1; anything else is a bug: one line with a hint, exit 2; --debug: traceback."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import numpy as np
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


def write_folder_dataset(root: Path) -> Path:
    """A folder-format dataset: one landmark folder with two small JPEGs."""
    from PIL import Image

    (root / "bridge").mkdir(parents=True)
    for i in range(2):
        pixels = np.random.default_rng(i).integers(0, 256, (40, 60, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "bridge" / f"{i}.jpg")
    return root


def test_unknown_backbone_from_set_is_a_config_error(tmp_path: Path) -> None:
    data = write_folder_dataset(tmp_path / "data")
    result = runner.invoke(
        app,
        ["--set", "model.backbone=no_such_net", "extract", "--data", str(data), "--out", str(tmp_path / "f")],
    )
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "error: ConfigError: unknown backbone 'no_such_net': not a timm model name (see timm.list_models())"
    ]


def test_missing_dataset_folder_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_dir"
    result = runner.invoke(app, ["extract", "--data", str(missing), "--out", str(tmp_path / "f")])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"error: FileNotFoundError: dataset root {missing} is not a directory"
    ]


def test_split_the_dataset_lacks_is_a_not_found_error(tmp_path: Path) -> None:
    data = write_folder_dataset(tmp_path / "data")
    result = runner.invoke(
        app,
        ["index", "--data", str(data), "--features", str(tmp_path / "f"), "--out", str(tmp_path / "i")],
    )
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"error: NotFoundError: dataset at {data} has no split 'index'; it has ['train']"
    ]


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        (["qe", "dqe"], "choose one query expansion: qe (alpha-QE) or dqe, not both"),
        (["qe,dqe"], "unknown re-ranking step(s) ['qe,dqe']; choose from ['none', 'dba', 'qe', 'dqe']"),
    ],
)
def test_bad_rerank_steps_are_input_errors(tmp_path: Path, steps: list[str], message: str) -> None:
    options = [arg for step in steps for arg in ("--rerank", step)]
    result = runner.invoke(
        app,
        ["eval-revisitop", "--root", str(tmp_path), "--dataset", "x", "--out", str(tmp_path / "o"), *options],
    )
    assert result.exit_code == 1
    assert result.output.splitlines() == [f"error: InputError: {message}"]


def test_a_benchmark_that_does_not_exist_is_one_line(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["eval-revisitop", "--root", str(tmp_path), "--dataset", "nope", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"error: FileNotFoundError: no revisitop ground truth at {tmp_path / 'nope' / 'gnd_nope.pkl'}"
    ]
