"""The Typer app, the global options and the error handling shared by every subcommand."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ParamSpec, TypeVar

import click
import typer
from rich.console import Console
from rich.markup import escape

from landmark.config import Config, load_config
from landmark.errors import LandmarkError

if TYPE_CHECKING:
    from landmark.data.bad_images import BadImage

app = typer.Typer(
    name="landmark",
    help="Landmark retrieval MLOps: synthesise, ingest, clean, train, index, evaluate and promote.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)
out = Console()

# the --format option of every command that reads a dataset
FORMAT_HELP = "auto, catalog, gldv2, revisitop, folder or imc"

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


def report_left_out(bad: Sequence[BadImage], model_dir: Path) -> None:
    """One line naming the undecodable images a training left out and where they are listed (none: nothing)."""
    from landmark.data.bad_images import QUARANTINE_FILE, reason_counts  # pandas: not at `landmark --help`

    if bad:
        out.print(
            f"left out {len(bad)} undecodable images {reason_counts(bad)}, listed in {model_dir / QUARANTINE_FILE}",
            markup=False, soft_wrap=True,
        )  # fmt: skip


# failures the user can fix: printed as one line, exit 1
USER_ERRORS = (LandmarkError, FileNotFoundError, NotADirectoryError, PermissionError)
# click's own control flow (typer.Exit, Abort, usage errors): passed through untouched
_CLICK_FLOW = (typer.Exit, typer.Abort, click.exceptions.Exit, click.exceptions.Abort, click.ClickException)


def user_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Report a user error (:data:`USER_ERRORS`) as one line, exit 1; any other exception as a bug, exit 2.

    With ``--debug`` both re-raise, so the traceback shows.
    """

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except _CLICK_FLOW:
            raise
        except USER_ERRORS as exc:
            if state.debug:
                raise
            # one line whatever the terminal width (soft_wrap), and the message is text, not rich markup
            console.print(f"[bold red]error:[/] {type(exc).__name__}: {escape(str(exc))}", soft_wrap=True)
            raise typer.Exit(1) from None
        except Exception as exc:
            if state.debug:
                raise
            console.print(
                f"[bold red]internal error:[/] {type(exc).__name__}: {escape(str(exc))}\n"
                "this is a bug; run again with `landmark --debug ...` for the traceback and report it",
                soft_wrap=True,
            )
            raise typer.Exit(2) from None

    return wrapper
