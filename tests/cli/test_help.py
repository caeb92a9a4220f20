"""Every registered command and sub-app command answers ``--help`` with its own help text (found by walking the app)."""

from __future__ import annotations

import inspect

import pytest
import typer
from typer.testing import CliRunner

from landmark.cli import app

runner = CliRunner()


def walk(group: typer.Typer, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], str]]:
    """(command path, first help line) for every command of ``group`` and of its sub-apps, recursively."""
    found = []
    for command in group.registered_commands:
        assert command.callback is not None
        name = command.name or command.callback.__name__.replace("_", "-")
        doc = command.help or inspect.getdoc(command.callback) or ""
        found.append(((*path, name), doc.splitlines()[0] if doc else ""))
    for sub in group.registered_groups:
        assert sub.typer_instance is not None and sub.name is not None
        found.append(((*path, sub.name), sub.typer_instance.info.help or ""))  # type: ignore[arg-type]
        found.extend(walk(sub.typer_instance, (*path, sub.name)))
    return found


COMMANDS = walk(app)


def test_the_walk_finds_every_command_and_group() -> None:
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"ingest", "train", "train-delf", "eval-revisitop", "infra", "infra up", "registry show"} <= names
    assert len(names) == len(COMMANDS) >= 25


@pytest.mark.parametrize(("path", "summary"), COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_help(path: tuple[str, ...], summary: str) -> None:
    result = runner.invoke(app, [*path, "--help"], terminal_width=10_000)
    assert result.exit_code == 0, result.output
    assert summary, f"{' '.join(path)} has no help text"
    assert f"Usage: landmark {' '.join(path)}" in result.output
    # rich wraps and re-spaces the text: compare words
    assert " ".join(summary.split()[:6]) in " ".join(result.output.split()), result.output
