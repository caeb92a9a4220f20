"""Procedural facets: planar facades and interior scenes that stand in for one view of a landmark.

A facet is a square RGB image (``uint8``, shape ``(size, size, 3)``) drawn from one of several architectural
*families* (a classical facade, a temple front, a gothic front, a glass tower, an interior, a row of shops, a clock
tower, a mural). Every family places many one-off details (per-brick colour, window variants, signs with random
glyphs, paintings, ornaments, weathering noise) so that local features are distinctive and match across views,
while two facets of the same family still differ in layout, not only in colour. Materials come from one shared
palette, so colour alone does not identify a landmark.

All functions are pure apart from drawing into the array they are given; every random choice comes from the
``np.random.Generator`` passed in.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np

from landmark.errors import InputError

Colour = tuple[int, int, int]

FAMILIES: tuple[str, ...] = (
    "classical",
    "temple",
    "gothic",
    "modern",
    "interior",
    "shopfront",
    "tower",
    "mural",
)

# Shared building materials (RGB in [0, 1]); landmarks share them, so structure, not palette, tells them apart.
MATERIALS: tuple[tuple[float, float, float], ...] = (
    (0.82, 0.76, 0.62),  # sandstone
    (0.66, 0.35, 0.27),  # brick
    (0.62, 0.62, 0.60),  # concrete
    (0.88, 0.87, 0.83),  # marble
    (0.55, 0.50, 0.42),  # weathered stone
    (0.78, 0.70, 0.55),  # limestone
    (0.45, 0.48, 0.52),  # slate
    (0.86, 0.80, 0.68),  # cream stucco
    (0.74, 0.56, 0.43),  # terracotta
    (0.62, 0.67, 0.72),  # blue-grey render
)

# Accent colours for signs, shutters, awnings, stained glass and paint.
ACCENTS: tuple[tuple[float, float, float], ...] = (
    (0.70, 0.12, 0.12),
    (0.12, 0.35, 0.18),
    (0.10, 0.20, 0.50),
    (0.85, 0.65, 0.10),
    (0.95, 0.95, 0.92),
    (0.08, 0.08, 0.08),
    (0.45, 0.20, 0.45),
    (0.15, 0.55, 0.60),
    (0.90, 0.45, 0.10),
    (0.50, 0.32, 0.18),
)

_GLYPHS = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
_FONTS = (
    cv2.FONT_HERSHEY_SIMPLEX,
    cv2.FONT_HERSHEY_DUPLEX,
    cv2.FONT_HERSHEY_COMPLEX,
    cv2.FONT_HERSHEY_TRIPLEX,
    cv2.FONT_HERSHEY_SCRIPT_SIMPLEX,
    cv2.FONT_HERSHEY_PLAIN,
)


# ---------------------------------------------------------------------------------------------------------------
# Small helpers


def rgb(colour: np.ndarray | tuple[float, ...]) -> Colour:
    """An RGB triple in [0, 1] as the 0-255 integer tuple OpenCV drawing calls take."""
    r, g, b = (min(255, max(0, round(float(v) * 255.0))) for v in colour[:3])
    return (r, g, b)


def jitter(
    rng: np.random.Generator,
    colour: tuple[float, ...] | np.ndarray,
    amount: float,
    chroma: float | None = None,
) -> np.ndarray:
    """``colour`` (3,) times a shared brightness factor (log-std ``amount``) and per-channel factors (log-std
    ``chroma``, default ``amount``), clipped to [0, 1]."""
    c = np.asarray(colour, dtype=np.float64)
    hue = amount if chroma is None else chroma
    c = c * np.exp(rng.normal(0.0, hue, 3)) * math.exp(rng.normal(0.0, amount))
    return np.clip(c, 0.0, 1.0)


def pick(rng: np.random.Generator, options: tuple[tuple[float, float, float], ...]) -> np.ndarray:
    """One colour (3,) drawn uniformly from ``options``."""
    return np.asarray(options[int(rng.integers(len(options)))], dtype=np.float64)


def value_noise(
    rng: np.random.Generator, height: int, width: int, cells: int = 4, octaves: int = 4
) -> np.ndarray:
    """Multi-scale value noise, shape ``(height, width)`` float32, roughly zero mean and unit scale.

    Octave ``k`` adds a ``(cells * 2**k + 1)``-square grid of Gaussian values with amplitude ``0.5**k`` to the
    coarser octaves upsampled bicubically; only the final sum is resized to full resolution (cheap at any size).
    """
    n = cells
    acc = rng.standard_normal((n + 1, n + 1), dtype=np.float32)
    total, amp = 1.0, 1.0
    for _ in range(1, octaves):
        n *= 2
        amp *= 0.5
        acc = np.asarray(cv2.resize(acc, (n + 1, n + 1), interpolation=cv2.INTER_CUBIC), np.float32)
        acc += amp * rng.standard_normal((n + 1, n + 1), dtype=np.float32)
        total += amp
    return cv2.resize(acc, (width, height), interpolation=cv2.INTER_CUBIC) / np.float32(total)


def _thick(size: int, factor: float = 1.0) -> int:
    return max(1, round(size / 256 * factor))


def _fill_rect(img: np.ndarray, x0: int, y0: int, x1: int, y1: int, colour: Colour) -> None:
    cv2.rectangle(img, (x0, y0), (x1, y1), colour, -1)


def _vertical_gradient(
    img: np.ndarray, x0: int, y0: int, x1: int, y1: int, top: np.ndarray, bottom: np.ndarray
) -> None:
    """Fill ``img[y0:y1, x0:x1]`` with a linear gradient from ``top`` to ``bottom`` (RGB in [0, 1])."""
    h, w = img.shape[:2]
    x0, x1, y0, y1 = max(0, x0), min(w, x1), max(0, y0), min(h, y1)
    if x1 <= x0 or y1 <= y0:
        return
    t = np.linspace(0.0, 1.0, y1 - y0, dtype=np.float32)[:, None, None]
    grad = (1 - t) * top.astype(np.float32) + t * bottom.astype(np.float32)
    img[y0:y1, x0:x1] = np.clip(grad * 255.0, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------------------
# Surfaces


def wall(rng: np.random.Generator, size: int, colour: np.ndarray, roughness: float = 0.10) -> np.ndarray:
    """A plastered/stone wall: ``colour`` modulated by multi-scale noise and low-frequency stains, (size, size, 3)."""
    fine = value_noise(rng, size, size, cells=8, octaves=4)
    stains = value_noise(rng, size, size, cells=2, octaves=2)
    shade = 1.0 + roughness * fine - 0.08 * np.clip(stains, 0, None)
    tint = 1.0 + 0.02 * value_noise(rng, size, size, cells=3, octaves=1)
    img = colour.astype(np.float32)[None, None, :] * shade[..., None]
    img[..., 0] *= tint
    img[..., 2] /= tint
    return np.clip(img * 255.0, 0, 255).astype(np.uint8)


def bricks(
    img: np.ndarray,
    rng: np.random.Generator,
    box: tuple[int, int, int, int],
    brick_h: int,
    colour: np.ndarray,
) -> None:
    """Running-bond masonry in ``box`` = (x0, y0, x1, y1): each brick/block gets its own shade and mortar lines."""
    x0, y0, x1, y1 = box
    brick_w = brick_h * int(rng.integers(2, 4))
    mortar = rgb(jitter(rng, colour * 0.75 + 0.2, 0.05))
    _fill_rect(img, x0, y0, x1, y1, mortar)
    gap = max(1, brick_h // 8)
    for row, y in enumerate(range(y0, y1, brick_h)):
        offset = -(brick_w // 2) * (row % 2)
        for x in range(x0 + offset, x1, brick_w):
            c = rgb(jitter(rng, colour, 0.12, chroma=0.025))
            cv2.rectangle(
                img,
                (max(x, x0) + gap, y + gap),
                (min(x + brick_w, x1) - gap, min(y + brick_h, y1) - gap),
                c,
                -1,
            )


def tiles_floor(img: np.ndarray, rng: np.random.Generator, y0: int, y1: int) -> None:
    """A chequered floor in perspective between rows ``y0`` and ``y1`` converging towards a random vanishing x."""
    w = img.shape[1]
    a, b = jitter(rng, pick(rng, MATERIALS), 0.1), jitter(rng, pick(rng, ACCENTS), 0.1) * 0.7
    vx = w * rng.uniform(0.3, 0.7)
    rows = int(rng.integers(5, 9))
    cols = int(rng.integers(8, 14))
    # Row boundaries get denser towards the horizon (y0), like a real floor.
    ts = np.linspace(0.0, 1.0, rows + 1) ** 1.8
    ys = y0 + (y1 - y0) * ts
    for i in range(rows):
        for j in range(cols):
            pts = []
            for yy in (ys[i], ys[i + 1]):
                depth = (yy - y0) / max(1.0, y1 - y0)
                spread = 0.35 + 1.4 * depth
                xl = vx + (j / cols - 0.5) * w * spread * 1.3
                xr = vx + ((j + 1) / cols - 0.5) * w * spread * 1.3
                pts.append((xl, yy))
                pts.append((xr, yy))
            poly = np.array([pts[0], pts[1], pts[3], pts[2]], np.int32)
            base = a if (i + j) % 2 == 0 else b
            cv2.fillConvexPoly(img, poly, rgb(jitter(rng, base, 0.06)), cv2.LINE_AA)


# ---------------------------------------------------------------------------------------------------------------
# Elements


def arch_polygon(
    x0: float, x1: float, y_spring: float, y_bottom: float, pointed: bool, n: int = 12
) -> np.ndarray:
    """Outline of an arched opening: a rectangle from ``y_bottom`` up to ``y_spring`` topped by a round or pointed
    arch. Returns int32 points (N, 2) in (x, y)."""
    w = x1 - x0
    pts: list[tuple[float, float]] = [(x0, y_bottom), (x0, y_spring)]
    if pointed:
        r = w
        for a in np.linspace(0.0, math.pi / 3, n):
            pts.append((x1 - r * math.cos(a), y_spring - r * math.sin(a)))
        for a in np.linspace(math.pi / 3, 0.0, n):
            pts.append((x0 + r * math.cos(a), y_spring - r * math.sin(a)))
    else:
        r = w / 2
        cx = x0 + r
        for a in np.linspace(math.pi, 0.0, 2 * n):
            pts.append((cx + r * math.cos(a), y_spring - r * math.sin(a)))
    pts += [(x1, y_spring), (x1, y_bottom)]
    return np.round(np.array(pts)).astype(np.int32)


def glyph_text(
    img: np.ndarray, rng: np.random.Generator, box: tuple[int, int, int, int], colour: Colour
) -> None:
    """Random letters/digits fitted inside ``box`` = (x0, y0, x1, y1) with a random Hershey font."""
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    if bw < 8 or bh < 6:
        return
    n = int(rng.integers(3, 11))
    text = "".join(_GLYPHS[int(i)] for i in rng.integers(0, len(_GLYPHS), n))
    font = _FONTS[int(rng.integers(len(_FONTS)))]
    thick = max(1, bh // 12)
    (tw, th), _ = cv2.getTextSize(text, font, 1.0, thick)
    scale = min(0.92 * bw / max(tw, 1), 0.7 * bh / max(th, 1))
    (tw, th), _ = cv2.getTextSize(text, font, scale, thick)
    org = (x0 + (bw - tw) // 2, y0 + (bh + th) // 2)
    cv2.putText(img, text, org, font, scale, colour, thick, cv2.LINE_AA)


def sign(img: np.ndarray, rng: np.random.Generator, box: tuple[int, int, int, int]) -> None:
    """A framed signboard with random glyphs."""
    x0, y0, x1, y1 = box
    board = pick(rng, ACCENTS)
    ink = np.array([0.97, 0.95, 0.85]) if board.mean() < 0.5 else np.array([0.08, 0.06, 0.05])
    _fill_rect(img, x0, y0, x1, y1, rgb(jitter(rng, board, 0.08)))
    t = max(1, (y1 - y0) // 10)
    cv2.rectangle(img, (x0, y0), (x1, y1), rgb(jitter(rng, pick(rng, ACCENTS), 0.1)), t)
    glyph_text(img, rng, (x0 + 2 * t, y0 + t, x1 - 2 * t, y1 - t), rgb(ink))


def window(
    img: np.ndarray,
    rng: np.random.Generator,
    box: tuple[int, int, int, int],
    style: dict[str, float],
    frame: np.ndarray,
) -> None:
    """One window in ``box`` following the facade-wide ``style`` with per-window variation (lit, curtains,
    shutters, flower box, reflection)."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    if w < 4 or h < 4:
        return
    size = img.shape[0]
    t = _thick(size, 1.5)
    arched = style["arched"] > 0.5
    pointed = style["pointed"] > 0.5
    y_spring = y0 + (w * (0.87 if pointed else 0.5) if arched else 0)
    poly = (
        arch_polygon(x0, x1, y_spring, y1, pointed)
        if arched
        else np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], np.int32)
    )
    if rng.random() < style["lit"]:
        glass = jitter(rng, (0.95, 0.80, 0.45), 0.1)
    else:
        glass = jitter(rng, (0.18, 0.22, 0.28), 0.25)
    cv2.fillPoly(img, [poly], rgb(glass), cv2.LINE_AA)
    # A diagonal reflection or a curtain makes each pane unique.
    if rng.random() < 0.6:
        a = rng.uniform(0.1, 0.7)
        refl = np.array(
            [
                (x0 + a * w, y1),
                (x0 + (a + 0.25) * w, y1),
                (x1, y0 + (1 - a) * h * 0.6),
                (x1, y0 + (1 - a) * h * 0.3),
            ],
            np.int32,
        )
        cv2.fillConvexPoly(img, refl, rgb(np.clip(glass + 0.25, 0, 1)), cv2.LINE_AA)
    if rng.random() < 0.35:
        cw = int(w * rng.uniform(0.2, 0.5))
        side_left = rng.random() < 0.5
        cx0, cx1 = (x0, x0 + cw) if side_left else (x1 - cw, x1)
        _fill_rect(img, cx0, int(y_spring), cx1, y1, rgb(jitter(rng, pick(rng, ACCENTS), 0.15)))
    nx, ny = int(style["mullions_x"]), int(style["mullions_y"])
    fc = rgb(frame)
    for i in range(1, nx + 1):
        x = x0 + w * i // (nx + 1)
        cv2.line(img, (x, int(y0 if not arched else y0 + 0.15 * h)), (x, y1), fc, t)
    for j in range(1, ny + 1):
        y = int(y_spring + (y1 - y_spring) * j / (ny + 1))
        cv2.line(img, (x0, y), (x1, y), fc, t)
    cv2.polylines(img, [poly], True, fc, 2 * t, cv2.LINE_AA)
    if style["shutters"] > 0.5 and rng.random() < 0.8:
        sc = rgb(jitter(rng, pick(rng, ACCENTS[:3]), 0.1))
        sw = max(2, w // 2 if rng.random() < 0.3 else w // 3)
        for sx0 in (x0 - sw - t, x1 + t):
            _fill_rect(img, sx0, int(y_spring), sx0 + sw, y1, sc)
            for yy in range(int(y_spring), y1, max(2, h // 8)):
                cv2.line(img, (sx0, yy), (sx0 + sw, yy), rgb(np.array(sc) / 255 * 0.7), 1)
    if style["sill"] > 0.5:
        _fill_rect(img, x0 - 2 * t, y1, x1 + 2 * t, y1 + 3 * t, rgb(np.clip(frame * 1.1, 0, 1)))
    if rng.random() < 0.2:  # a flower box
        _fill_rect(img, x0, y1 - h // 8, x1, y1, rgb(jitter(rng, (0.45, 0.28, 0.15), 0.1)))
        for _ in range(int(rng.integers(3, 8))):
            cx = int(rng.uniform(x0, x1))
            cv2.circle(img, (cx, y1 - h // 8), max(2, w // 10), rgb(jitter(rng, pick(rng, ACCENTS), 0.2)), -1)
    if style["pediment"] > 0.66:
        tri = np.array(
            [(x0 - 3 * t, y0 - 2 * t), (x1 + 3 * t, y0 - 2 * t), ((x0 + x1) // 2, y0 - h // 4)], np.int32
        )
        cv2.fillConvexPoly(img, tri, rgb(np.clip(frame * 1.05, 0, 1)), cv2.LINE_AA)
        cv2.polylines(img, [tri], True, rgb(frame * 0.6), t, cv2.LINE_AA)
    elif style["pediment"] > 0.33:
        _fill_rect(img, x0 - 3 * t, y0 - 5 * t, x1 + 3 * t, y0 - 2 * t, rgb(frame * 0.9))


def window_style(rng: np.random.Generator, allow_arch: bool = True) -> dict[str, float]:
    """Facade-wide window parameters (floats so the dict stays homogeneous)."""
    return {
        "arched": float(allow_arch and rng.random() < 0.45),
        "pointed": float(rng.random() < 0.25),
        "mullions_x": float(rng.integers(0, 3)),
        "mullions_y": float(rng.integers(0, 3)),
        "lit": float(rng.uniform(0.0, 0.35)),
        "shutters": float(rng.random() < 0.35),
        "sill": float(rng.random() < 0.7),
        "pediment": float(rng.random()),
    }


def column(
    img: np.ndarray, rng: np.random.Generator, x0: int, x1: int, y0: int, y1: int, colour: np.ndarray
) -> None:
    """A shaded cylindrical column with flutes, capital and base between columns ``x0..x1``, rows ``y0..y1``."""
    h, w = img.shape[:2]
    xa, xb = max(0, x0), min(w, x1)
    ya, yb = max(0, y0), min(h, y1)
    if xb <= xa or yb <= ya:
        return
    t = np.linspace(0.0, math.pi, xb - xa, dtype=np.float32)
    profile = 0.45 + 0.6 * np.clip(np.sin(t), 0.0, 1.0) ** 0.7
    band = colour.astype(np.float32)[None, :] * profile[:, None]
    noise = 1.0 + 0.05 * value_noise(rng, yb - ya, xb - xa, cells=2, octaves=3)
    img[ya:yb, xa:xb] = np.clip(band[None, :, :] * noise[..., None] * 255, 0, 255).astype(np.uint8)
    flutes = int(rng.integers(3, 7))
    dark = rgb(colour * 0.55)
    for i in range(1, flutes):
        x = xa + (xb - xa) * i // flutes
        cv2.line(img, (x, ya), (x, yb), dark, 1)
    cw = (x1 - x0) // 5 + 1
    ch = max(3, (x1 - x0) // 3)
    cap = rgb(np.clip(colour * 1.05, 0, 1))
    _fill_rect(img, x0 - cw, y0, x1 + cw, y0 + ch, cap)
    cv2.rectangle(img, (x0 - cw, y0), (x1 + cw, y0 + ch), dark, 1)
    if rng.random() < 0.6:  # volutes
        r = max(2, ch // 2)
        for cx in (x0 - cw + r, x1 + cw - r):
            cv2.circle(img, (cx, y0 + ch), r, dark, 1, cv2.LINE_AA)
    _fill_rect(img, x0 - cw, y1 - ch, x1 + cw, y1, cap)
    cv2.rectangle(img, (x0 - cw, y1 - ch), (x1 + cw, y1), dark, 1)


def rosette(img: np.ndarray, rng: np.random.Generator, cx: int, cy: int, r: int, colour: np.ndarray) -> None:
    """A rose window / medallion: coloured sectors, spokes, rings and foils."""
    if r < 4:
        return
    n = int(rng.integers(6, 17))
    offset = rng.uniform(0, 360 / n)
    for i in range(n):
        c = rgb(jitter(rng, pick(rng, ACCENTS), 0.2))
        cv2.ellipse(
            img, (cx, cy), (r, r), 0, offset + i * 360 / n, offset + (i + 1) * 360 / n, c, -1, cv2.LINE_AA
        )
    stone = rgb(colour)
    t = max(1, r // 20)
    for k in range(int(rng.integers(1, 4))):
        cv2.circle(img, (cx, cy), int(r * (0.3 + 0.25 * k)), stone, t, cv2.LINE_AA)
    for i in range(n):
        a = math.radians(offset + i * 360 / n)
        cv2.line(img, (cx, cy), (int(cx + r * math.cos(a)), int(cy + r * math.sin(a))), stone, t, cv2.LINE_AA)
        fx, fy = int(cx + 0.8 * r * math.cos(a + math.pi / n)), int(cy + 0.8 * r * math.sin(a + math.pi / n))
        cv2.circle(img, (fx, fy), max(2, r // 8), stone, t, cv2.LINE_AA)
    cv2.circle(img, (cx, cy), r, stone, 2 * t, cv2.LINE_AA)
    cv2.circle(img, (cx, cy), max(2, r // 6), rgb(jitter(rng, pick(rng, ACCENTS), 0.1)), -1, cv2.LINE_AA)


def clock(img: np.ndarray, rng: np.random.Generator, cx: int, cy: int, r: int) -> None:
    """A clock face with ticks and two hands at random times."""
    face = jitter(rng, (0.92, 0.90, 0.82) if rng.random() < 0.6 else (0.10, 0.12, 0.25), 0.05)
    ink = rgb((0.05, 0.05, 0.05) if face.mean() > 0.5 else (0.9, 0.75, 0.3))
    cv2.circle(img, (cx, cy), r, rgb(face), -1, cv2.LINE_AA)
    t = max(1, r // 18)
    cv2.circle(img, (cx, cy), r, ink, 2 * t, cv2.LINE_AA)
    for i in range(12):
        a = i * math.pi / 6
        r0 = 0.78 if i % 3 == 0 else 0.86
        p0 = (int(cx + r0 * r * math.cos(a)), int(cy + r0 * r * math.sin(a)))
        p1 = (int(cx + 0.95 * r * math.cos(a)), int(cy + 0.95 * r * math.sin(a)))
        cv2.line(img, p0, p1, ink, t + (i % 3 == 0), cv2.LINE_AA)
    for length, width in ((0.5, 2 * t), (0.75, t)):
        a = rng.uniform(0, 2 * math.pi)
        cv2.line(
            img,
            (cx, cy),
            (int(cx + length * r * math.cos(a)), int(cy + length * r * math.sin(a))),
            ink,
            width,
        )


def painting(img: np.ndarray, rng: np.random.Generator, box: tuple[int, int, int, int]) -> None:
    """A framed abstract painting: gradient ground and random shapes; unique per call."""
    x0, y0, x1, y1 = box
    if x1 - x0 < 8 or y1 - y0 < 8:
        return
    t = max(2, (x1 - x0) // 14)
    _fill_rect(img, x0 - t, y0 - t, x1 + t, y1 + t, rgb(jitter(rng, (0.65, 0.50, 0.20), 0.15)))
    _vertical_gradient(
        img, x0, y0, x1, y1, jitter(rng, pick(rng, ACCENTS), 0.3), jitter(rng, pick(rng, MATERIALS), 0.3)
    )
    shapes(img, rng, (x0, y0, x1, y1), int(rng.integers(5, 12)))


def shapes(img: np.ndarray, rng: np.random.Generator, box: tuple[int, int, int, int], n: int) -> None:
    """``n`` random circles, triangles, rectangles and strokes inside ``box``."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    if w < 4 or h < 4:
        return
    for _ in range(n):
        c = rgb(jitter(rng, pick(rng, ACCENTS), 0.3))
        kind = int(rng.integers(4))
        cx, cy = int(x0 + rng.uniform(0.1, 0.9) * w), int(y0 + rng.uniform(0.1, 0.9) * h)
        s = max(2, int(min(w, h) * rng.uniform(0.06, 0.3)))
        if kind == 0:
            cv2.circle(img, (cx, cy), s, c, -1, cv2.LINE_AA)
        elif kind == 1:
            pts = np.array([(cx + rng.uniform(-s, s), cy + rng.uniform(-s, s)) for _ in range(3)], np.int32)
            cv2.fillConvexPoly(img, pts, c, cv2.LINE_AA)
        elif kind == 2:
            _fill_rect(img, cx - s, cy - s // 2, min(x1, cx + s), min(y1, cy + s // 2), c)
        else:
            p1 = (int(x0 + rng.uniform(0, w)), int(y0 + rng.uniform(0, h)))
            cv2.line(img, (cx, cy), p1, c, max(1, s // 4), cv2.LINE_AA)


def band(
    img: np.ndarray, rng: np.random.Generator, y0: int, y1: int, colour: np.ndarray, dentils: bool
) -> None:
    """A horizontal cornice/string course across the facet, optionally with a row of dentils."""
    w = img.shape[1]
    _fill_rect(img, 0, y0, w, y1, rgb(jitter(rng, colour, 0.04)))
    dark = rgb(colour * 0.6)
    cv2.line(img, (0, y1), (w, y1), dark, max(1, (y1 - y0) // 6))
    if dentils and y1 - y0 >= 6:
        step = max(4, (y1 - y0))
        for x in range(int(rng.integers(0, step)), w, step):
            _fill_rect(img, x, y0 + (y1 - y0) // 2, x + step // 2, y1, dark)


def silhouette(
    img: np.ndarray, rng: np.random.Generator, box: tuple[int, int, int, int], colour: Colour
) -> None:
    """A statue-like figure (head, torso, limbs) inside ``box``."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    if w < 6 or h < 10:
        return
    cx = (x0 + x1) // 2
    cv2.circle(img, (cx, y0 + h // 8), max(2, h // 10), colour, -1, cv2.LINE_AA)
    body = np.array(
        [(cx - w // 4, y0 + h // 4), (cx + w // 4, y0 + h // 4), (cx + w // 3, y1), (cx - w // 3, y1)],
        np.int32,
    )
    cv2.fillConvexPoly(img, body, colour, cv2.LINE_AA)
    for side in (-1, 1):
        a = rng.uniform(-0.6, 1.2)
        p0 = (cx + side * w // 4, y0 + h // 4)
        p1 = (int(p0[0] + side * 0.35 * h * math.cos(a)), int(p0[1] - 0.35 * h * math.sin(a)))
        cv2.line(img, p0, p1, colour, max(1, w // 8), cv2.LINE_AA)


# ---------------------------------------------------------------------------------------------------------------
# Families


def _classical(rng: np.random.Generator, size: int) -> np.ndarray:
    base = jitter(rng, pick(rng, MATERIALS), 0.05)
    img = wall(rng, size, base)
    if rng.random() < 0.5:
        bricks(img, rng, (0, 0, size, size), max(4, size // int(rng.integers(24, 48))), base)
    trim = jitter(rng, pick(rng, MATERIALS), 0.05)
    floors = int(rng.integers(3, 6))
    cols = int(rng.integers(3, 8))
    top = int(size * rng.uniform(0.06, 0.14))
    ground = int(size * rng.uniform(0.2, 0.3))
    fh = (size - top - ground) / floors
    cw = size / cols
    style = window_style(rng)
    for f in range(floors):
        y = int(top + f * fh)
        band(img, rng, y - max(3, size // 90), y + max(3, size // 90), trim, rng.random() < 0.4)
        for c in range(cols):
            if rng.random() < 0.08:  # a blind bay with a plaque keeps the grid from being perfectly periodic
                sign(
                    img,
                    rng,
                    (
                        int(c * cw + 0.2 * cw),
                        int(y + 0.35 * fh),
                        int((c + 1) * cw - 0.2 * cw),
                        int(y + 0.6 * fh),
                    ),
                )
                continue
            wx0, wx1 = int(c * cw + cw * 0.28), int((c + 1) * cw - cw * 0.28)
            window(img, rng, (wx0, int(y + fh * 0.28), wx1, int(y + fh * 0.85)), style, trim)
    if rng.random() < 0.6:
        for c in range(cols + 1):
            x = int(c * cw)
            pw = max(3, size // 60)
            column(img, rng, x - pw, x + pw, top, size - ground, trim)
    gy = size - ground
    band(img, rng, gy - size // 60, gy + size // 60, trim, True)
    door_w = int(cw * rng.uniform(0.6, 1.0))
    dx = int(size / 2 - door_w / 2 + rng.uniform(-0.25, 0.25) * size)
    poly = arch_polygon(dx, dx + door_w, gy + door_w * 0.6, size, pointed=False)
    cv2.fillPoly(img, [poly], rgb(jitter(rng, (0.25, 0.15, 0.08), 0.2)), cv2.LINE_AA)
    cv2.polylines(img, [poly], True, rgb(trim * 0.7), _thick(size, 3), cv2.LINE_AA)
    cv2.line(
        img,
        (dx + door_w // 2, int(gy + door_w * 0.6)),
        (dx + door_w // 2, size),
        rgb(trim * 0.5),
        _thick(size, 2),
    )
    for k in range(int(rng.integers(1, 4))):
        sx = int(rng.uniform(0.02, 0.7) * size)
        sw = int(size * rng.uniform(0.12, 0.28))
        sy = int(gy + ground * rng.uniform(0.1, 0.3) + k)
        sign(img, rng, (sx, sy, sx + sw, sy + int(ground * rng.uniform(0.15, 0.3))))
    if rng.random() < 0.5:
        rosette(img, rng, int(size * rng.uniform(0.3, 0.7)), top // 2 + 2, max(4, top // 2), trim)
    else:
        glyph_text(img, rng, (size // 6, 2, 5 * size // 6, top - 2), rgb(trim * 0.4))
    return img


def _temple(rng: np.random.Generator, size: int) -> np.ndarray:
    base = jitter(rng, pick(rng, MATERIALS), 0.05)
    img = wall(rng, size, base * 0.55)
    ped_h = int(size * rng.uniform(0.18, 0.3))
    ent_h = int(size * rng.uniform(0.07, 0.12))
    steps_h = int(size * rng.uniform(0.08, 0.15))
    stone = rgb(jitter(rng, base, 0.04))
    tri = np.array([(0, ped_h), (size, ped_h), (size // 2, int(ped_h * rng.uniform(0.0, 0.2)))], np.int32)
    _fill_rect(img, 0, 0, size, ped_h, rgb(base * 0.8))
    cv2.fillConvexPoly(img, tri, stone, cv2.LINE_AA)
    cv2.polylines(img, [tri], True, rgb(base * 0.5), _thick(size, 3), cv2.LINE_AA)
    for _ in range(int(rng.integers(2, 6))):  # relief figures in the tympanum
        fx = int(rng.uniform(0.3, 0.7) * size)
        fh = int(ped_h * rng.uniform(0.3, 0.6))
        silhouette(img, rng, (fx - fh // 3, ped_h - fh - 2, fx + fh // 3, ped_h - 2), rgb(base * 0.7))
    if rng.random() < 0.6:
        rosette(img, rng, size // 2, int(ped_h * 0.62), int(ped_h * 0.22), base)
    _fill_rect(img, 0, ped_h, size, ped_h + ent_h, rgb(jitter(rng, base, 0.03)))
    glyph_text(img, rng, (size // 10, ped_h + 2, 9 * size // 10, ped_h + ent_h - 2), rgb(base * 0.35))
    cols = int(rng.integers(4, 9))
    y0, y1 = ped_h + ent_h, size - steps_h
    inner = jitter(rng, (0.18, 0.15, 0.12), 0.2)
    _fill_rect(img, 0, y0, size, y1, rgb(inner))
    door_w = int(size * rng.uniform(0.12, 0.22))
    poly = arch_polygon(
        size // 2 - door_w // 2, size // 2 + door_w // 2, y0 + (y1 - y0) * 0.45, y1, pointed=False
    )
    cv2.fillPoly(img, [poly], rgb(jitter(rng, (0.45, 0.3, 0.15), 0.2)), cv2.LINE_AA)
    for _ in range(int(rng.integers(1, 4))):
        px = int(rng.uniform(0.05, 0.8) * size)
        painting(img, rng, (px, int(y0 + 0.2 * (y1 - y0)), px + size // 8, int(y0 + 0.45 * (y1 - y0))))
    spacing = size / cols
    cwid = spacing * rng.uniform(0.35, 0.55)
    for c in range(cols):
        cx = (c + 0.5) * spacing
        column(img, rng, int(cx - cwid / 2), int(cx + cwid / 2), y0, y1, jitter(rng, base, 0.03))
    n_steps = int(rng.integers(3, 7))
    for s in range(n_steps):
        sy0 = y1 + s * steps_h // n_steps
        _fill_rect(img, 0, sy0, size, sy0 + steps_h // n_steps, rgb(base * (0.95 - 0.06 * (s % 2))))
        cv2.line(img, (0, sy0), (size, sy0), rgb(base * 0.5), 1)
    return img


def _gothic(rng: np.random.Generator, size: int) -> np.ndarray:
    base = jitter(rng, pick(rng, MATERIALS), 0.05)
    img = wall(rng, size, base)
    bricks(img, rng, (0, 0, size, size), max(6, size // int(rng.integers(14, 28))), base)
    n_but = int(rng.integers(2, 5))
    for i in range(n_but):
        x = int((i + 0.5) * size / n_but + rng.uniform(-0.03, 0.03) * size)
        bw = size // 24
        column(img, rng, x - bw, x + bw, 0, size, base * 0.9)
    rr = int(size * rng.uniform(0.12, 0.2))
    rx, ry = int(size * rng.uniform(0.4, 0.6)), int(size * rng.uniform(0.2, 0.3))
    cv2.circle(img, (rx, ry), rr + size // 40, rgb(base * 0.7), -1, cv2.LINE_AA)
    rosette(img, rng, rx, ry, rr, base * 1.05)
    style = window_style(rng)
    style["arched"], style["pointed"] = 1.0, 1.0
    n_win = int(rng.integers(2, 6))
    for i in range(n_win):
        if abs((i + 0.5) / n_win - rx / size) < 0.12:
            continue
        wx = int((i + 0.5) * size / n_win)
        ww = int(size / n_win * rng.uniform(0.25, 0.4))
        wy0 = int(size * rng.uniform(0.12, 0.25))
        window(
            img, rng, (wx - ww // 2, wy0, wx + ww // 2, int(size * rng.uniform(0.5, 0.62))), style, base * 0.8
        )
    portal_w = int(size * rng.uniform(0.22, 0.34))
    px = int(size / 2 - portal_w / 2)
    for k in range(int(rng.integers(2, 5))):  # nested archivolts
        inset = k * portal_w // 10
        poly = arch_polygon(px + inset, px + portal_w - inset, size * 0.78 + inset, size, pointed=True)
        shade = base * (0.85 - 0.12 * k)
        cv2.fillPoly(img, [poly], rgb(shade), cv2.LINE_AA)
        cv2.polylines(img, [poly], True, rgb(base * 0.4), _thick(size, 2), cv2.LINE_AA)
    _fill_rect(
        img,
        px + portal_w // 3,
        int(size * 0.86),
        px + 2 * portal_w // 3,
        size,
        rgb(jitter(rng, (0.3, 0.18, 0.1), 0.2)),
    )
    for side in (0.12, 0.75):  # statue niches
        nx = int(size * side + rng.uniform(-0.05, 0.05) * size)
        nw = size // 12
        poly = arch_polygon(nx, nx + nw, size * 0.72, size * 0.92, pointed=True)
        cv2.fillPoly(img, [poly], rgb(base * 0.45), cv2.LINE_AA)
        silhouette(
            img, rng, (nx + 2, int(size * 0.74), nx + nw - 2, int(size * 0.91)), rgb(jitter(rng, base, 0.1))
        )
    return img


def _modern(rng: np.random.Generator, size: int) -> np.ndarray:
    frame = jitter(rng, pick(rng, MATERIALS[2:4] + MATERIALS[6:7]), 0.05)
    img = wall(rng, size, frame, roughness=0.05)
    rows, cols = int(rng.integers(6, 14)), int(rng.integers(4, 10))
    sky_top, sky_bot = jitter(rng, (0.35, 0.5, 0.7), 0.2), jitter(rng, (0.7, 0.75, 0.8), 0.15)
    ground = int(size * rng.uniform(0.12, 0.2))
    ph, pw = (size - ground) / rows, size / cols
    mull = max(2, size // 80)
    pattern = rng.random((rows, cols)) < rng.uniform(0.05, 0.25)
    for r in range(rows):
        for c in range(cols):
            x0, y0 = int(c * pw + mull), int(r * ph + mull)
            x1, y1 = int((c + 1) * pw - mull), int((r + 1) * ph - mull)
            if pattern[r, c]:
                _fill_rect(img, x0, y0, x1, y1, rgb(jitter(rng, frame * 0.8, 0.05)))
                continue
            t = (r + rng.uniform(-0.5, 0.5)) / rows
            glass = jitter(rng, (1 - t) * sky_top + t * sky_bot, 0.08)
            _vertical_gradient(img, x0, y0, x1, y1, glass, glass * 0.8)
            if rng.random() < 0.15:  # blinds or a person behind the glass
                _fill_rect(
                    img,
                    x0,
                    y0,
                    x1,
                    int(y0 + (y1 - y0) * rng.uniform(0.2, 0.7)),
                    rgb(jitter(rng, (0.85, 0.85, 0.8), 0.05)),
                )
    logo_w = int(size * rng.uniform(0.3, 0.55))
    lx, ly = int(rng.uniform(0.05, 0.95 - logo_w / size) * size), int(rng.uniform(0.05, 0.4) * size)
    lh = int(size * rng.uniform(0.07, 0.12))
    sign(img, rng, (lx, ly, lx + logo_w, ly + lh))
    shapes(img, rng, (lx, ly + lh + 4, lx + lh * 2, ly + lh * 3), 3)
    gy = size - ground
    _fill_rect(img, 0, gy, size, size, rgb(jitter(rng, frame * 0.7, 0.05)))
    n_doors = int(rng.integers(1, 4))
    for d in range(n_doors):
        dx = int((d + 0.5) * size / n_doors - size * 0.06)
        _vertical_gradient(
            img, dx, gy + ground // 5, dx + int(size * 0.12), size, sky_bot * 0.6, sky_bot * 0.3
        )
        cv2.rectangle(
            img, (dx, gy + ground // 5), (dx + int(size * 0.12), size), rgb(frame * 0.4), _thick(size, 2)
        )
        cv2.line(
            img,
            (dx + int(size * 0.06), gy + ground // 5),
            (dx + int(size * 0.06), size),
            rgb(frame * 0.4),
            _thick(size),
        )
    glyph_text(img, rng, (size // 20, gy + 2, size // 2, gy + ground // 5), rgb(frame * 0.3))
    return img


def _interior(rng: np.random.Generator, size: int) -> np.ndarray:
    base = jitter(rng, pick(rng, MATERIALS), 0.06)
    img = wall(rng, size, base)
    ceil_h = int(size * rng.uniform(0.12, 0.2))
    floor_y = int(size * rng.uniform(0.68, 0.78))
    trim = jitter(rng, pick(rng, MATERIALS), 0.05)
    cof = int(rng.integers(4, 9))
    for i in range(cof):  # coffered ceiling
        x0, x1 = i * size // cof, (i + 1) * size // cof
        _fill_rect(img, x0, 0, x1, ceil_h, rgb(trim * 0.9))
        m = max(2, (x1 - x0) // 6)
        _fill_rect(img, x0 + m, m, x1 - m, ceil_h - m, rgb(trim * 0.6))
        cv2.circle(img, ((x0 + x1) // 2, ceil_h // 2), max(2, m), rgb(jitter(rng, (0.85, 0.7, 0.3), 0.1)), -1)
    n_arch = int(rng.integers(2, 5))
    aw = size / n_arch
    for i in range(n_arch):
        x0 = int(i * aw + aw * 0.15)
        x1 = int((i + 1) * aw - aw * 0.15)
        poly = arch_polygon(x0, x1, ceil_h + (x1 - x0) * 0.7, floor_y, pointed=rng.random() < 0.3)
        cv2.fillPoly(img, [poly], rgb(jitter(rng, base * 0.35, 0.15)), cv2.LINE_AA)
        cv2.polylines(img, [poly], True, rgb(trim), _thick(size, 4), cv2.LINE_AA)
        inner = (
            x0 + (x1 - x0) // 5,
            int(ceil_h + (x1 - x0) * 0.8),
            x1 - (x1 - x0) // 5,
            int(floor_y - (x1 - x0) * 0.3),
        )
        if rng.random() < 0.7:
            painting(img, rng, inner)
        else:
            silhouette(img, rng, inner, rgb(jitter(rng, (0.8, 0.78, 0.7), 0.1)))
        column(img, rng, int(i * aw - aw * 0.05), int(i * aw + aw * 0.05), ceil_h, floor_y, trim)
    tiles_floor(img, rng, floor_y, size)
    if rng.random() < 0.7:  # chandelier
        cx, cy, r = int(size * rng.uniform(0.3, 0.7)), int(ceil_h * 1.6), int(size * rng.uniform(0.05, 0.1))
        cv2.line(img, (cx, 0), (cx, cy), rgb((0.2, 0.18, 0.1)), _thick(size))
        for k in range(int(rng.integers(6, 12))):
            a = 2 * math.pi * k / 8
            p = (int(cx + r * math.cos(a)), int(cy + 0.35 * r * math.sin(a)))
            cv2.line(img, (cx, cy), p, rgb((0.6, 0.5, 0.2)), _thick(size))
            cv2.circle(img, p, max(2, r // 6), rgb((1.0, 0.9, 0.6)), -1, cv2.LINE_AA)
    sign(img, rng, (int(size * 0.35), floor_y - size // 12, int(size * 0.65), floor_y - size // 40))
    return img


def _shopfront(rng: np.random.Generator, size: int) -> np.ndarray:
    base = jitter(rng, pick(rng, MATERIALS), 0.05)
    img = wall(rng, size, base)
    if rng.random() < 0.5:
        bricks(img, rng, (0, 0, size, size), max(4, size // int(rng.integers(30, 50))), base)
    gy = int(size * rng.uniform(0.55, 0.65))
    style = window_style(rng)
    floors, cols = int(rng.integers(2, 4)), int(rng.integers(3, 6))
    fh, cw = gy / floors, size / cols
    for f in range(floors):
        for c in range(cols):
            box = (
                int(c * cw + 0.25 * cw),
                int(f * fh + 0.25 * fh),
                int((c + 1) * cw - 0.25 * cw),
                int((f + 1) * fh - 0.15 * fh),
            )
            window(img, rng, box, style, jitter(rng, pick(rng, MATERIALS), 0.05))
            if f > 0 and rng.random() < 0.4:  # balcony railing
                by = box[3] + 2
                cv2.line(img, (box[0] - 4, by), (box[2] + 4, by), rgb((0.1, 0.1, 0.1)), _thick(size, 2))
                for x in range(box[0] - 4, box[2] + 5, max(3, size // 80)):
                    cv2.line(img, (x, by), (x, by - int(fh * 0.15)), rgb((0.1, 0.1, 0.1)), 1)
    bays = int(rng.integers(2, 5))
    bw = size / bays
    for b in range(bays):
        x0, x1 = int(b * bw + 3), int((b + 1) * bw - 3)
        sh = int((size - gy) * 0.18)
        sign(img, rng, (x0, gy, x1, gy + sh))
        awn_y1 = gy + sh + int((size - gy) * 0.15)
        c1, c2 = jitter(rng, pick(rng, ACCENTS), 0.1), jitter(rng, (0.95, 0.95, 0.92), 0.03)
        stripes = int(rng.integers(4, 10))
        for s in range(stripes):
            sx0, sx1 = x0 + (x1 - x0) * s // stripes, x0 + (x1 - x0) * (s + 1) // stripes
            _fill_rect(img, sx0, gy + sh, sx1, awn_y1, rgb(c1 if s % 2 == 0 else c2))
            cv2.ellipse(
                img,
                ((sx0 + sx1) // 2, awn_y1),
                ((sx1 - sx0) // 2, max(2, (sx1 - sx0) // 4)),
                0,
                0,
                180,
                rgb(c1 if s % 2 == 0 else c2),
                -1,
            )
        _vertical_gradient(
            img,
            x0,
            awn_y1 + 4,
            x1,
            size,
            jitter(rng, (0.3, 0.32, 0.35), 0.2),
            jitter(rng, (0.12, 0.12, 0.14), 0.2),
        )
        shapes(
            img, rng, (x0 + 4, int(awn_y1 + (size - awn_y1) * 0.4), x1 - 4, size - 4), int(rng.integers(4, 9))
        )
        if rng.random() < 0.5:  # a poster in the window
            px = int(rng.uniform(x0, max(x0 + 1, x1 - bw * 0.3)))
            painting(img, rng, (px, awn_y1 + 10, px + int(bw * 0.25), awn_y1 + 10 + int(bw * 0.3)))
        _fill_rect(img, x1 - 2, gy, x1 + 4, size, rgb(base * 0.6))
    return img


def _tower(rng: np.random.Generator, size: int) -> np.ndarray:
    base = jitter(rng, pick(rng, MATERIALS), 0.05)
    img = wall(rng, size, base)
    bricks(img, rng, (0, 0, size, size), max(4, size // int(rng.integers(30, 60))), base)
    crenel_h = int(size * rng.uniform(0.06, 0.1))
    _fill_rect(img, 0, 0, size, crenel_h, rgb(base * 0.45))
    teeth = int(rng.integers(5, 10))
    for i in range(teeth):
        x0 = int(i * size / teeth)
        _fill_rect(img, x0, 0, x0 + int(size / teeth / 2), crenel_h, rgb(jitter(rng, base, 0.03)))
    band(img, rng, crenel_h, crenel_h + size // 40, base * 0.85, True)
    cr = int(size * rng.uniform(0.14, 0.22))
    cx, cy = int(size * rng.uniform(0.35, 0.65)), crenel_h + size // 40 + cr + size // 30
    cv2.rectangle(
        img,
        (cx - cr - size // 30, cy - cr - size // 30),
        (cx + cr + size // 30, cy + cr + size // 30),
        rgb(base * 0.75),
        -1,
    )
    clock(img, rng, cx, cy, cr)
    glyph_text(img, rng, (cx - cr, cy + cr + size // 25, cx + cr, cy + cr + size // 10), rgb(base * 0.35))
    lou_y = cy + cr + size // 8
    for side in (-1, 1):  # louvred openings either side
        lx = cx + side * int(size * 0.3) - size // 16
        poly = arch_polygon(
            lx, lx + size // 8, lou_y + size // 16, lou_y + size // 4, pointed=rng.random() < 0.5
        )
        cv2.fillPoly(img, [poly], rgb(base * 0.25), cv2.LINE_AA)
        for y in range(lou_y + size // 16, lou_y + size // 4, max(3, size // 60)):
            cv2.line(img, (lx, y), (lx + size // 8, y - 2), rgb(base * 0.7), 1)
    style = window_style(rng)
    rows = int(rng.integers(2, 4))
    for r in range(rows):
        y = int(size * (0.66 + 0.1 * r))
        for _ in range(int(rng.integers(2, 5))):
            x = int(size * rng.uniform(0.05, 0.85))
            window(img, rng, (x, y, x + size // 18, y + size // 14), style, base * 0.8)
    if rng.random() < 0.7:  # balcony
        by = int(size * rng.uniform(0.55, 0.62))
        _fill_rect(img, size // 6, by, 5 * size // 6, by + size // 60, rgb(base * 0.5))
        for x in range(size // 6, 5 * size // 6, max(4, size // 50)):
            cv2.line(img, (x, by), (x, by - size // 25), rgb(base * 0.5), _thick(size))
    return img


def _mural(rng: np.random.Generator, size: int) -> np.ndarray:
    base = jitter(rng, pick(rng, MATERIALS), 0.05)
    img = wall(rng, size, base)
    m = int(size * rng.uniform(0.05, 0.12))
    palette = [jitter(rng, pick(rng, ACCENTS), 0.2) for _ in range(5)]
    n_tri = int(rng.integers(60, 140))
    for _ in range(n_tri):  # mosaic ground
        cx, cy = rng.uniform(m, size - m, 2)
        s = size * rng.uniform(0.03, 0.12)
        pts = np.clip(
            np.array([(cx + rng.uniform(-s, s), cy + rng.uniform(-s, s)) for _ in range(3)]), m, size - m
        )
        cv2.fillConvexPoly(
            img, pts.astype(np.int32), rgb(jitter(rng, palette[int(rng.integers(5))], 0.15)), cv2.LINE_AA
        )
    for _ in range(int(rng.integers(2, 6))):  # figures
        fx, fh = int(rng.uniform(0.1, 0.8) * size), int(size * rng.uniform(0.2, 0.45))
        fy = int(rng.uniform(0.3, 0.95) * size) - fh
        silhouette(
            img,
            rng,
            (fx, max(m, fy), fx + fh // 2, min(size - m, fy + fh)),
            rgb(jitter(rng, pick(rng, ACCENTS), 0.1)),
        )
    for _ in range(int(rng.integers(1, 4))):
        rosette(
            img,
            rng,
            int(rng.uniform(0.2, 0.8) * size),
            int(rng.uniform(0.2, 0.8) * size),
            int(size * rng.uniform(0.04, 0.1)),
            base,
        )
    by = int(rng.uniform(0.05, 0.8) * size)
    sign(img, rng, (m + size // 10, by, size - m - size // 10, by + int(size * 0.08)))
    cv2.rectangle(img, (m, m), (size - m, size - m), rgb(base * 0.5), _thick(size, 4))
    return img


PAINTERS: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "classical": _classical,
    "temple": _temple,
    "gothic": _gothic,
    "modern": _modern,
    "interior": _interior,
    "shopfront": _shopfront,
    "tower": _tower,
    "mural": _mural,
}


def weather(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Grime, streaks and grain over a finished facet (uint8 (H, W, 3) in, same out)."""
    h, w = img.shape[:2]
    grime = 1.0 - 0.10 * np.clip(value_noise(rng, h, w, cells=3, octaves=3), 0, None)
    streaks = cv2.resize(
        rng.standard_normal((1, max(4, w // 6))).astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR
    )
    fade = np.linspace(0.3, 1.0, h, dtype=np.float32)[:, None]
    shade = grime * (1.0 - 0.03 * streaks * fade)
    grain = 3.0 * rng.standard_normal((h, w, 1), dtype=np.float32)
    out = img.astype(np.float32) * shade[..., None] + grain
    return np.clip(out, 0, 255).astype(np.uint8)


def render_facet(rng: np.random.Generator, size: int, family: str) -> np.ndarray:
    """Draw one facet.

    Args:
        rng: the facet's own generator (same generator state, same facet).
        size: side length in pixels.
        family: one of :data:`FAMILIES`, or two joined by ``+`` (e.g. ``"gothic+shopfront"``): a composite
            facade, the first family on one side of a random horizontal or vertical split, the second on the other.

    Returns:
        (size, size, 3) uint8 RGB image.

    Raises:
        ValueError: for an unknown family or a size below 32.
    """
    parts = family.split("+")
    if len(parts) > 2 or any(p not in PAINTERS for p in parts):
        raise InputError(f"unknown facet family {family!r}; expected one of {FAMILIES} or two joined by '+'")
    if size < 32:
        raise InputError(f"facet size must be >= 32 pixels, got {size}")
    img = PAINTERS[parts[0]](rng, size)
    if len(parts) == 2:
        other = PAINTERS[parts[1]](rng, size)
        cut = int(size * rng.uniform(0.35, 0.65))
        trim = rgb(jitter(rng, pick(rng, MATERIALS), 0.05) * 0.8)
        t = _thick(size, 4)
        if rng.random() < 0.5:  # left | right
            img[:, cut:] = other[:, cut:]
            _fill_rect(img, cut - t, 0, cut + t, size, trim)
        else:  # top over bottom
            img[cut:] = other[cut:]
            _fill_rect(img, 0, cut - t, size, cut + t, trim)
    return weather(rng, img)
