"""Rendering one photo: a facet seen through a random camera, in a cluttered scene, under changed light.

Pixel convention: integer coordinates are pixel centres (OpenCV's), so a homography ``H`` maps facet pixel ``(x, y)``
to photo pixel ``H @ (x, y, 1)`` after dividing by the third coordinate; ``cv2.warpPerspective(facet, H, ...)``
reproduces the facet's appearance in the photo.

Viewpoint *levels* say how hard a view is meant to be:

- ``easy``: mostly frontal, the facet fills much of the frame, little occlusion;
- ``hard``: oblique, far away or zoomed into a part of the facet, with heavy occlusion and stronger light changes;
- ``junk``: the facet is tiny or almost out of the frame (the revisitop "junk" images).

What a photo really shows is measured after rendering (``visible_fraction``), because occluders are random.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from landmark.errors import InputError
from landmark.data.synthetic.textures import ACCENTS, MATERIALS, jitter, pick, rgb, value_noise

LEVELS: tuple[str, ...] = ("easy", "hard", "junk")
ASPECTS: tuple[tuple[int, int], ...] = ((4, 3), (3, 4), (16, 9), (1, 1), (3, 2), (2, 3))
ASPECT_WEIGHTS: tuple[float, ...] = (0.3, 0.2, 0.15, 0.15, 0.1, 0.1)

# A rendered view counts as junk when less than this fraction of the facet is visible, or when its visible part
# covers less than JUNK_AREA of the photo.
JUNK_VISIBLE = 0.15
JUNK_AREA = 0.015
# Hard views: share with one big occluder in front of the facet, and strength of the light/colour changes.
BIG_OCCLUDER_SHARE = 0.35
HARD_LIGHT = 1.3
# A view meant to be easy counts as hard when less than this fraction of the facet is visible.
EASY_VISIBLE = 0.5

_SKIES: tuple[tuple[tuple[float, float, float], tuple[float, float, float]], ...] = (
    ((0.25, 0.45, 0.80), (0.65, 0.80, 0.95)),  # clear
    ((0.58, 0.60, 0.64), (0.82, 0.83, 0.85)),  # overcast
    ((0.25, 0.30, 0.55), (0.95, 0.65, 0.40)),  # sunset
    ((0.50, 0.60, 0.75), (0.90, 0.88, 0.80)),  # haze
)
_GROUNDS: tuple[tuple[float, float, float], ...] = (
    (0.35, 0.35, 0.37),  # asphalt
    (0.30, 0.45, 0.20),  # grass
    (0.50, 0.45, 0.40),  # cobbles
    (0.75, 0.68, 0.50),  # sand
)


@dataclass(frozen=True)
class RenderedPhoto:
    """One rendered photo and its ground truth.

    Attributes:
        image: (H, W, 3) uint8 RGB pixels, before JPEG compression.
        jpeg: the JPEG-encoded photo.
        quality: the JPEG quality used.
        homography: (3, 3) float64 map from facet pixels to photo pixels, or None when no facet is shown.
        visible: (H, W) bool, photo pixels showing the facet and not covered by an occluder.
        visible_fraction: visible facet area / projected area of the whole facet (0 without a facet).
        bbox: (x0, y0, x1, y1) box of the facet's projection clipped to the frame, or None.
    """

    image: np.ndarray
    jpeg: bytes
    quality: int
    homography: np.ndarray | None
    visible: np.ndarray
    visible_fraction: float
    bbox: tuple[float, float, float, float] | None


# ---------------------------------------------------------------------------------------------------------------
# Geometry


def photo_shape(rng: np.random.Generator, long_side: int) -> tuple[int, int]:
    """(height, width) of a photo with a random common aspect ratio and the given long side."""
    a, b = ASPECTS[int(rng.choice(len(ASPECTS), p=np.asarray(ASPECT_WEIGHTS)))]
    short = max(16, round(long_side * min(a, b) / max(a, b)))
    return (short, long_side) if a >= b else (long_side, short)


def viewpoint_homography(
    facet_size: int,
    photo_hw: tuple[int, int],
    *,
    scale: float,
    centre: tuple[float, float],
    tilt: tuple[float, float],
    squeeze: float,
    angle: float,
) -> np.ndarray:
    """Homography (3, 3) float64 from facet pixels to photo pixels.

    The facet is normalised to [-1, 1]^2, given a projective tilt (``w = 1 + tx*u + ty*v``: the side towards
    positive ``tx`` recedes) and a horizontal foreshortening ``squeeze``, rotated in-plane by ``angle`` radians,
    scaled so its half-side is ``scale * min(H, W) / 2`` photo pixels and centred at ``centre`` = (x, y).
    """
    h, w = photo_hw
    to_unit = np.array([[2.0 / facet_size, 0.0, -1.0], [0.0, 2.0 / facet_size, -1.0], [0.0, 0.0, 1.0]])
    project = np.array([[squeeze, 0.0, 0.0], [0.0, 1.0, 0.0], [tilt[0], tilt[1], 1.0]])
    s = scale * min(h, w) / 2.0
    c, sn = math.cos(angle), math.sin(angle)
    place = np.array([[s * c, -s * sn, centre[0]], [s * sn, s * c, centre[1]], [0.0, 0.0, 1.0]])
    return place @ project @ to_unit


def project_points(homography: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map (N, 2) points through a (3, 3) homography; returns (N, 2) float64."""
    pts = np.asarray(points, dtype=np.float64)
    hom = np.concatenate([pts, np.ones((len(pts), 1))], axis=1) @ homography.T
    return hom[:, :2] / hom[:, 2:3]


