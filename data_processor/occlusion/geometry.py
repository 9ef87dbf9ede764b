"""Face geometry for occluders: the affine map from the ArcFace 112×112 template to an image's own landmarks,
random placement jitter, point transforms and polygon rasterisation.

Drawn occluders are designed once in *template* coordinates (eyes at y≈51.6, nose (56.0, 71.7), mouth corners at
y≈92.3) and mapped onto each image through the least-squares affine fit of the template's 5 points to the image's
5 landmarks — so they follow the face's position, size, roll and (roughly) yaw.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence, Tuple, Union

import cv2
import numpy as np

from data_processor.landmarks import ARCFACE_TEMPLATE_112

TEMPLATE = ARCFACE_TEMPLATE_112.astype(np.float64)
SUBPIXEL_BITS = 4  # cv2 fixed-point drawing: coordinates are multiplied by 2**4


_TEMPLATE_PSEUDO_INVERSE = np.linalg.pinv(np.hstack([TEMPLATE, np.ones((5, 1))]))  # 3×5, fixed


def template_to_image(landmarks: np.ndarray) -> np.ndarray:
    """Least-squares 2×3 affine matrix mapping the ArcFace template points onto ``landmarks``."""
    matrix = (_TEMPLATE_PSEUDO_INVERSE @ np.asarray(landmarks, dtype=np.float64)).T
    determinant = matrix[0, 0] * matrix[1, 1] - matrix[0, 1] * matrix[1, 0]
    if abs(determinant) < 1e-4:
        raise ValueError(f"landmarks are degenerate (collinear or coincident), cannot place an occluder: "
                         f"{np.round(landmarks, 2).tolist()}")
    return matrix


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(matrix.astype(np.float64))


def affine_scale(matrix: np.ndarray) -> float:
    """Mean linear scale of a 2×3 affine map (sqrt of the determinant of its linear part)."""
    return float(np.sqrt(abs(matrix[0, 0] * matrix[1, 1] - matrix[0, 1] * matrix[1, 0])))


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """2×3 affine ``outer ∘ inner``."""
    return (np.vstack([outer, [0.0, 0.0, 1.0]]) @ np.vstack([inner, [0.0, 0.0, 1.0]]))[:2]


def jitter_matrix(rng: np.random.Generator, centre: Sequence[float], scale_range: Sequence[float],
                  rotation_deg: float, shift: float) -> np.ndarray:
    """Random similarity about ``centre``: scale in ``scale_range``, rotation in ±``rotation_deg``, shift in
    ±``shift`` (same units as ``centre``) along each axis."""
    scale = rng.uniform(float(scale_range[0]), float(scale_range[1]))
    angle = np.deg2rad(rng.uniform(-rotation_deg, rotation_deg))
    offset = rng.uniform(-shift, shift, size=2)
    cos, sin = scale * np.cos(angle), scale * np.sin(angle)
    linear = np.array([[cos, -sin], [sin, cos]])
    centre = np.asarray(centre, dtype=np.float64)
    translation = centre - linear @ centre + offset
    return np.hstack([linear, translation[:, None]])


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return points @ matrix[:, :2].T + matrix[:, 2]


def ellipse_points(centre: Sequence[float], axes: Sequence[float], angle_deg: float = 0.0,
                   start_deg: float = 0.0, end_deg: float = 360.0, count: int = 40) -> np.ndarray:
    """Points on an ellipse (or an arc of it), as an ``N×2`` float array."""
    closed = (end_deg - start_deg) >= 360.0
    theta = np.deg2rad(np.linspace(start_deg, end_deg, count, endpoint=not closed))
    local = np.stack([axes[0] * np.cos(theta), axes[1] * np.sin(theta)], axis=1)
    rot = np.deg2rad(angle_deg)
    rotation = np.array([[np.cos(rot), -np.sin(rot)], [np.sin(rot), np.cos(rot)]])
    return local @ rotation.T + np.asarray(centre, dtype=np.float64)


def rounded_rect_points(centre: Sequence[float], half_size: Sequence[float], radius: float,
                        count_per_corner: int = 6) -> np.ndarray:
    """Closed outline of an axis-aligned rounded rectangle."""
    cx, cy = centre
    hw, hh = half_size
    radius = min(radius, hw, hh)
    corners = [(cx + hw - radius, cy + hh - radius, 0), (cx - hw + radius, cy + hh - radius, 90),
               (cx - hw + radius, cy - hh + radius, 180), (cx + hw - radius, cy - hh + radius, 270)]
    arcs = [ellipse_points((x, y), (radius, radius), 0.0, start, start + 90, count_per_corner)
            for x, y, start in corners]
    return np.concatenate(arcs, axis=0)


def _fixed_point(points: np.ndarray) -> np.ndarray:
    return np.round(points * (1 << SUBPIXEL_BITS)).astype(np.int32).reshape(-1, 1, 2)


def fill_polygon(target: np.ndarray, points: np.ndarray, value: Union[int, Tuple[int, ...]] = 1) -> None:
    """Set the pixels inside the polygon ``points`` (image coordinates) of ``target`` to ``value`` (no anti-aliasing,
    so a mask drawn with the same points covers exactly the same pixels)."""
    cv2.fillPoly(target, [_fixed_point(points)], value, lineType=cv2.LINE_8, shift=SUBPIXEL_BITS)


def draw_polyline(target: np.ndarray, points: np.ndarray, thickness: float, closed: bool,
                  value: Union[int, Tuple[int, ...]] = 1) -> None:
    """Draw a polyline of the given thickness (pixels, at least 1) with ``value`` into ``target``."""
    cv2.polylines(target, [_fixed_point(points)], closed, value, thickness=max(1, int(round(thickness))),
                  lineType=cv2.LINE_8, shift=SUBPIXEL_BITS)


@lru_cache(maxsize=8)
def _pixel_grid(height: int, width: int) -> Tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ys.flags.writeable = False
    xs.flags.writeable = False
    return xs, ys


def template_coordinates(matrix: np.ndarray, shape: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray]:
    """Template-space (x, y) of every pixel of an image of ``shape`` (H, W), given template→image ``matrix``."""
    inverse = invert_affine(matrix).astype(np.float32)
    xs, ys = _pixel_grid(int(shape[0]), int(shape[1]))
    tx = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
    ty = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
    return tx, ty
