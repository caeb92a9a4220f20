"""The ``landmark`` command line: one subcommand per pipeline stage.

Global options (before the subcommand): ``--params FILE`` and repeated ``--set section.key=value``.
Errors the user can fix (:class:`landmark.errors.LandmarkError`, missing files) are printed as one readable line
and exit with status 1; any other exception is a bug: one line with a hint, status 2. Pass ``--debug`` to see the
traceback. Commands live in one module per concern and register on the shared app.
"""

from landmark.cli import (  # noqa: F401  (registers)
    clean,
    data,
    local,
    monitoring,
    platform,
    registry,
    retrieval,
    serving,
)
from landmark.cli._app import app

__all__ = ["app"]
