"""Safe image decoding: size checked before decode, EXIF orientation applied, every mode turned into RGB.

Every failure is an :class:`ImageDecodeError` carrying a short ``reason`` code, so callers can quarantine a
file with the reason instead of crashing on it.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from landmark.errors import InputError, LandmarkError

logger = logging.getLogger(__name__)

DECODE_REASONS = ("empty", "truncated", "not_an_image", "too_large", "corrupt", "unreadable")
DEFAULT_MAX_PIXELS = 64_000_000

# EXIF orientations 5-8 rotate by 90 or 270 degrees and so swap width and height.
_EXIF_ORIENTATION_TAG = 0x0112
_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})

# Raster formats we decode. Everything else (EPS, which runs Ghostscript; fonts; exotic containers) is refused
# as "not_an_image" before any plugin-specific decoding happens.
ALLOWED_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF", "PPM")

# Guards the rare temporary lift of PIL's own decompression-bomb limit (see _open_header).
_PIL_LIMIT_LOCK = threading.Lock()

ImageSource = bytes | str | Path


class ImageDecodeError(LandmarkError, ValueError):
    """An image that cannot be decoded safely.

    Attributes:
        name: the file (or the caller-given name for bytes).
        reason: one of :data:`DECODE_REASONS`.
        detail: what went wrong, in words.
    """

    def __init__(self, name: str, reason: str, detail: str) -> None:
        if reason not in DECODE_REASONS:
            raise ValueError(f"unknown image decode reason {reason!r}; expected one of {DECODE_REASONS}")
        self.name = name
        self.reason = reason
        self.detail = detail
        super().__init__(f"cannot decode image {name!r} ({reason}): {detail}")

    def __reduce__(self) -> tuple[type[ImageDecodeError], tuple[str, str, str]]:
        # the default pickling passes only the message to __init__, so an error raised in a worker process
        # (process pool, DataLoader) could not be rebuilt in the parent and lost the file's name
        return type(self), (self.name, self.reason, self.detail)


def _source_name(source: ImageSource, name: str | None) -> str:
    if name is not None:
        return name
    if isinstance(source, bytes):
        return "<bytes>"
    return str(source)


@contextmanager
def _open_source(source: ImageSource, name: str) -> Iterator[IO[bytes]]:
    """Yield a binary stream over ``source``; missing/unreadable files and empty data raise early."""
    if isinstance(source, bytes):
        if not source:
            raise ImageDecodeError(name, "empty", "0 bytes")
        yield io.BytesIO(source)
        return
    try:
        stream = open(source, "rb")  # noqa: SIM115 - closed below, after the caller is done with it
    except OSError as exc:
        raise ImageDecodeError(name, "unreadable", f"{type(exc).__name__}: {exc.strerror or exc}") from exc
    with stream:
        try:
            size = Path(source).stat().st_size
        except OSError as exc:
            raise ImageDecodeError(
                name, "unreadable", f"{type(exc).__name__}: {exc.strerror or exc}"
            ) from exc
        if size == 0:
            raise ImageDecodeError(name, "empty", "0 bytes")
        yield stream


def _open_formats() -> tuple[str, ...]:
    """The allowed formats that this PIL build can open (registers PIL's lazily loaded plugins once)."""
    Image.init()
    return tuple(f for f in ALLOWED_FORMATS if f in Image.OPEN)


def _pil_hard_limit() -> float:
    """Pixel count above which ``Image.open`` raises DecompressionBombError (infinite when disabled)."""
    limit = Image.MAX_IMAGE_PIXELS
    return math.inf if limit is None else 2 * limit


def _header_error(name: str, exc: Exception) -> ImageDecodeError:
    """A file that ends inside its header is "truncated"; any other unreadable header is "corrupt"."""
    truncated = isinstance(exc, EOFError) or "truncated" in str(exc).lower()
    return ImageDecodeError(
        name, "truncated" if truncated else "corrupt", f"header: {type(exc).__name__}: {exc}"
    )


def _open_header(stream: IO[bytes], name: str, max_pixels: int | None) -> Image.Image:
    """Open ``stream`` with PIL, reading the header only.

    PIL checks sizes against its global ``Image.MAX_IMAGE_PIXELS``; we check against ``max_pixels`` ourselves,
    so PIL's warning is silenced here and its error is mapped to "too_large". Only when the caller explicitly
    allows more pixels than PIL does (or asks for the header alone, ``max_pixels=None``) is PIL's limit
    lifted, for this one call, under a lock, and restored afterwards.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(stream, formats=_open_formats())
    except Image.DecompressionBombError as exc:
        if max_pixels is not None and max_pixels <= _pil_hard_limit():
            raise ImageDecodeError(name, "too_large", f"{exc} (max_pixels={max_pixels})") from exc
        logger.debug("re-opening %s with PIL's decompression-bomb limit lifted for this call", name)
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(
            name, "not_an_image", f"not a recognised image (accepted formats: {', '.join(ALLOWED_FORMATS)})"
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise _header_error(name, exc) from exc

    stream.seek(0)
    with _PIL_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            return Image.open(stream, formats=_open_formats())
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise _header_error(name, exc) from exc
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _exif_orientation(img: Image.Image, name: str) -> int:
    """EXIF orientation (1-8) from the header; 1 when absent or unreadable."""
    if img.format == "PNG" and "exif" not in img.info:
        # PIL would decode the whole PNG looking for an eXIf chunk after the pixel data; a header-only read
        # must not do that (it defeats the decompression-bomb check), so such late chunks are not looked at.
        return 1
    try:
        value = img.getexif().get(_EXIF_ORIENTATION_TAG, 1)
    except (OSError, SyntaxError, ValueError, TypeError, KeyError) as exc:
        logger.warning("ignoring unreadable EXIF data in %s: %s: %s", name, type(exc).__name__, exc)
        return 1
    return value if isinstance(value, int) else 1


def _oriented_size(img: Image.Image, name: str) -> tuple[int, int]:
    width, height = img.size
    if _exif_orientation(img, name) in _SWAPPING_ORIENTATIONS:
        return height, width
    return width, height


def _check_pixels(size: tuple[int, int], max_pixels: int, name: str) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageDecodeError(name, "corrupt", f"header gives an empty size {width}x{height}")
    if width * height > max_pixels:
        raise ImageDecodeError(
            name, "too_large", f"{width}x{height} = {width * height} pixels exceeds max_pixels={max_pixels}"
        )


def _load_pixels(img: Image.Image, name: str) -> None:
    """Decode all pixel data now, so truncated and corrupt files fail here rather than later."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.load()
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(name, "too_large", str(exc)) from exc
    except (EOFError, OSError) as exc:
        message = str(exc)
        if isinstance(exc, EOFError) or "truncated" in message.lower():
            raise ImageDecodeError(name, "truncated", f"{type(exc).__name__}: {message}") from exc
        raise ImageDecodeError(name, "corrupt", f"{type(exc).__name__}: {message}") from exc
    except (SyntaxError, ValueError) as exc:
        raise ImageDecodeError(name, "corrupt", f"{type(exc).__name__}: {exc}") from exc


def _apply_exif_orientation(img: Image.Image, name: str) -> Image.Image:
    try:
        oriented = ImageOps.exif_transpose(img)
    except (OSError, SyntaxError, ValueError, TypeError, KeyError) as exc:
        logger.warning("ignoring unreadable EXIF orientation in %s: %s: %s", name, type(exc).__name__, exc)
        return img
    return img if oriented is None else oriented


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """(H, W, 4) uint8 RGBA -> (H, W, 3) uint8 RGB with the alpha channel composited over white."""
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32)
    out = rgb * alpha + 255.0 * (1.0 - alpha)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _scale_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """Map a single-channel integer or float image to uint8 without clipping its range.

    16-bit data (``I;16*``, or ``I`` holding values in 0..65535) is divided by 257 so 65535 -> 255 and
    32896 -> 128. Floats in [0, 1] are multiplied by 255; other ranges are stretched linearly to 0..255.
    """
    data = values.astype(np.float64)
    if data.size == 0:
        return np.zeros(values.shape, dtype=np.uint8)
    lo, hi = float(np.nanmin(data)), float(np.nanmax(data))
    if mode.startswith("I") and lo >= 0 and hi <= 65535:
        scaled = data / 257.0
    elif mode == "F" and lo >= 0 and hi <= 1:
        scaled = data * 255.0
    elif lo >= 0 and hi <= 255:
        scaled = data
    elif hi > lo:
        scaled = (data - lo) * (255.0 / (hi - lo))
    else:
        scaled = np.zeros_like(data)
    return np.clip(np.rint(np.nan_to_num(scaled)), 0, 255).astype(np.uint8)


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    """Any PIL mode -> (H, W, 3) uint8 RGB, C-contiguous."""
    mode = img.mode
    if mode == "RGB":
        array = np.asarray(img, dtype=np.uint8)
    elif mode.startswith("I") or mode == "F":
        gray = _scale_to_uint8(np.asarray(img), mode)
        array = np.repeat(gray[..., None], 3, axis=2)
    elif mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info):
        array = _composite_on_white(np.asarray(img.convert("RGBA"), dtype=np.uint8))
    else:
        # L, 1, P, CMYK, YCbCr, LAB, HSV, RGBX: PIL's own conversions are exact enough.
        array = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(array)


