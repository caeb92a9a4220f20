"""The ``landmark`` command line: one subcommand per pipeline stage.

Global options (before the subcommand): ``--params FILE`` and repeated ``--set section.key=value``.
Errors the user can fix (:class:`landmark.errors.LandmarkError`, missing files) are printed as one readable line
and exit with status 1; any other exception is a bug: one line with a hint, status 2. Pass ``--debug`` to see the
traceback. Commands live in one module named after the command or command group and register on the shared app.
"""

# command modules, one per command or command group, in pipeline order (``landmark --help`` lists them so)
from landmark.cli import (  # noqa: F401, I001  (registers)
    data,
    ingest,
    local,
    clean,
    train,
    retrieval,
    drift,
    registry,
    serving,
    infra,
)
from landmark.cli._app import app

__all__ = ["app"]