def facet_quad(homography: np.ndarray, facet_size: int) -> np.ndarray:
    """The facet's four corners in the photo, (4, 2) float64 in order TL, TR, BR, BL."""
    s = float(facet_size)
    return project_points(homography, np.array([[0.0, 0.0], [s, 0.0], [s, s], [0.0, s]]))


def polygon_area(poly: np.ndarray) -> float:
    """Area of a simple polygon (N, 2) by the shoelace formula."""
    x, y = poly[:, 0], poly[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def clip_to_frame(quad: np.ndarray, photo_hw: tuple[int, int]) -> np.ndarray | None:
    """The part of convex ``quad`` (4, 2) inside the photo frame, as a polygon (N, 2), or None if disjoint."""
    h, w = photo_hw
    frame = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    area, poly = cv2.intersectConvexConvex(quad.astype(np.float32), frame)
    if poly is None or area <= 0:
        return None
    return np.asarray(poly, np.float64).reshape(-1, 2)


def in_frame_fraction(quad: np.ndarray, photo_hw: tuple[int, int]) -> float:
    """Fraction of the projected facet area that falls inside the frame."""
    clipped = clip_to_frame(quad, photo_hw)
    total = polygon_area(quad)
    if clipped is None or total <= 0:
        return 0.0
    return min(1.0, polygon_area(clipped) / total)


def _view_params(
    rng: np.random.Generator, level: str, photo_hw: tuple[int, int]
) -> tuple[dict[str, float], str]:
    h, w = photo_hw
    if level == "easy":
        mode = "easy"
        p = {
            "scale": rng.uniform(0.6, 1.0),
            "cx": w * (0.5 + rng.uniform(-0.12, 0.12)),
            "cy": h * (0.5 + rng.uniform(-0.1, 0.1)),
            "tx": rng.uniform(-0.25, 0.25),
            "ty": rng.uniform(-0.12, 0.12),
            "squeeze": rng.uniform(0.8, 1.0),
            "angle": math.radians(float(np.clip(rng.normal(0, 3), -8, 8))),
        }
    elif level == "hard":
        mode = str(rng.choice(["oblique", "zoom", "far"], p=[0.5, 0.3, 0.2]))
        sign = 1.0 if rng.random() < 0.5 else -1.0
        scale = {
            "oblique": rng.uniform(0.6, 1.0),
            "zoom": rng.uniform(1.2, 1.7),
            "far": rng.uniform(0.45, 0.6),
        }[mode]
        spread = 0.45 if mode == "zoom" else 0.18
        p = {
            "scale": scale,
            "cx": w * (0.5 + rng.uniform(-spread, spread)),
            "cy": h * (0.5 + rng.uniform(-spread, spread)),
            "tx": sign * rng.uniform(0.25, 0.5) if mode == "oblique" else rng.uniform(-0.3, 0.3),
            "ty": rng.uniform(-0.25, 0.25),
            "squeeze": rng.uniform(0.5, 0.8) if mode == "oblique" else rng.uniform(0.65, 1.0),
            "angle": math.radians(float(np.clip(rng.normal(0, 10), -25, 25))),
        }
    elif level == "junk":
        mode = str(rng.choice(["tiny", "edge"]))
        far_off = rng.uniform(0.45, 0.8)
        side = int(rng.integers(4))
        cx = {0: -far_off * w * 0.5, 1: w * (1 + far_off * 0.5)}.get(side, w * rng.uniform(0.1, 0.9))
        cy = {2: -far_off * h * 0.5, 3: h * (1 + far_off * 0.5)}.get(side, h * rng.uniform(0.1, 0.9))
        p = {
            "scale": rng.uniform(0.07, 0.13) if mode == "tiny" else rng.uniform(0.6, 1.2),
            "cx": w * rng.uniform(0.15, 0.85) if mode == "tiny" else cx,
            "cy": h * rng.uniform(0.15, 0.85) if mode == "tiny" else cy,
            "tx": rng.uniform(-0.4, 0.4),
            "ty": rng.uniform(-0.2, 0.2),
            "squeeze": rng.uniform(0.6, 1.0),
            "angle": math.radians(float(np.clip(rng.normal(0, 10), -25, 25))),
        }
    else:
        raise InputError(f"unknown view level {level!r}; expected one of {LEVELS}")
    return {k: float(v) for k, v in p.items()}, mode


def _view_ok(mode: str, frac: float) -> bool:
    bounds = {
        "easy": (0.85, 1.0),
        "oblique": (0.5, 1.0),
        "zoom": (0.4, 0.8),
        "far": (0.9, 1.0),
        "tiny": (0.9, 1.0),
        "edge": (0.02, 0.12),
    }
    lo, hi = bounds[mode]
    return lo <= frac <= hi


def sample_viewpoint(
    rng: np.random.Generator, level: str, facet_size: int, photo_hw: tuple[int, int], tries: int = 64
) -> np.ndarray:
    """Draw a camera for ``level`` (see module docstring); returns the (3, 3) facet-to-photo homography.

    Draws are rejected until the in-frame fraction suits the level (after ``tries`` the last draw is kept).
    """
    homography = np.eye(3)
    for _ in range(tries):
        p, mode = _view_params(rng, level, photo_hw)
        homography = viewpoint_homography(
            facet_size,
            photo_hw,
            scale=p["scale"],
            centre=(p["cx"], p["cy"]),
            tilt=(p["tx"], p["ty"]),
            squeeze=p["squeeze"],
            angle=p["angle"],
        )
        if _view_ok(mode, in_frame_fraction(facet_quad(homography, facet_size), photo_hw)):
            break
    return homography


def local_scale(homography: np.ndarray, point: tuple[float, float]) -> float:
    """Linear magnification of ``homography`` at facet ``point``: sqrt(|det Jacobian|)."""
    x, y = point
    pts = project_points(homography, np.array([[x, y], [x + 1.0, y], [x, y + 1.0]]))
    jac = np.stack([pts[1] - pts[0], pts[2] - pts[0]], axis=1)
    return math.sqrt(abs(float(np.linalg.det(jac))))


# ---------------------------------------------------------------------------------------------------------------
# Facet warping


def facet_pyramid(facet: np.ndarray, min_side: int = 32) -> tuple[np.ndarray, ...]:
    """RGBA Gaussian pyramid of an RGB facet (H, W, 3) uint8: level k has (H / 2**k, W / 2**k, 4), alpha 255.

    Warping from the level that matches the photo scale avoids aliasing when the facet is shrunk.
    """
    alpha = np.full((*facet.shape[:2], 1), 255, np.uint8)
    levels = [np.concatenate([facet, alpha], axis=2)]
    while min(levels[-1].shape[:2]) // 2 >= min_side:
        levels.append(cv2.pyrDown(levels[-1]))
    return tuple(levels)


def warp_facet(
    pyramid: Sequence[np.ndarray], homography: np.ndarray, photo_hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Warp the facet into the photo frame from the best pyramid level.

    Returns:
        rgb: (H, W, 3) float32 in [0, 1]; alpha: (H, W) float32 coverage in [0, 1].
    """
    h, w = photo_hw
    size = pyramid[0].shape[0]
    scale = local_scale(homography, (size / 2.0, size / 2.0))
    level = 0 if scale >= 1.0 else min(len(pyramid) - 1, math.floor(math.log2(1.0 / scale)))
    # pyrDown centres level-k pixel i on level-0 pixel 2**k * i.
    lift = np.diag([2.0**level, 2.0**level, 1.0])
    out = cv2.warpPerspective(
        pyramid[level],
        homography @ lift,
        (w, h),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    out = out.astype(np.float32) / 255.0
    return out[..., :3], out[..., 3]


# ---------------------------------------------------------------------------------------------------------------
# Scene


def background(rng: np.random.Generator, photo_hw: tuple[int, int]) -> tuple[np.ndarray, int]:
    """Sky with clouds, ground, and generic (non-landmark) buildings on the horizon.

    Returns:
        (H, W, 3) uint8 RGB image and the horizon row.
    """
    h, w = photo_hw
    horizon = int(h * rng.uniform(0.45, 0.8))
    top, bottom = (np.asarray(c) for c in _SKIES[int(rng.integers(len(_SKIES)))])
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    img = (1 - t) * jitter(rng, top, 0.08).astype(np.float32) + t * jitter(rng, bottom, 0.05).astype(
        np.float32
    )
    img = np.broadcast_to(img, (h, w, 3)).copy()
    clouds = np.clip(value_noise(rng, h, w, cells=3, octaves=4) * 1.5 - rng.uniform(0.0, 1.0), 0.0, 1.0)
    img += (0.95 - img) * (0.8 * clouds[..., None])
    ground = jitter(rng, _GROUNDS[int(rng.integers(len(_GROUNDS)))], 0.1)
    tex = 1.0 + 0.15 * value_noise(rng, h - horizon, w, cells=8, octaves=4)
    img[horizon:] = ground.astype(np.float32)[None, None, :] * tex[..., None]
    out = np.clip(img * 255.0, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(0, 5))):
        generic_building(out, rng, horizon)
    return out, horizon


def generic_building(img: np.ndarray, rng: np.random.Generator, base_y: int) -> None:
    """A plain box building standing on row ``base_y``: wall, a regular window grid, a roof. Not a landmark:
    drawn fresh for every photo, so it never repeats across photos."""
    h, w = img.shape[:2]
    bw = int(w * rng.uniform(0.1, 0.35))
    bh = int(h * rng.uniform(0.1, 0.55))
    x0 = int(rng.uniform(-0.1, 1.0) * w)
    y0 = base_y - bh
    wall_c = jitter(rng, pick(rng, MATERIALS), 0.12)
    cv2.rectangle(img, (x0, y0), (x0 + bw, base_y), rgb(wall_c), -1)
    rows, cols = int(rng.integers(2, 9)), int(rng.integers(2, 7))
    glass = jitter(rng, (0.2, 0.24, 0.3), 0.2)
    for r in range(rows):
        for c in range(cols):
            wx = x0 + int((c + 0.25) * bw / cols)
            wy = y0 + int((r + 0.25) * bh / rows)
            cv2.rectangle(
                img,
                (wx, wy),
                (wx + max(1, int(0.5 * bw / cols)), wy + max(1, int(0.5 * bh / rows))),
                rgb(glass),
                -1,
            )
    if rng.random() < 0.5:
        roof = np.array(
            [(x0, y0), (x0 + bw, y0), (x0 + bw // 2, y0 - int(bh * rng.uniform(0.1, 0.3)))], np.int32
        )
        cv2.fillConvexPoly(img, roof, rgb(jitter(rng, (0.45, 0.25, 0.2), 0.2)), cv2.LINE_AA)
    else:
        cv2.rectangle(img, (x0 - 2, y0 - max(2, bh // 30)), (x0 + bw + 2, y0), rgb(wall_c * 0.7), -1)


# Occluders are lists of primitives so the same shapes can be painted into the image and into the mask.
Primitive = tuple[str, np.ndarray, int, tuple[int, int, int]]


def _person(rng: np.random.Generator, x: float, feet: float, height: float) -> list[Primitive]:
    skin = rgb(jitter(rng, (0.85, 0.65, 0.5), 0.25))
    shirt = rgb(jitter(rng, pick(rng, ACCENTS), 0.2))
    legs = rgb(jitter(rng, (0.15, 0.15, 0.25), 0.3))
    r = height / 14
    head = np.array([[x, feet - height + r]])
    torso = np.array(
        [
            (x - 0.13 * height, feet - 0.82 * height),
            (x + 0.13 * height, feet - 0.82 * height),
            (x + 0.11 * height, feet - 0.45 * height),
            (x - 0.11 * height, feet - 0.45 * height),
        ]
    )
    lw = max(1, int(height * 0.07))
    prims: list[Primitive] = [("poly", torso, 0, shirt), ("circle", head, int(r), skin)]
    for side in (-1, 1):
        leg = np.array([(x + side * 0.06 * height, feet - 0.46 * height), (x + side * 0.08 * height, feet)])
        arm = np.array(
            [
                (x + side * 0.13 * height, feet - 0.8 * height),
                (x + side * rng.uniform(0.15, 0.3) * height, feet - rng.uniform(0.45, 0.7) * height),
            ]
        )
        prims += [("line", leg, lw, legs), ("line", arm, max(1, lw * 2 // 3), shirt)]
    return prims


def _tree(rng: np.random.Generator, x: float, base: float, height: float) -> list[Primitive]:
    trunk = rgb(jitter(rng, (0.35, 0.25, 0.15), 0.2))
    leaves = jitter(rng, (0.22, 0.42, 0.18), 0.15)
    tw = height * 0.05
    prims: list[Primitive] = [
        (
            "poly",
            np.array(
                [
                    (x - tw, base),
                    (x + tw, base),
                    (x + tw * 0.7, base - 0.6 * height),
                    (x - tw * 0.7, base - 0.6 * height),
                ]
            ),
            0,
            trunk,
        )
    ]
    for _ in range(int(rng.integers(4, 10))):
        cx = x + rng.uniform(-0.22, 0.22) * height
        cy = base - height * rng.uniform(0.55, 0.9)
        prims.append(
            (
                "circle",
                np.array([[cx, cy]]),
                int(height * rng.uniform(0.1, 0.22)),
                rgb(jitter(rng, leaves, 0.15)),
            )
        )
    return prims


def _car(rng: np.random.Generator, x: float, base: float, length: float) -> list[Primitive]:
    body = rgb(jitter(rng, pick(rng, ACCENTS), 0.2))
    glass = rgb(jitter(rng, (0.2, 0.25, 0.3), 0.2))
    hgt = length * 0.28
    prims: list[Primitive] = [
        (
            "poly",
            np.array(
                [
                    (x, base - 0.2 * hgt),
                    (x + length, base - 0.2 * hgt),
                    (x + length, base - hgt),
                    (x, base - hgt),
                ]
            ),
            0,
            body,
        ),
        (
            "poly",
            np.array(
                [
                    (x + 0.2 * length, base - hgt),
                    (x + 0.75 * length, base - hgt),
                    (x + 0.65 * length, base - 1.7 * hgt),
                    (x + 0.3 * length, base - 1.7 * hgt),
                ]
            ),
            0,
            glass,
        ),
    ]
    for wx in (0.2, 0.8):
        prims.append(
            ("circle", np.array([[x + wx * length, base - 0.2 * hgt]]), int(hgt * 0.35), (20, 20, 20))
        )
    return prims


def _pole(rng: np.random.Generator, x: float, base: float, height: float) -> list[Primitive]:
    c = rgb(jitter(rng, (0.2, 0.22, 0.2), 0.2))
    prims: list[Primitive] = [
        ("line", np.array([(x, base), (x, base - height)]), max(1, int(height * 0.025)), c)
    ]
    if rng.random() < 0.5:
        prims.append(
            ("circle", np.array([[x, base - height]]), max(2, int(height * 0.06)), rgb((0.95, 0.9, 0.6)))
        )
    else:
        s = height * 0.1
        plate = np.array(
            [
                (x - s, base - height),
                (x + s, base - height),
                (x + s, base - height + 1.2 * s),
                (x - s, base - height + 1.2 * s),
            ]
        )
        prims.append(("poly", plate, 0, rgb(jitter(rng, pick(rng, ACCENTS), 0.1))))
    return prims


def _occluder(rng: np.random.Generator, x: float, base: float, size: float, kind: str) -> list[Primitive]:
    if kind == "person":
        return _person(rng, x, base, size)
    if kind == "tree":
        return _tree(rng, x, base, size)
    if kind == "car":
        return _car(rng, x - size / 2, base, size)
    return _pole(rng, x, base, size)


def paint(img: np.ndarray, mask: np.ndarray, prims: Sequence[Primitive]) -> None:
    """Draw primitives into ``img`` (H, W, 3) uint8 and, as 255, into ``mask`` (H, W) uint8."""
    for kind, pts, size, colour in prims:
        for canvas, c in ((img, colour), (mask, 255)):
            if kind == "poly":
                cv2.fillConvexPoly(
                    canvas, np.round(pts).astype(np.int32), c, cv2.LINE_AA if canvas is img else cv2.LINE_8
                )
            elif kind == "circle":
                centre = (round(float(pts[0, 0])), round(float(pts[0, 1])))
                cv2.circle(canvas, centre, max(1, size), c, -1, cv2.LINE_AA if canvas is img else cv2.LINE_8)
            else:
                p0 = (round(float(pts[0, 0])), round(float(pts[0, 1])))
                p1 = (round(float(pts[1, 0])), round(float(pts[1, 1])))
                cv2.line(canvas, p0, p1, c, max(1, size))


def occluders(
    rng: np.random.Generator,
    photo_hw: tuple[int, int],
    horizon: int,
    level: str,
    target: np.ndarray | None,
) -> list[Primitive]:
    """People, trees, cars and poles in front of the scene.

    Args:
        level: ``easy`` (0-2 small), ``hard`` (2-5, one large over the facet), ``junk`` or ``clutter``.
        target: (N, 2) polygon of the facet inside the frame; hard views put a large occluder over it.
    """
    h, w = photo_hw
    counts = {"easy": (0, 3), "hard": (2, 6), "junk": (0, 4), "clutter": (2, 8)}[level]
    kinds = ("person", "tree", "car", "pole")
    prims: list[Primitive] = []
    for _ in range(int(rng.integers(*counts))):
        kind = str(rng.choice(kinds, p=[0.45, 0.2, 0.2, 0.15]))
        base = rng.uniform(horizon, h * 1.05)
        depth = (base - horizon) / max(1.0, h - horizon)  # 0 at the horizon, 1 at the bottom edge
        rel = {"person": 0.12, "tree": 0.3, "car": 0.25, "pole": 0.3}[kind]
        small = 0.6 if level == "easy" else 1.0
        size = h * rel * (0.5 + 1.2 * depth) * small * rng.uniform(0.7, 1.3)
        prims += _occluder(rng, rng.uniform(0, w), base, size, kind)
    if level == "hard" and target is not None and len(target) >= 3 and rng.random() < BIG_OCCLUDER_SHARE:
        # One big occluder standing in front of the facet: a tree or a person close to the camera.
        lo, hi = target.min(axis=0), target.max(axis=0)
        x = rng.uniform(lo[0], hi[0])
        extent = float(hi[1] - lo[1])
        kind = str(rng.choice(["tree", "person"]))
        size = extent * rng.uniform(0.5, 0.9) if kind == "tree" else extent * rng.uniform(0.4, 0.75)
        base = min(h * 1.1, hi[1] + rng.uniform(0.0, 0.3) * extent)
        prims += _occluder(rng, x, base, size, kind)
    return prims


# ---------------------------------------------------------------------------------------------------------------
# Light, lens, JPEG


def tone_curve(rng: np.random.Generator, strength: float) -> np.ndarray:
    """A per-channel camera response: white balance, gamma, contrast and brightness, as a (1, 256, 3) uint8 LUT."""
    v = np.linspace(0.0, 1.0, 256)[:, None]
    out = np.clip(v * np.exp(rng.normal(0.0, 0.05 * strength, 3))[None, :], 0.0, 1.0)
    out = out ** math.exp(rng.normal(0.0, 0.12 * strength))
    out = (out - 0.5) * math.exp(rng.normal(0.0, 0.08 * strength)) + 0.5 + rng.normal(0.0, 0.04 * strength)
    return np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)[None, :, :]


def photometric(rng: np.random.Generator, img: np.ndarray, strength: float) -> np.ndarray:
    """Camera response (:func:`tone_curve`), a shading ramp, an optional cast shadow, blur and sensor noise.

    Args:
        img: (H, W, 3) uint8 RGB.
        strength: 1 for mild changes, ~2 for strong ones.

    Returns:
        (H, W, 3) uint8 RGB.
    """
    h, w = img.shape[:2]
    toned = cv2.LUT(img, tone_curve(rng, strength))
    a = rng.uniform(0, 2 * math.pi)
    amount = rng.uniform(0.0, 0.25) * strength
    xs = (np.linspace(-0.5, 0.5, w, dtype=np.float32) * np.float32(math.cos(a) * amount))[None, :]
    ys = (np.linspace(-0.5, 0.5, h, dtype=np.float32) * np.float32(math.sin(a) * amount))[:, None]
    light = np.float32(1.0) + xs + ys
    if rng.random() < 0.25 * strength:  # a cast shadow across part of the scene
        pts = np.array(
            [(rng.uniform(-0.2, 1.2) * w, rng.uniform(-0.2, 1.2) * h) for _ in range(4)], np.float32
        )
        shadow = np.zeros((h, w), np.uint8)
        cv2.fillConvexPoly(shadow, cv2.convexHull(pts).astype(np.int32), 255)
        soft = cv2.GaussianBlur(shadow, (0, 0), 3).astype(np.float32) * np.float32(
            rng.uniform(0.2, 0.45) / 255.0
        )
        light = light * (np.float32(1.0) - soft)
    out = toned.astype(np.float32) * light[..., None]
    sigma = rng.uniform(0.0, 0.7) * strength
    if sigma > 0.3:
        out = np.asarray(cv2.GaussianBlur(out, (0, 0), sigma), np.float32)
    # Sensor noise, shared by the channels (luma noise dominates in JPEG photos and costs a third).
    out += np.float32(rng.uniform(0.8, 3.0)) * rng.standard_normal((h, w, 1), dtype=np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """JPEG bytes of an (H, W, 3) uint8 RGB image."""
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    )
    if not ok:
        raise RuntimeError("OpenCV failed to encode a JPEG")
    return buf.tobytes()


# ---------------------------------------------------------------------------------------------------------------
# One photo


def render_photo(
    rng: np.random.Generator,
    pyramid: Sequence[np.ndarray] | None,
    level: str,
    long_side: int,
    jpeg_quality: tuple[int, int],
) -> RenderedPhoto:
    """Render one photo.

    Args:
        rng: this photo's own generator.
        pyramid: the facet's RGBA pyramid (:func:`facet_pyramid`), or None for a scene without a main subject.
        level: ``easy``, ``hard`` or ``junk`` (the viewpoint; ignored without a facet).
        long_side: photo long side in pixels.
        jpeg_quality: inclusive range the JPEG quality is drawn from.

    Returns:
        The photo with its ground truth (see :class:`RenderedPhoto`).
    """
    if level not in LEVELS:
        raise InputError(f"unknown view level {level!r}; expected one of {LEVELS}")
    hw = photo_shape(rng, long_side)
    h = hw[0]
    img, horizon = background(rng, hw)
    homography: np.ndarray | None = None
    alpha = np.zeros(hw, np.float32)
    target: np.ndarray | None = None
    if pyramid is not None:
        size = pyramid[0].shape[0]
        homography = sample_viewpoint(rng, level, size, hw)
        colour, alpha = warp_facet(pyramid, homography, hw)
        blend = img.astype(np.float32) / 255.0 * (1.0 - alpha[..., None]) + colour * alpha[..., None]
        img = np.clip(blend * 255.0 + 0.5, 0, 255).astype(np.uint8)
        target = clip_to_frame(facet_quad(homography, size), hw)
    else:
        for _ in range(int(rng.integers(2, 6))):
            generic_building(img, rng, int(horizon + rng.uniform(0.0, 0.3) * (h - horizon)))
    occ = np.zeros(hw, np.uint8)
    paint(img, occ, occluders(rng, hw, horizon, level if pyramid is not None else "clutter", target))
    strength = 1.0 if level == "easy" else HARD_LIGHT
    image = photometric(rng, img, strength)
    quality = int(rng.integers(jpeg_quality[0], jpeg_quality[1] + 1))
    visible = (alpha > 0.5) & (occ == 0)
    visible_fraction = 0.0
    bbox: tuple[float, float, float, float] | None = None
    if homography is not None:
        size = pyramid[0].shape[0] if pyramid is not None else 0
        total = polygon_area(facet_quad(homography, size))
        visible_fraction = min(1.0, float(visible.sum()) / total) if total > 0 else 0.0
        if target is not None:
            lo = np.clip(target.min(axis=0), 0.0, None)
            hi = np.minimum(target.max(axis=0), (float(hw[1]), float(hw[0])))
            bbox = (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))
    return RenderedPhoto(
        image=image,
        jpeg=encode_jpeg(image, quality),
        quality=quality,
        homography=homography,
        visible=visible,
        visible_fraction=visible_fraction,
        bbox=bbox,
    )


def view_difficulty(visible_fraction: float, visible_pixels: int, photo_pixels: int, planned: str) -> str:
    """Measured difficulty of a rendered view: ``junk`` if barely visible, ``hard`` if planned hard or mostly
    hidden, else ``easy``."""
    if visible_fraction < JUNK_VISIBLE or visible_pixels < JUNK_AREA * photo_pixels:
        return "junk"
    if planned != "easy" or visible_fraction < EASY_VISIBLE:
        return "hard"
    return "easy"