def decode_image(
    source: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS, name: str | None = None
) -> np.ndarray:
    """Decode an image file or bytes into RGB pixels, safely.

    The header size is checked against ``max_pixels`` before any pixel is decoded, then the whole image is
    decoded (so truncated files fail), EXIF orientation is applied, and the mode is converted to RGB: alpha is
    composited over white, 16-bit data is scaled (not clipped) to 8 bits, CMYK/palette/gray are converted.

    Args:
        source: encoded bytes or a file path.
        max_pixels: largest accepted width * height (before orientation).
        name: name used in error messages; defaults to the path, or "<bytes>".

    Returns:
        (H, W, 3) uint8 RGB array, C-contiguous, H and W after EXIF orientation.

    Raises:
        ImageDecodeError: with ``reason`` "empty", "truncated", "not_an_image", "too_large", "corrupt" or
            "unreadable" (missing file, permission denied, a directory).
        ValueError: ``max_pixels`` < 1.

    Note:
        Truncated files are detected only while PIL's global ``ImageFile.LOAD_TRUNCATED_IMAGES`` is False (its
        default); this function never changes it.
    """
    if max_pixels < 1:
        raise InputError(f"max_pixels must be >= 1, got {max_pixels}")
    label = _source_name(source, name)
    with _open_source(source, label) as stream, _open_header(stream, label, max_pixels) as img:
        _check_pixels(img.size, max_pixels, label)
        _load_pixels(img, label)
        oriented = _apply_exif_orientation(img, label)
        try:
            return _to_rgb_array(oriented)
        except (OSError, ValueError) as exc:
            raise ImageDecodeError(
                label, "corrupt", f"mode {img.mode!r}: {type(exc).__name__}: {exc}"
            ) from exc


