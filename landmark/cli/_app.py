"""The Typer app, the global options and the error handling shared by every subcommand."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from landmark.config import Config, ConfigError, load_config

app = typer.Typer(
    name="landmark",
    help="Landmark retrieval MLOps: synthesise, ingest, clean, train, index, evaluate and promote.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)
out = Console()

P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class _State:
    params: Path | None
    overrides: list[str]
    debug: bool

    def config(self) -> Config:
        return load_config(self.params, self.overrides)


state = _State(params=None, overrides=[], debug=False)


@app.callback()
def main(
    params: Annotated[
        Path | None, typer.Option("--params", "-p", help="params file (default: ./params.yaml if present)")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", help="override a param, e.g. --set extract.batch_size=8"),
    ] = None,
    debug: Annotated[bool, typer.Option(help="show tracebacks")] = False,
) -> None:
    """Landmark retrieval MLOps pipeline."""
    if params is None and Path("params.yaml").is_file():
        params = Path("params.yaml")
    state.params, state.overrides, state.debug = params, list(set_ or []), debug


def user_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn expected failures (bad config, bad input data, missing files) into a one-line error, exit 1."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except (ConfigError, ValueError, KeyError, FileNotFoundError, NotADirectoryError) as exc:
            if state.debug:
                raise
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            # one line whatever the terminal width (soft_wrap), and the message is text, not rich markup
            console.print(f"[bold red]error:[/] {type(exc).__name__}: {escape(str(message))}", soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper
