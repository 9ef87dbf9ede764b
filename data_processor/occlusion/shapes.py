"""Random shapes with an area ratio (MSML-style block / ellipse / polygon) and GFRO's eye/mouth boxes.

Shapes are placed in image coordinates: anywhere in the image (``anchor="random"``) or centred near a random
landmark (``anchor="landmark"``). ``area_ratio`` is a ``(low, high)`` range of the fraction of the image covered
(before clipping at the border). Fill: ``colour`` (random solid), ``texture``, one of the fill modes
(zero, mean, noise, blur, white) or ``random`` (one of colour / texture / zero / white / noise).
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

from data_processor.occlusion.base import OCCLUDERS, composite
from data_processor.occlusion.fills import FILL_MODES, fill_image
from data_processor.occlusion.geometry import ellipse_points, fill_polygon
from data_processor.occlusion.textures import make_texture, pick_colour

Result = Tuple[np.ndarray, np.ndarray]
SHAPE_FILLS = ("colour", "texture") + FILL_MODES
RANDOM_SHAPE_FILLS = ("colour", "texture", "zero", "white", "noise")
ANCHORS = ("random", "landmark")
# GFRO release (ImageDataset_Crop): fixed template points and 10 px padding, for 112×112 images.
GFRO_TEMPLATE = np.array([[45, 44], [67, 44], [56, 62], [41, 78], [71, 78]], dtype=np.float64)
GFRO_PADDING = 10.0


def _shape_paint(image: np.ndarray, fill: str, rng: np.random.Generator) -> np.ndarray:
    if fill == "random":
        fill = RANDOM_SHAPE_FILLS[int(rng.integers(len(RANDOM_SHAPE_FILLS)))]
    if fill == "colour":
        return make_texture(rng, image.shape[0], image.shape[1], pick_colour(rng, None), "solid")
    if fill == "texture":
        return make_texture(rng, image.shape[0], image.shape[1], pick_colour(rng, None), None)
    if fill not in FILL_MODES:
        raise ValueError(f"fill must be one of {SHAPE_FILLS} or 'random', got {fill!r}")
    return fill_image(image, fill, rng)


def _check_range(name: str, value: Sequence[float], low: float, high: float) -> Tuple[float, float]:
    if len(value) != 2 or not (low <= value[0] <= value[1] <= high):
        raise ValueError(f"{name} must be (low, high) with {low} <= low <= high <= {high}, got {tuple(value)}")
    return float(value[0]), float(value[1])


def _centre(rng: np.random.Generator, landmarks: np.ndarray, anchor: str, half_extent: np.ndarray,
            shape: Tuple[int, int]) -> np.ndarray:
    """Shape centre: uniform so the shape fits in the image when it can, or near a random landmark."""
    size = np.array([shape[1], shape[0]], dtype=np.float64)
    if anchor == "landmark":
        return landmarks[int(rng.integers(5))] + rng.normal(0.0, 0.04 * size.mean(), size=2)
    if anchor != "random":
        raise ValueError(f"anchor must be one of {ANCHORS}, got {anchor!r}")
    low = np.minimum(half_extent, size / 2)
    high = np.maximum(size - half_extent, size / 2)
    return rng.uniform(low, high)


def _area_and_aspect(rng: np.random.Generator, shape: Tuple[int, int], area_ratio: Sequence[float],
                     aspect: Sequence[float]) -> Tuple[float, float]:
    low, high = _check_range("area_ratio", area_ratio, 0.0, 1.0)
    aspect_low, aspect_high = _check_range("aspect", aspect, 1e-3, 1e3)
    area = rng.uniform(low, high) * shape[0] * shape[1]
    return area, float(np.exp(rng.uniform(np.log(aspect_low), np.log(aspect_high))))


def _paint_rectangle(image: np.ndarray, left: float, top: float, right: float, bottom: float, fill: str,
                     rng: np.random.Generator) -> Result:
    """Hide the pixels whose centres lie in [left, right) × [top, bottom) (pixel centres at integer coordinates)."""
    height, width = image.shape[:2]
    c0, c1 = (int(np.clip(np.ceil(v), 0, width)) for v in (left, right))
    r0, r1 = (int(np.clip(np.ceil(v), 0, height)) for v in (top, bottom))
    hidden = np.zeros((height, width), dtype=bool)
    hidden[r0:r1, c0:c1] = True
    return composite(image, hidden, _shape_paint(image, fill, rng))


def _paint_polygon(image: np.ndarray, points: np.ndarray, fill: str, rng: np.random.Generator) -> Result:
    hidden = np.zeros(image.shape[:2], dtype=np.uint8)
    fill_polygon(hidden, points)
    return composite(image, hidden, _shape_paint(image, fill, rng))


@OCCLUDERS.register("block")
def block(image: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator,
          area_ratio: Sequence[float] = (0.05, 0.35), aspect: Sequence[float] = (0.5, 2.0), fill: str = "random",
          anchor: str = "random") -> Result:
    """Axis-aligned rectangle (MSML RandomRect: area 0-35 %, random aspect; square block: ``aspect=(1, 1)``)."""
    area, ratio = _area_and_aspect(rng, image.shape[:2], area_ratio, aspect)
    width = min(np.sqrt(area * ratio), image.shape[1])
    height = min(area / max(width, 1e-6), image.shape[0])
    centre = _centre(rng, landmarks, anchor, np.array([width, height]) / 2, image.shape[:2])
    return _paint_rectangle(image, centre[0] - width / 2, centre[1] - height / 2, centre[0] + width / 2,
                            centre[1] + height / 2, fill, rng)


@OCCLUDERS.register("ellipse")
def ellipse(image: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator,
            area_ratio: Sequence[float] = (0.2, 0.4), aspect: Sequence[float] = (0.5, 2.0), fill: str = "random",
            anchor: str = "random") -> Result:
    """Rotated ellipse (MSML RandomEllipse: area 20-40 %)."""
    area, ratio = _area_and_aspect(rng, image.shape[:2], area_ratio, aspect)
    semi_x = np.sqrt(area * ratio / np.pi)
    semi_y = area / (np.pi * max(semi_x, 1e-6))
    angle = rng.uniform(0.0, 180.0)
    rad = np.deg2rad(angle)
    half_extent = np.array([np.hypot(semi_x * np.cos(rad), semi_y * np.sin(rad)),
                            np.hypot(semi_x * np.sin(rad), semi_y * np.cos(rad))])
    centre = _centre(rng, landmarks, anchor, half_extent, image.shape[:2])
    return _paint_polygon(image, ellipse_points(centre, (semi_x, semi_y), angle, count=48), fill, rng)


@OCCLUDERS.register("polygon")
def polygon(image: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator,
            area_ratio: Sequence[float] = (0.1, 0.3), vertices: Sequence[int] = (4, 10), fill: str = "random",
            anchor: str = "random") -> Result:
    """Random star-shaped polygon (MSML RandomConnectedPolygon: 4-10 points between two radii), scaled to the
    drawn area ratio."""
    if len(vertices) != 2 or not 3 <= int(vertices[0]) <= int(vertices[1]):
        raise ValueError(f"vertices must be (low, high) with 3 <= low <= high, got {tuple(vertices)}")
    area, _ = _area_and_aspect(rng, image.shape[:2], area_ratio, (1.0, 1.0))
    count = int(rng.integers(int(vertices[0]), int(vertices[1]) + 1))
    # Evenly spread angles (jittered) keep the polygon star-shaped around its centre, never a thin sliver.
    angles = (np.arange(count) + rng.uniform(-0.35, 0.35, size=count)) * (2 * np.pi / count) + rng.uniform(0, 2 * np.pi)
    radii = rng.uniform(0.5, 1.0, size=count)
    points = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    points -= (points.min(axis=0) + points.max(axis=0)) / 2
    x, y = points[:, 0], points[:, 1]
    unit_area = 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))
    points = points * np.sqrt(area / max(unit_area, 1e-6))
    half_extent = np.abs(points).max(axis=0)
    centre = _centre(rng, landmarks, anchor, half_extent, image.shape[:2])
    return _paint_polygon(image, points + centre, fill, rng)


@OCCLUDERS.register("gfro_box")
def gfro_box(image: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator, region: str = "random",
             placement: str = "landmarks", fill: str = "white") -> Result:
    """GFRO release's eye or mouth box: centred between the two points, half-size 0.4·|dx| × 0.2·|dy| plus 10 px
    (scaled to the image width). ``placement="release"`` uses the release's fixed template points as it did;
    ``"landmarks"`` uses this image's landmarks. ``region``: eyes | mouth | random (0.5 / 0.5 as released)."""
    if region == "random":
        region = ("eyes", "mouth")[int(rng.integers(2))]
    pairs = {"eyes": (0, 1), "mouth": (3, 4)}
    if region not in pairs:
        raise ValueError(f"region must be eyes, mouth or random, got {region!r}")
    scale = np.array([image.shape[1] / 112.0, image.shape[0] / 112.0])
    if placement == "release":
        points = GFRO_TEMPLATE * scale
    elif placement == "landmarks":
        points = landmarks
    else:
        raise ValueError(f"placement must be 'landmarks' or 'release', got {placement!r}")
    first, second = points[pairs[region][0]], points[pairs[region][1]]
    centre = (first + second) / 2
    half = np.floor(np.abs(second - first) * np.array([0.4, 0.2])) + GFRO_PADDING * scale
    return _paint_rectangle(image, centre[0] - half[0], centre[1] - half[1], centre[0] + half[0],
                            centre[1] + half[1], fill, rng)
