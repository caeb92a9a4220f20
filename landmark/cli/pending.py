"""Stages whose issues have not landed yet: listed so `--help` shows the whole pipeline; they exit 2.

When a stage lands, remove it here and register the real command in its concern's module.
"""

from __future__ import annotations

from landmark.cli._app import app, not_built

PENDING: dict[str, tuple[str, int]] = {}


def _register(name: str, summary: str, issue: int) -> None:
    def command() -> None:
        not_built(name, issue)

    command.__doc__ = f"{summary} [not built yet]"
    app.command(name=name)(command)


for _name, (_summary, _issue) in PENDING.items():
    _register(_name, _summary, _issue)
