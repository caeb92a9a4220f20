"""Safe decoding: orientation, mode conversion, and every failure reason on hand-built files."""

from __future__ import annotations

import hashlib
import io
import pickle
import struct
import time
import tracemalloc
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from landmark.data.images import (
    DECODE_REASONS,
    ImageDecodeError,
    crop_to_bbox,
    decode_image,
    file_sha1,
    read_image_size,
)


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height RGB pixels but carries almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


def halves(width: int = 40, height: int = 20) -> np.ndarray:
    """Left half red, right half blue."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 2] = (255, 0, 0)
    pixels[:, width // 2 :] = (0, 0, 255)
    return pixels


def test_rgb_jpeg_decodes_to_contiguous_uint8() -> None:
    out = decode_image(encode(Image.fromarray(halves()), "JPEG", quality=95))
    assert out.shape == (20, 40, 3)
    assert out.dtype == np.uint8
    assert out.flags["C_CONTIGUOUS"]
    assert np.abs(out[10, 5].astype(int) - (255, 0, 0)).max() < 10
    assert np.abs(out[10, 35].astype(int) - (0, 0, 255)).max() < 10


def test_exif_orientation_6_rotates_clockwise() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(Image.fromarray(halves()), "JPEG", quality=95, exif=exif.tobytes())
    out = decode_image(data)
    # Stored 40 wide x 20 high; orientation 6 displays it rotated 90 degrees clockwise: 20 wide x 40 high,
    # with the stored left (red) half on top.
    assert out.shape == (40, 20, 3)
    assert out[5, 10, 0] > 200 and out[5, 10, 2] < 50
    assert out[35, 10, 2] > 200 and out[35, 10, 0] < 50
    assert read_image_size(data) == (20, 40)


def test_grayscale_becomes_three_equal_channels() -> None:
    gray = np.array([[0, 64], [128, 255]], np.uint8)
    out = decode_image(encode(Image.fromarray(gray, "L"), "PNG"))
    assert out.shape == (2, 2, 3)
    for channel in range(3):
        np.testing.assert_array_equal(out[..., channel], gray)


def test_cmyk_converts_to_rgb() -> None:
    cmyk = np.array([[[0, 0, 0, 0], [255, 0, 0, 0], [0, 0, 0, 255]]], np.uint8)
    out = decode_image(encode(Image.fromarray(cmyk, "CMYK"), "TIFF"))
    np.testing.assert_array_equal(out[0], [[255, 255, 255], [0, 255, 255], [0, 0, 0]])
    jpeg = decode_image(
        encode(Image.fromarray(np.repeat(np.repeat(cmyk, 8, 0), 8, 1), "CMYK"), "JPEG", quality=95)
    )
    assert jpeg.shape == (8, 24, 3)
    assert np.abs(jpeg[4, 4].astype(int) - 255).max() < 12


def test_rgba_alpha_is_composited_on_white() -> None:
    rgba = np.array([[[10, 20, 30, 0], [10, 20, 30, 255], [255, 0, 0, 128]]], np.uint8)
    out = decode_image(encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    np.testing.assert_array_equal(out[0, 0], [255, 255, 255])  # fully transparent -> white
    np.testing.assert_array_equal(out[0, 1], [10, 20, 30])  # opaque -> unchanged
    np.testing.assert_array_equal(out[0, 2], [255, 127, 127])  # half red over white


def test_la_and_transparent_palette_are_composited() -> None:
    la = Image.fromarray(np.array([[[0, 0], [0, 255]]], np.uint8), "LA")
    np.testing.assert_array_equal(decode_image(encode(la, "PNG"))[0], [[255, 255, 255], [0, 0, 0]])
    palette = Image.new("P", (2, 1))
    palette.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    palette.putpixel((0, 0), 0)
    palette.putpixel((1, 0), 1)
    out = decode_image(encode(palette, "PNG", transparency=0))
    np.testing.assert_array_equal(out[0], [[255, 255, 255], [200, 100, 50]])


def test_16_bit_png_is_scaled_not_clipped() -> None:
    values = np.array([[0, 257, 32896, 65535]], np.uint16)
    out = decode_image(encode(Image.fromarray(values), "PNG"))
    np.testing.assert_array_equal(out[0, :, 0], [0, 1, 128, 255])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_32_bit_int_and_float_images() -> None:
    ints = Image.fromarray(np.array([[0, 32896, 65535]], np.int32), "I")
    np.testing.assert_array_equal(decode_image(encode(ints, "TIFF"))[0, :, 1], [0, 128, 255])
    floats = Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32), "F")
    np.testing.assert_array_equal(decode_image(encode(floats, "TIFF"))[0, :, 1], [0, 128, 255])


def test_path_and_bytes_give_the_same_pixels(tmp_path: Path) -> None:
    data = encode(Image.fromarray(halves()), "PNG")
    path = tmp_path / "a.png"
    path.write_bytes(data)
    np.testing.assert_array_equal(decode_image(path), decode_image(data))
    np.testing.assert_array_equal(decode_image(str(path)), halves())


def decode_reason(
    source: bytes | str | Path, *, max_pixels: int = 64_000_000, name: str | None = None
) -> ImageDecodeError:
    with pytest.raises(ImageDecodeError) as info:
        decode_image(source, max_pixels=max_pixels, name=name)
    assert info.value.reason in DECODE_REASONS
    return info.value


def test_empty_file_and_bytes(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    error = decode_reason(path)
    assert error.reason == "empty"
    assert "empty.jpg" in str(error)
    assert decode_reason(b"").reason == "empty"


def test_truncated_jpeg() -> None:
    pixels = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    data = encode(Image.fromarray(pixels), "JPEG", quality=90)
    error = decode_reason(data[: len(data) // 2], name="cut.jpg")
    assert error.reason == "truncated"
    assert "cut.jpg" in str(error)
    assert decode_reason(data[:40]).reason == "truncated"  # ends inside the header


def test_random_bytes_and_text_are_not_images() -> None:
    assert decode_reason(np.random.default_rng(1).bytes(2000)).reason == "not_an_image"
    assert decode_reason(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n").reason == "not_an_image"


def test_decompression_bomb_is_refused_from_the_header() -> None:
    bomb = png_claiming(100_000, 100_000)
    tracemalloc.start()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's DecompressionBombWarning must not escape either
        error = decode_reason(bomb)
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert error.reason == "too_large"
    assert elapsed < 1.0
    assert peak < 5_000_000  # bytes; decoding would need 30 GB
    assert read_image_size(bomb) == (100_000, 100_000)
    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # PIL's global is left as it was


def test_max_pixels_is_our_limit_not_pils() -> None:
    big = png_claiming(10_000, 10_000)  # 1e8 pixels: under PIL's hard limit, over our default
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        error = decode_reason(big)
    assert error.reason == "too_large"
    assert "100000000" in error.detail
    small = encode(Image.fromarray(halves()), "PNG")
    assert decode_reason(small, max_pixels=799).reason == "too_large"
    assert decode_image(small, max_pixels=800).shape == (20, 40, 3)
    with pytest.raises(ValueError, match="max_pixels"):
        decode_image(small, max_pixels=0)


def test_missing_file_and_directory_are_unreadable(tmp_path: Path) -> None:
    error = decode_reason(tmp_path / "missing.jpg")
    assert error.reason == "unreadable"
    assert "missing.jpg" in str(error)
    assert decode_reason(tmp_path).reason == "unreadable"
    with pytest.raises(ImageDecodeError) as info:
        read_image_size(tmp_path / "missing.jpg")
    assert info.value.reason == "unreadable"


def test_decode_error_is_a_value_error_with_known_reasons() -> None:
    assert issubclass(ImageDecodeError, ValueError)
    with pytest.raises(ValueError, match="unknown image decode reason"):
        ImageDecodeError("x", "bogus", "detail")


def test_decode_error_pickles_with_its_fields() -> None:
    # process pools and DataLoader workers send errors back pickled; the file name must survive the trip
    error = pickle.loads(pickle.dumps(ImageDecodeError("dir/cut.jpg", "truncated", "EOFError")))
    assert isinstance(error, ImageDecodeError)
    assert (error.name, error.reason, error.detail) == ("dir/cut.jpg", "truncated", "EOFError")
    assert "dir/cut.jpg" in str(error)


def test_read_image_size_without_exif() -> None:
    assert read_image_size(encode(Image.fromarray(halves(30, 12)), "PNG")) == (30, 12)


def test_file_sha1_matches_hashlib(tmp_path: Path) -> None:
    data = np.random.default_rng(2).bytes(3 * 1024 + 5)
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert file_sha1(path, chunk_size=1024) == hashlib.sha1(data).hexdigest()
    assert file_sha1(path) == hashlib.sha1(data).hexdigest()


def test_crop_to_bbox_rounds_and_clips() -> None:
    image = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
    crop = crop_to_bbox(image, (1.4, 2.0, 5.6, 4.0))
    np.testing.assert_array_equal(crop, image[2:4, 1:6])
    assert crop.flags["C_CONTIGUOUS"] and not np.shares_memory(crop, image)
    np.testing.assert_array_equal(crop_to_bbox(image, (-5, -5, 100, 3)), image[0:3, 0:8])
    np.testing.assert_array_equal(crop_to_bbox(image[..., 0], (0, 0, 2, 2)), image[0:2, 0:2, 0])


@pytest.mark.parametrize(
    "bbox",
    [(3.0, 1.0, 3.0, 5.0), (0.0, 4.0, 5.0, 2.0), (10.0, 0.0, 20.0, 5.0), (0.0, float("nan"), 1.0, 1.0)],
)
def test_crop_to_bbox_rejects_empty_boxes(bbox: tuple[float, float, float, float]) -> None:
    with pytest.raises(ValueError, match="bbox"):
        crop_to_bbox(np.zeros((6, 8, 3), np.uint8), bbox)
