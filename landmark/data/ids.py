"""Image-id validation: an id is never trusted as a path."""

from __future__ import annotations

import re

from landmark.errors import LandmarkError

# GLDv2 ids are 16 hex chars; Oxford/Paris ids look like "all_souls_000013"; IMC ids are digits + underscores.
# One conservative rule covers all of them and keeps ids usable as file names on every OS.
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}$")


class UnsafeIdError(LandmarkError, ValueError):
    """An image id that is empty, too long, or could escape its directory when used as a path."""


def validate_image_id(image_id: object) -> str:
    """Return ``image_id`` unchanged if it is safe to use as a file name, else raise :class:`UnsafeIdError`.

    Safe ids are 1-200 characters of ``[A-Za-z0-9_.-]``, start with a letter or digit and contain no ``..``.
    """
    if not isinstance(image_id, str):
        raise UnsafeIdError(f"image id must be a string, got {type(image_id).__name__}: {image_id!r}")
    if not _SAFE_ID.match(image_id) or ".." in image_id:
        raise UnsafeIdError(
            f"unsafe image id {image_id!r}: ids must be 1-200 characters of [A-Za-z0-9_.-], "
            "start with a letter or digit, and contain no path separators or '..'"
        )
    return image_id


def is_safe_image_id(image_id: object) -> bool:
    """True when :func:`validate_image_id` would accept ``image_id``."""
    try:
        validate_image_id(image_id)
    except UnsafeIdError:
        return False
    return True