def read_image_size(source: ImageSource, *, name: str | None = None) -> tuple[int, int]:
    """Width and height of an image after EXIF orientation, reading only its header.

    Works for images of any size (no pixel is decoded, so no decompression-bomb limit applies).

    Returns:
        (width, height) in pixels.

    Raises:
        ImageDecodeError: as :func:`decode_image`, except that "truncated" and "too_large" do not occur.
    """
    label = _source_name(source, name)
    with _open_source(source, label) as stream, _open_header(stream, label, None) as img:
        return _oriented_size(img, label)


def file_sha1(path: str | Path, *, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-1 of a file's bytes, read in chunks of ``chunk_size`` bytes (constant memory)."""
    if chunk_size < 1:
        raise InputError(f"chunk_size must be >= 1, got {chunk_size}")
    digest = hashlib.sha1(usedforsecurity=False)
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def crop_to_bbox(image: np.ndarray, bbox: tuple[float, float, float, float]) -> np.ndarray:
    """Crop an image to a box given in pixels, clipped to the image.

    Coordinates are rounded to the nearest pixel like ``PIL.Image.crop`` (the revisited Oxford/Paris query
    protocol crops with PIL), and x1/y1 are exclusive.

    Args:
        image: (H, W) or (H, W, C) array.
        bbox: (x0, y0, x1, y1) in pixels.

    Returns:
        (h, w) or (h, w, C) C-contiguous copy of the box's pixels.

    Raises:
        ValueError: a box that is not 4 finite numbers, or that is empty once clipped to the image.
    """
    if image.ndim not in (2, 3):
        raise InputError(f"image must be (H, W) or (H, W, C), got shape {image.shape}")
    if len(bbox) != 4 or not all(math.isfinite(float(v)) for v in bbox):
        raise InputError(f"bbox must be 4 finite numbers (x0, y0, x1, y1), got {bbox!r}")
    height, width = image.shape[:2]
    x0, y0, x1, y1 = bbox_pixels(bbox, width, height)
    return np.array(image[y0:y1, x0:x1], order="C", copy=True)


def bbox_pixels(
    bbox: tuple[float, float, float, float], width: int, height: int
) -> tuple[int, int, int, int]:
    """Integer pixel box (x0, y0, x1, y1) that :func:`crop_to_bbox` cuts from a ``width`` x ``height`` image.

    Raises:
        ValueError: the box is empty once clipped to the image.
    """
    x0, y0, x1, y1 = (round(float(v)) for v in bbox)
    x0, x1 = max(0, x0), min(width, x1)
    y0, y1 = max(0, y0), min(height, y1)
    if x1 <= x0 or y1 <= y0:
        raise InputError(f"bbox {bbox!r} is empty once clipped to the {width}x{height} image")
    return x0, y0, x1, y1
