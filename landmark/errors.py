"""The errors a user can fix: bad config, bad input data or arguments, something named that does not exist.

Every error the library raises on purpose for such a mistake is a :class:`LandmarkError`; the command line prints
it as one line and exits 1. Any other exception is a bug (exit 2, with a hint to rerun with ``--debug``).
Subclasses keep a builtin base (``ValueError``, ``KeyError``, ``RuntimeError``) so callers that catch the
builtin still do.
"""

from __future__ import annotations


class LandmarkError(Exception):
    """A failure the user can fix (the message says what and where), as opposed to a bug."""


class ConfigError(LandmarkError, ValueError):
    """A params file or override that cannot be turned into a valid :class:`landmark.config.Config`."""


class InputError(LandmarkError, ValueError):
    """Bad input data or arguments: the message names the offending value."""


class NotFoundError(LandmarkError, KeyError):
    """Something named (a version, a key, an id) that does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""
