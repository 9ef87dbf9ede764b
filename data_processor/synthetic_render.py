"""Procedural 112×112 face renderer for the embedded synthetic data set (numpy + OpenCV only, no torch).

:func:`render_face` draws one photo of an :class:`~data_processor.synthetic_identity.Identity` under a
:class:`~data_processor.synthetic_identity.Nuisance` and returns its exact five landmarks (left eye, right eye, nose
tip, left and right mouth corner; image pixels, after every geometric transform). Everything is drawn as anti-aliased
polygons on a 2× supersampled canvas, then area-downsampled, so the same parameters always give the same pixels.
"""
from __future__ import annotations

import hashlib
import math
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from data_processor.image_io import encode_image

from data_processor.synthetic_identity import (BACKGROUND_KINDS, Colour, Difficulty, Identity, Nuisance, clip_colour,
                                               identity_rng, image_rng, sample_identity, sample_nuisance)

IMAGE_SIZE = 112
SUPERSAMPLE = 2
CANVAS_SIZE = IMAGE_SIZE * SUPERSAMPLE
FIXED_BITS = 4                          # sub-pixel bits of OpenCV's drawing functions
FACE_CENTRE_X = 56.0
POSE_CENTRE = np.array([56.0, 72.0])    # rotation / scale centre, close to the centroid of the ArcFace template
FACE_EDGE_DARKENING = 0.28              # how much darker the face contour is than its centre


# --------------------------------------------------------------------------------------------------- geometry
class _Pose:
    """Maps canonical frontal-face points to image points: yaw over an ellipsoidal head, then a similarity with a
    horizontal squeeze. Features keep the 5 landmarks' centroid where it was (faces stay roughly aligned)."""

    def __init__(self, identity: Identity, nuisance: Nuisance) -> None:
        self.cx = FACE_CENTRE_X
        self.a = identity.face_half_width
        self.depth = 0.7 * self.a
        yaw = math.radians(nuisance.yaw_deg)
        self.cos_yaw, self.sin_yaw = math.cos(yaw), math.sin(yaw)
        self.recentre = 0.0
        points = np.array([[self.cx - identity.eye_half_spacing, identity.eye_y],
                           [self.cx + identity.eye_half_spacing, identity.eye_y],
                           [self.cx, identity.nose_y],
                           [self.cx - identity.mouth_half_width, identity.mouth_y],
                           [self.cx + identity.mouth_half_width, identity.mouth_y]])
        lifts = np.array([0.0, 0.0, identity.nose_protrusion, 2.0, 2.0])
        self.recentre = float(np.mean(self._yaw(points, lifts)[:, 0] - points[:, 0]))
        angle = math.radians(nuisance.rotation_deg)
        rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        self.linear = nuisance.scale * rotation @ np.diag([nuisance.squeeze, 1.0])
        self.offset = POSE_CENTRE + np.array([nuisance.shift_x, nuisance.shift_y]) - self.linear @ POSE_CENTRE
        self.scale = nuisance.scale * math.sqrt(nuisance.squeeze)

    def _yaw(self, points: np.ndarray, lift: float | np.ndarray) -> np.ndarray:
        dx = points[:, 0] - self.cx
        z = self.depth * np.sqrt(np.clip(1.0 - (dx / self.a) ** 2, 0.05, 1.0)) + lift
        out = points.astype(np.float64).copy()
        out[:, 0] = self.cx + dx * self.cos_yaw + (z - self.depth) * self.sin_yaw - self.recentre
        return out

    def _affine(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        (a, b), (c, d) = self.linear
        out = np.empty((len(x), 2))
        out[:, 0] = a * x + b * y + self.offset[0]
        out[:, 1] = c * x + d * y + self.offset[1]
        return out

    def face(self, points: np.ndarray, lift: float = 0.0) -> np.ndarray:
        """Points on the face surface (``lift``: extra depth in pixels, e.g. the nose tip)."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        dx = points[:, 0] - self.cx
        z = self.depth * np.sqrt(np.clip(1.0 - (dx / self.a) ** 2, 0.05, 1.0)) + (lift - self.depth)
        return self._affine(self.cx + dx * self.cos_yaw + z * self.sin_yaw - self.recentre, points[:, 1])

    def face_many(self, shapes: Sequence[np.ndarray], lift: float = 0.0) -> List[np.ndarray]:
        """:meth:`face` for several shapes at once (one vectorised pass)."""
        return _split_like(self.face(np.concatenate(shapes), lift), shapes)

    def silhouette(self, points: np.ndarray, depth: float = 0.0) -> np.ndarray:
        """Points on the head's outline (face contour, hair mass, neck): they do not slide with yaw."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        return self._affine(points[:, 0] + (depth * self.sin_yaw - self.recentre), points[:, 1])


def _split_like(points: np.ndarray, shapes: Sequence[np.ndarray]) -> List[np.ndarray]:
    return np.split(points, np.cumsum([len(s) for s in shapes])[:-1])


def _fixed(points: np.ndarray) -> np.ndarray:
    """Image (112-pixel) coordinates → int32 fixed-point supersampled canvas coordinates for OpenCV (same shape)."""
    scale = SUPERSAMPLE * (1 << FIXED_BITS)
    offset = (SUPERSAMPLE - 1) / 2.0 * (1 << FIXED_BITS)
    return np.rint(np.asarray(points, dtype=np.float64) * scale + offset).astype(np.int32)


@lru_cache(maxsize=64)
def _arc(n: int, start: float, stop: float) -> Tuple[np.ndarray, np.ndarray]:
    t = np.linspace(start, stop, n, endpoint=stop - start < 2 * math.pi - 1e-9)
    return np.cos(t), np.sin(t)


def _ellipse(centre: Sequence[float], axes: Sequence[float], angle_deg: float = 0.0, n: int = 24,
             start: float = 0.0, stop: float = 2 * math.pi) -> np.ndarray:
    """``n`` points of an ellipse (or of its arc from ``start`` to ``stop`` radians)."""
    cos_t, sin_t = _arc(n, start, stop)
    x, y = axes[0] * cos_t, axes[1] * sin_t
    if angle_deg:
        c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
        x, y = c * x - s * y, s * x + c * y
    out = np.empty((n, 2))
    out[:, 0] = x + centre[0]
    out[:, 1] = y + centre[1]
    return out


def _shade(colour: Colour, factor: float) -> Colour:
    return clip_colour(np.asarray(colour, dtype=np.float64) * factor)


# --------------------------------------------------------------------------------------------------- painting
Shapes = Sequence[np.ndarray]


def _fixed_shapes(shapes: Shapes) -> List[np.ndarray]:
    if isinstance(shapes, np.ndarray):
        return list(_fixed(shapes.reshape(len(shapes), -1, 2)))
    if len(shapes) == 1:
        return [_fixed(shapes[0]).reshape(-1, 2)]
    return _split_like(_fixed(np.concatenate([np.reshape(s, (-1, 2)) for s in shapes])), shapes)


def _draw(target: np.ndarray, fixed: List[np.ndarray], colour: Colour, thickness: int) -> None:
    if thickness <= 0:
        cv2.fillPoly(target, fixed, colour, cv2.LINE_AA, FIXED_BITS)
    else:
        cv2.polylines(target, fixed, False, colour, thickness, cv2.LINE_AA, FIXED_BITS)


def _roi(fixed: List[np.ndarray], margin: int) -> Optional[Tuple[int, int, int, int]]:
    points = np.concatenate(fixed)
    x0, y0 = np.maximum((points.min(axis=0) >> FIXED_BITS) - margin, 0)
    x1, y1 = np.minimum((points.max(axis=0) >> FIXED_BITS) + margin + 1, CANVAS_SIZE)
    if x0 >= x1 or y0 >= y1:
        return None
    return int(x0), int(y0), int(x1), int(y1)


def _paint(canvas: np.ndarray, shapes: Shapes, colour: Colour, alpha: float = 1.0, thickness: int = 0) -> None:
    """Fill polygons (``thickness`` 0) or stroke open polylines (canvas pixels wide) with opacity ``alpha``."""
    if alpha <= 0.0 or len(shapes) == 0:
        return
    fixed = _fixed_shapes(shapes)
    if alpha >= 1.0:
        _draw(canvas, fixed, colour, thickness)
        return
    box = _roi(fixed, thickness + 2)
    if box is None:
        return
    x0, y0, x1, y1 = box
    roi = canvas[y0:y1, x0:x1]
    layer = roi.copy()
    origin = np.array([x0, y0], dtype=np.int32) << FIXED_BITS
    _draw(layer, [f - origin for f in fixed], colour, thickness)
    canvas[y0:y1, x0:x1] = cv2.addWeighted(layer, float(alpha), roi, float(1.0 - alpha), 0.0)


def _textured_fill(canvas: np.ndarray, shapes: Shapes, colour: Colour, alpha: float,
                   strokes: Sequence[Tuple[Shapes, Colour]] = ()) -> None:
    """Fill polygons with ``colour`` plus 1-pixel ``strokes`` (polyline sets and colours) clipped to the polygons."""
    fixed = _fixed_shapes(shapes)
    box = _roi(fixed, 2)
    if box is None:
        return
    x0, y0, x1, y1 = box
    origin = np.array([x0, y0], dtype=np.int32) << FIXED_BITS
    local = [f - origin for f in fixed]
    roi = canvas[y0:y1, x0:x1]
    layer = roi.copy()
    cv2.fillPoly(layer, local, colour, cv2.LINE_AA, FIXED_BITS)
    for lines, line_colour in strokes:
        if len(lines):
            _draw(layer, [f - origin for f in _fixed_shapes(lines)], line_colour, 1)
    if alpha < 1.0:
        layer = cv2.addWeighted(layer, float(alpha), roi, float(1.0 - alpha), 0.0)
    mask = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
    cv2.fillPoly(mask, local, 1, cv2.LINE_8, FIXED_BITS)
    np.copyto(roi, layer, where=cv2.dilate(mask, np.ones((3, 3), np.uint8))[..., None].astype(bool))


# --------------------------------------------------------------------------------------------------- the picture
def _background(nuisance: Nuisance, rng: np.random.Generator) -> np.ndarray:
    """Supersampled background: flat, gradient, blotches, grain or random shapes."""
    first, second = (np.array(c, dtype=np.float32) for c in nuisance.background_colours)
    kind, small = nuisance.background, CANVAS_SIZE // 4
    if kind == "shapes":
        canvas = np.full((CANVAS_SIZE, CANVAS_SIZE, 3), np.round(first), dtype=np.uint8)
        for _ in range(int(rng.integers(3, 9))):
            colour = clip_colour(second + rng.normal(0, 45, 3))
            corner = rng.uniform(-20, 120, 2)
            if rng.uniform() < 0.5:
                size = rng.uniform(10, 60, 2)
                box = np.array([corner, corner + [size[0], 0], corner + size, corner + [0, size[1]]])
                _paint(canvas, [box], colour)
            else:
                _paint(canvas, [_ellipse(corner, rng.uniform(6, 30, 2), rng.uniform(0, 180))], colour)
        return canvas
    if kind == "flat":
        weights = np.zeros((small, small), dtype=np.float32)
    elif kind == "gradient":
        angle = rng.uniform(0, 2 * math.pi)
        weights = _unit_ramp(small, math.cos(angle), math.sin(angle))
    elif kind == "blotches":
        cells = int(rng.integers(3, 8))
        weights = cv2.resize(rng.uniform(0, 1, (cells, cells)).astype(np.float32), (small, small),
                             interpolation=cv2.INTER_CUBIC)
    elif kind == "grain":
        second = first + 60.0
        weights = rng.normal(0, rng.uniform(0.12, 0.4), (small, small)).astype(np.float32)
    else:
        raise ValueError(f"unknown background kind {kind!r}; expected one of {BACKGROUND_KINDS}")
    image = np.clip(np.round(first + (second - first) * weights[..., None]), 0, 255).astype(np.uint8)
    return cv2.resize(image, (CANVAS_SIZE, CANVAS_SIZE), interpolation=cv2.INTER_LINEAR)


@lru_cache(maxsize=4)
def _grid(size: int) -> Tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    return xs, ys


def _unit_ramp(size: int, cos_a: float, sin_a: float) -> np.ndarray:
    xs, ys = _grid(size)
    ramp = (xs - size / 2) * cos_a + (ys - size / 2) * sin_a
    return (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1e-6)


def _face_outline(identity: Identity, n: int = 64) -> np.ndarray:
    """Canonical face contour: upper half an ellipse, lower half a superellipse with a tapering jaw."""
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    cos_t, sin_t = np.cos(t), np.sin(t)
    a, b = identity.face_half_width, identity.face_half_height
    exponent = np.where(sin_t > 0, identity.jaw_exponent, 2.0)
    x = a * np.sign(cos_t) * np.abs(cos_t) ** (2.0 / exponent)
    y = b * np.sign(sin_t) * np.abs(sin_t) ** (2.0 / exponent)
    x = x * (1.0 - identity.jaw_taper * np.clip(y / b, 0, 1) ** 2)
    return np.stack([FACE_CENTRE_X + x, identity.face_centre_y + y], axis=1)


def _face_point(identity: Identity, u: float, v: float) -> Tuple[float, float]:
    """Face-normalised coordinates (u across, v down, both in half-axes from the centre) → canonical pixels."""
    return (FACE_CENTRE_X + u * identity.face_half_width, identity.face_centre_y + v * identity.face_half_height)


def _quadratic(start: Sequence[float], control: Sequence[float], end: Sequence[float], n: int = 10) -> np.ndarray:
    t = np.linspace(0, 1, n)[:, None]
    p0, p1, p2 = (np.asarray(p, dtype=np.float64) for p in (start, control, end))
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2


def _draw_body(canvas: np.ndarray, identity: Identity, nuisance: Nuisance, pose: _Pose) -> None:
    cx, a = FACE_CENTRE_X, identity.face_half_width
    neck = identity.neck_width * a
    chin = identity.face_centre_y + identity.face_half_height
    shoulder_y = chin - 4.0
    clothes = np.array([[-20, 150], [-20, shoulder_y + 14], [cx - neck - 6, shoulder_y + 3], [cx, shoulder_y + 12],
                        [cx + neck + 6, shoulder_y + 3], [132, shoulder_y + 14], [132, 150]])
    _paint(canvas, [pose.silhouette(clothes)], nuisance.clothes_colour)
    neck_poly = np.array([[cx - neck, identity.face_centre_y + 10], [cx + neck, identity.face_centre_y + 10],
                          [cx + neck * 1.05, shoulder_y + 6], [cx, shoulder_y + 12],
                          [cx - neck * 1.05, shoulder_y + 6]])
    _paint(canvas, [pose.silhouette(neck_poly)], _shade(identity.skin, 0.72))


def _draw_back_hair(canvas: np.ndarray, identity: Identity, nuisance: Nuisance, pose: _Pose) -> None:
    if identity.hair_style not in ("long", "curly"):
        return
    volume = identity.hair_volume * nuisance.hair_scale
    a = identity.face_half_width * volume
    height = identity.face_half_height * volume
    if identity.hair_style == "long":
        top = _ellipse((FACE_CENTRE_X, identity.face_centre_y), (a * 1.1, height), 0, 24, math.pi, 2 * math.pi)
        mass = np.concatenate([top, [[FACE_CENTRE_X + a * 1.2, 140], [FACE_CENTRE_X - a * 1.2, 140]]])
    else:
        mass = _ellipse((FACE_CENTRE_X, identity.face_centre_y - 12.0), (a * 1.22, height * 0.95), 0, 40)
    _paint(canvas, [pose.silhouette(mass, depth=-0.3 * identity.face_half_width)], _shade(identity.hair_colour, 0.7))


def _draw_head(canvas: np.ndarray, identity: Identity, pose: _Pose) -> np.ndarray:
    """Ears, then the face filled in skin colour; returns the face contour (image coordinates)."""
    a, skin = identity.face_half_width, identity.skin
    ear_depth = -0.15 * a - pose.depth
    ears, ear_lines = [], []
    for side in (-1.0, 1.0):
        centre = np.array([FACE_CENTRE_X + side * a * 0.97, identity.eye_y + 7.0])
        axes = (4.5 * identity.ear_size, 9.0 * identity.ear_size)
        ears.append(pose.silhouette(_ellipse(centre, axes), depth=ear_depth))
        start = -0.5 * math.pi if side > 0 else 0.5 * math.pi
        inner = _ellipse(centre + [side * 0.8, 0.5], (axes[0] * 0.5, axes[1] * 0.6), 0, 12, start, start + math.pi)
        ear_lines.append(pose.silhouette(inner, depth=ear_depth))
    _paint(canvas, ears, _shade(skin, 0.88))
    _paint(canvas, ear_lines, _shade(skin, 0.66), 0.8, thickness=2)
    outline = pose.silhouette(_face_outline(identity, 48))
    _paint(canvas, [outline], skin)
    return outline


def _draw_skin_marks(canvas: np.ndarray, identity: Identity, nuisance: Nuisance, pose: _Pose) -> None:
    skin = np.asarray(identity.skin)
    cheeks = [pose.face(_ellipse((FACE_CENTRE_X + s * (identity.eye_half_spacing + 2), identity.nose_y + 2),
                                 (7.0, 4.5), 0, 16)) for s in (-1, 1)]
    _paint(canvas, cheeks, clip_colour(skin * [1.0, 0.75, 0.75]), identity.blush + 0.2 * nuisance.smile)
    if identity.freckles:
        dots = [pose.face(_ellipse(_face_point(identity, u, v), (0.6, 0.6), 0, 6)) for u, v in identity.freckles]
        _paint(canvas, dots, clip_colour(skin * [0.78, 0.62, 0.5]), 0.5)
    wrinkle_alpha = max(0.0, identity.age - 0.45) * 1.1
    if wrinkle_alpha > 0:
        top = identity.eye_y - identity.brow_gap - 5
        forehead = [pose.face(_ellipse((FACE_CENTRE_X, top - 4 * k + 14), (14 - k, 14), 0, 10, 1.3 * math.pi,
                                       1.7 * math.pi)) for k in range(3)]
        _paint(canvas, forehead, _shade(identity.skin, 0.75), wrinkle_alpha * 0.6, thickness=1)
    fold_alpha = min(wrinkle_alpha + 0.5 * nuisance.smile, 0.8) * 0.6
    if fold_alpha > 0:
        folds = []
        for s in (-1, 1):
            start = (FACE_CENTRE_X + s * (identity.nose_width + 2.5), identity.nose_y - 1)
            end = (FACE_CENTRE_X + s * (identity.mouth_half_width + 2.5 + 1.5 * nuisance.smile), identity.mouth_y + 3)
            mid = ((start[0] + end[0]) / 2 + s * 2.5, (start[1] + end[1]) / 2)
            folds.append(pose.face(_quadratic(start, mid, end)))
        _paint(canvas, folds, _shade(identity.skin, 0.72), fold_alpha, thickness=2)
    if identity.moles:
        moles = [pose.face(_ellipse(_face_point(identity, u, v), (r, r), 0, 10)) for u, v, r in identity.moles]
        _paint(canvas, moles, clip_colour(skin * [0.45, 0.32, 0.25]), 0.9)


def _mouth_geometry(identity: Identity, nuisance: Nuisance, n: int = 17) -> Tuple[np.ndarray, ...]:
    """Canonical mouth curves: x, mouth line, lower edge of the opening, top of upper lip, bottom of lower lip."""
    half = identity.mouth_half_width + 1.5 * nuisance.smile
    corner_y = identity.mouth_y - 2.0 * nuisance.smile
    x = np.linspace(-half, half, n)
    profile = np.clip(1.0 - (x / half) ** 2, 0.0, 1.0)
    line = corner_y + (identity.mouth_curve + 2.5 * nuisance.smile) * profile
    opening = line + nuisance.mouth_open * 7.0 * profile ** 0.8
    bow = 1.0 - 0.3 * np.exp(-(x / (0.12 * half)) ** 2)
    top = line - identity.upper_lip * np.sqrt(profile) * bow - 0.4 * profile
    bottom = opening + identity.lower_lip * profile ** 0.6
    return FACE_CENTRE_X + x, line, opening, top, bottom


def _random_strokes(rng: np.random.Generator, polygons: Sequence[np.ndarray], count: int,
                    direction: Sequence[float], length: Tuple[float, float]) -> np.ndarray:
    """``count`` short segments per polygon, roughly along ``direction``, inside the polygons' bounding boxes."""
    segments = []
    for polygon in polygons:
        lo, hi = polygon.min(axis=0), polygon.max(axis=0)
        starts = rng.uniform(lo, hi, (count, 2))
        vectors = (np.asarray(direction) + rng.normal(0, 0.35, (count, 2))) * rng.uniform(*length, (count, 1))
        segments.append(np.stack([starts, starts + vectors], axis=1))
    return np.concatenate(segments) if segments else np.zeros((0, 2, 2))


def _draw_beard(canvas: np.ndarray, identity: Identity, nuisance: Nuisance, pose: _Pose,
                rng: np.random.Generator) -> None:
    style = identity.beard_style
    if style == "none":
        return
    xs, line, _, top, bottom = _mouth_geometry(identity, nuisance)
    half = xs[-1] - FACE_CENTRE_X
    under_nose = identity.nose_y + 3.2
    polygons: List[np.ndarray] = []
    if style in ("full", "stubble"):
        outline = _face_outline(identity, 64)
        start_y = identity.eye_y + 16.0
        lower = outline[outline[:, 1] > start_y]
        lower = lower[np.argsort(-np.arctan2(lower[:, 1] - identity.face_centre_y, lower[:, 0] - FACE_CENTRE_X))]
        inner = np.array([[FACE_CENTRE_X + identity.face_half_width * 0.86, start_y],
                          [FACE_CENTRE_X + half + 5, identity.mouth_y - 5],
                          [FACE_CENTRE_X + half * 0.6, under_nose], [FACE_CENTRE_X - half * 0.6, under_nose],
                          [FACE_CENTRE_X - half - 5, identity.mouth_y - 5],
                          [FACE_CENTRE_X - identity.face_half_width * 0.86, start_y]])
        polygons.append(np.concatenate([pose.silhouette(lower), pose.face(inner, lift=1.0)]))
    else:
        span = np.linspace(-half - 2.0, half + 2.0, 11)
        droop = 3.0 * (np.abs(span) / (half + 2.0)) ** 3
        lower_edge = np.interp(span, xs - FACE_CENTRE_X, top) + droop - 0.2
        thickness = identity.moustache_thickness * (1 - 0.5 * (span / (half + 2)) ** 2)
        upper_edge = np.maximum(under_nose, lower_edge - thickness)
        moustache = np.concatenate([np.stack([FACE_CENTRE_X + span, upper_edge], 1),
                                    np.stack([FACE_CENTRE_X + span[::-1], lower_edge[::-1]], 1)])
        polygons.append(pose.face(moustache, lift=2.0))
        if style == "goatee":
            chin_y = identity.face_centre_y + identity.face_half_height
            lip_bottom = bottom[len(bottom) // 2]
            goatee = np.array([[FACE_CENTRE_X - half * 0.55, lip_bottom + 0.5],
                               [FACE_CENTRE_X + half * 0.55, lip_bottom + 0.5],
                               [FACE_CENTRE_X + half * 0.5, chin_y - 3], [FACE_CENTRE_X, chin_y + 0.5],
                               [FACE_CENTRE_X - half * 0.5, chin_y - 3]])
            polygons.append(pose.face(goatee, lift=1.0))
    alpha = 0.4 if style == "stubble" else 0.9
    colour = identity.beard_colour
    strokes = _random_strokes(rng, polygons, 70, (0.0, 1.0), (0.8, 2.0))
    _textured_fill(canvas, polygons, colour, alpha,
                   [(strokes, _shade(colour, 0.55)), (strokes[::3] + 0.7, _shade(colour, 1.3))])


def _eye_curves(identity: Identity, nuisance: Nuisance, n: int = 13) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eye-local curves (u outward from the nose, v down): u, upper lid, lower lid."""
    w = identity.eye_half_width
    h = identity.eye_half_height * max(nuisance.eye_open, 0.35)
    u = np.linspace(-w, w, n)
    base = np.clip(1.0 - (u / w) ** 2, 0.0, 1.0) ** identity.eye_roundness
    upper = -h * base * (1.0 - 0.12 * (u / w))
    lower = 0.75 * h * base
    return u, upper, lower


def _eye_to_canonical(identity: Identity, side: float, local: np.ndarray) -> np.ndarray:
    tau = math.radians(identity.eye_tilt_deg)
    out_dir = np.array([side * math.cos(tau), -math.sin(tau)])
    down_dir = np.array([side * math.sin(tau), math.cos(tau)])
    centre = np.array([FACE_CENTRE_X + side * identity.eye_half_spacing, identity.eye_y])
    return centre + local[:, :1] * out_dir + local[:, 1:2] * down_dir


def _clipped_disc(radius: float, u: np.ndarray, upper: np.ndarray, lower: np.ndarray,
                  n: int = 15) -> Optional[np.ndarray]:
    """Eye-local polygon of a disc at the eye centre clipped by the lids (None when fully hidden)."""
    xs = np.linspace(-radius, radius, n)
    circle = np.sqrt(np.clip(radius ** 2 - xs ** 2, 0, None))
    top = np.maximum(-circle, np.interp(xs, u, upper))
    bottom = np.minimum(circle, np.interp(xs, u, lower))
    keep = top < bottom
    if keep.sum() < 2:
        return None
    xs, top, bottom = xs[keep], top[keep], bottom[keep]
    return np.concatenate([np.stack([xs, top], 1), np.stack([xs[::-1], bottom[::-1]], 1)])


def _draw_eyes(canvas: np.ndarray, identity: Identity, nuisance: Nuisance, pose: _Pose) -> np.ndarray:
    """Sockets, whites, irises, pupils, glints, lashes and creases; returns the two pupil centres."""
    u, upper, lower = _eye_curves(identity, nuisance)
    w, h, r = identity.eye_half_width, identity.eye_half_height, identity.iris_radius
    parts: dict = {name: [] for name in ("socket", "white", "iris", "pupil", "glint", "lid", "crease")}
    centres = []
    for side in (-1.0, 1.0):
        local = {"centre": np.zeros((1, 2)),
                 "socket": _ellipse((0.0, -1.0), (w * 1.35, h * 2.2), 0, 20),
                 "white": np.concatenate([np.stack([u, upper], 1), np.stack([u[::-1], lower[::-1]], 1)]),
                 "lid": np.stack([np.append(u, w * 1.12), np.append(upper, upper[-1] - 0.6)], 1),
                 "crease": np.stack([u[2:-1] * 1.05, upper[2:-1] * 0.5 - h * 1.25], 1)}
        for radius, name in ((r, "iris"), (r * 0.45, "pupil")):
            disc = _clipped_disc(radius, u, upper, lower)
            if disc is not None:
                local[name] = disc
        glint = _ellipse((-0.6 * r, -0.55 * r), (0.45, 0.45), 0, 6)
        if np.all(np.interp(glint[:, 0], u, upper) < glint[:, 1]):
            local["glint"] = glint
        shapes = list(local.values())
        placed = pose.face_many(_split_like(_eye_to_canonical(identity, side, np.concatenate(shapes)), shapes))
        for name, shape in zip(local, placed):
            if name == "centre":
                centres.append(shape[0])
            else:
                parts[name].append(shape)
    skin = identity.skin
    _paint(canvas, parts["socket"], _shade(skin, 0.82), 0.35)
    _paint(canvas, parts["white"], (236, 230, 224))
    _paint(canvas, parts["iris"], identity.iris_colour)
    _paint(canvas, parts["pupil"], (14, 10, 10))
    _paint(canvas, parts["glint"], (250, 250, 250), 0.8)
    _paint(canvas, parts["lid"], identity.lash_colour, thickness=2)
    _paint(canvas, parts["crease"], _shade(skin, 0.68), 0.5, thickness=1)
    return np.array(centres)


def _draw_brows(canvas: np.ndarray, identity: Identity, nuisance: Nuisance, pose: _Pose) -> None:
    brows = []
    t = np.linspace(0, 1, 12)
    length = identity.brow_length * identity.eye_half_width
    thickness = identity.brow_thickness * (1.0 - 0.55 * t ** 1.4)
    tilt = math.radians(identity.brow_tilt_deg)
    for side in (-1.0, 1.0):
        inner = np.array([FACE_CENTRE_X + side * (identity.eye_half_spacing - identity.eye_half_width * 0.85),
                          identity.eye_y - identity.brow_gap - 2.5 * nuisance.brow_raise])
        along = np.array([side * math.cos(tilt), -math.sin(tilt)])
        centre = inner + (t * length)[:, None] * along
        centre[:, 1] -= identity.brow_arch * np.sin(math.pi * t ** 0.8)
        half = np.stack([np.zeros_like(t), thickness / 2], 1)
        brows.append(pose.face(np.concatenate([centre - half, (centre + half)[::-1]]), lift=1.0))
    _paint(canvas, brows, identity.brow_colour, 0.92)


def _draw_nose(canvas: np.ndarray, identity: Identity, nuisance: Nuisance, pose: _Pose) -> np.ndarray:
    """Bridge shadow, alae, nostrils and tip highlight; returns the nose-tip landmark."""
    skin, cx, y, w = identity.skin, FACE_CENTRE_X, identity.nose_y, identity.nose_width
    protrusion, size = identity.nose_protrusion, identity.nose_tip_size
    shadow_side = 1.0 if math.cos(nuisance.light_angle) < 0 else -1.0
    bridge = pose.face(np.array([[cx + shadow_side * 3.0, identity.eye_y + 3], [cx + shadow_side * w * 0.6, y - 4]]),
                       lift=0.5 * protrusion)
    _paint(canvas, [bridge], _shade(skin, 0.72), 0.25 + 0.4 * identity.nose_bridge, thickness=2)
    under = pose.face(_ellipse((cx, y + 2.8), (w * 0.75, 1.6), 0, 16), lift=0.5 * protrusion)
    _paint(canvas, [under], _shade(skin, 0.78), 0.45)
    alae = [pose.face(_quadratic((cx + s * w * 0.95, y - 3.0), (cx + s * (w + 1.2), y + 1.5),
                                 (cx + s * w * 0.35, y + 2.3)),
                      lift=0.6 * protrusion) for s in (-1, 1)]
    _paint(canvas, alae, _shade(skin, 0.66), 0.75, thickness=2)
    nostrils = [pose.face(_ellipse((cx + s * w * 0.5, y + 1.6), (1.7 * size / 3.0, 0.9 * size / 3.0), s * 20.0, 10),
                          lift=0.6 * protrusion) for s in (-1, 1)]
    _paint(canvas, nostrils, _shade(skin, 0.38))
    tip = pose.face(_ellipse((cx, y - 1.2), (size * 0.8, size * 0.6), 0, 12), lift=protrusion)
    _paint(canvas, [tip], _shade(skin, 1.1), 0.45)
    return pose.face(np.array([[cx, y]]), lift=protrusion)[0]


def _draw_mouth(canvas: np.ndarray, identity: Identity, nuisance: Nuisance, pose: _Pose) -> np.ndarray:
    """Lips, and mouth interior with teeth when open; returns the two mouth corners."""
    xs, line, opening, top, bottom = _mouth_geometry(identity, nuisance)

    def curve(ys: np.ndarray) -> np.ndarray:
        return pose.face(np.stack([xs, ys], 1), lift=2.0)

    lip = identity.lip_colour
    mouth_line = curve(line)
    if nuisance.mouth_open > 0.05:
        _paint(canvas, [np.concatenate([mouth_line, curve(opening)[::-1]])], (58, 22, 26))
        inner = np.abs(xs - FACE_CENTRE_X) < 0.72 * (xs[-1] - FACE_CENTRE_X)
        teeth_bottom = curve(np.minimum(opening, line + 2.6))
        _paint(canvas, [np.concatenate([mouth_line[inner], teeth_bottom[inner][::-1]])], (232, 228, 214))
    _paint(canvas, [np.concatenate([curve(top), mouth_line[::-1]])], _shade(lip, 0.92))
    _paint(canvas, [np.concatenate([curve(opening), curve(bottom)[::-1]])], lip)
    _paint(canvas, [mouth_line], _shade(lip, 0.5), 0.8, thickness=2)
    return np.stack([mouth_line[0], mouth_line[-1]])


def _hairline(identity: Identity, nuisance: Nuisance, n: int = 25) -> np.ndarray:
    """Canonical hairline from the right temple to the left temple (the lower edge of the front hair)."""
    a = identity.face_half_width
    temple_y = identity.eye_y - 9.0
    x = np.linspace(a * 0.99, -a * 0.99, n)
    r = np.abs(x) / a
    hairline = identity.hairline_y + (nuisance.hair_scale - 1.0) * 20.0
    style = identity.hair_style
    if style == "bangs":
        y = identity.fringe_y + 1.4 * ((np.arange(n) % 2) - 0.5) + (temple_y - identity.fringe_y) * r ** 6
    elif style in ("side_part", "long"):
        sweep = np.clip((identity.hair_part * x / a + 0.4) / 1.4, 0, 1) ** 1.5
        y = hairline + (identity.fringe_y - hairline) * sweep * (1 - r ** 6) + (temple_y - hairline) * r ** 4
    elif style == "receding":
        peak = 6.0 * np.exp(-(x / (0.16 * a)) ** 2)
        y = (hairline - 7.0 + peak - 8.0 * np.sin(math.pi * np.clip(r, 0, 1) * 0.9) ** 2
             + (temple_y - hairline + 7.0) * r ** 5)
    else:
        y = hairline + (temple_y - hairline) * r ** 3.5
    return np.stack([FACE_CENTRE_X + x, y], 1)


def _draw_front_hair(canvas: np.ndarray, identity: Identity, nuisance: Nuisance, pose: _Pose,
                     rng: np.random.Generator) -> None:
    style, colour = identity.hair_style, identity.hair_colour
    a = identity.face_half_width
    volume = identity.hair_volume * nuisance.hair_scale
    temple_y = identity.eye_y - 9.0
    if style == "bald":
        contour = _face_outline(identity, 96)
        band = contour[(contour[:, 1] > temple_y - 8) & (contour[:, 1] < identity.eye_y + 8)]
        patches = []
        for side in (-1.0, 1.0):
            edge = band[np.sign(band[:, 0] - FACE_CENTRE_X) == side]
            edge = edge[np.argsort(edge[:, 1])]
            strip = np.concatenate([edge + [side * 2.0, 0.0], (edge - [side * 3.5, 0.0])[::-1]])
            patches.append(pose.silhouette(strip))
        _paint(canvas, patches, colour, 0.75)
        shine = pose.face(_ellipse((FACE_CENTRE_X - 6, identity.face_centre_y - identity.face_half_height + 10),
                                   (10, 4), -10, 16), lift=-2)
        _paint(canvas, [shine], (255, 255, 255), 0.2)
        return
    top_y = identity.face_centre_y - identity.face_half_height * volume - 6.0
    outer = _ellipse((FACE_CENTRE_X, temple_y), (a * 1.04 * min(volume, 1.12), temple_y - top_y), 0, 33,
                     math.pi, 2 * math.pi)
    if style == "curly":
        angle = np.linspace(math.pi, 2 * math.pi, len(outer))
        bump = 1.0 + 0.06 * np.abs(np.sin(angle * 14 + rng.uniform(0, math.pi)))
        outer = (outer - [FACE_CENTRE_X, temple_y]) * [1.2, 1.0] * bump[:, None] + [FACE_CENTRE_X, temple_y]
    sideburn_y = identity.eye_y + 2.0
    outer = np.concatenate([[[FACE_CENTRE_X - a, sideburn_y]], outer, [[FACE_CENTRE_X + a, sideburn_y]]])
    hairline = np.concatenate([[[FACE_CENTRE_X + 0.92 * a, sideburn_y]], _hairline(identity, nuisance),
                               [[FACE_CENTRE_X - 0.92 * a, sideburn_y]]])
    polygons = [np.concatenate([pose.silhouette(outer), pose.face(hairline)])]
    if style == "long":
        for s in (-1.0, 1.0):
            curtain = np.array([[FACE_CENTRE_X + s * a * 0.99, temple_y - 2],
                                [FACE_CENTRE_X + s * a * 1.16, temple_y - 4],
                                [FACE_CENTRE_X + s * a * 1.22, 130], [FACE_CENTRE_X + s * a * 0.92, 130],
                                [FACE_CENTRE_X + s * a * 0.86, identity.mouth_y],
                                [FACE_CENTRE_X + s * a * 0.9, identity.eye_y + 4]])
            polygons.append(pose.silhouette(curtain))
    strokes: List[Tuple[np.ndarray, Colour]] = []
    if style == "curly":
        lo, hi = np.min([p.min(axis=0) for p in polygons], axis=0), np.max([p.max(axis=0) for p in polygons], axis=0)
        centres = rng.uniform(lo, hi, (70, 2))
        rings = _ellipse((0.0, 0.0), (1.0, 1.0), 0, 7)[None] * rng.uniform(1.2, 2.6, (70, 1, 1)) + centres[:, None]
        strokes.append((rings, _shade(colour, 0.6)))
    elif style != "buzz":
        down = 1.0 if style == "long" else 0.4
        lines = _random_strokes(rng, polygons, 35, (identity.hair_part * 0.6, down), (5.0, 12.0))
        strokes += [(lines[0::2], _shade(colour, 0.65)), (lines[1::2], _shade(colour, 1.3))]
    _textured_fill(canvas, polygons, colour, 0.55 if style == "buzz" else 1.0, strokes)


def _face_shading(outline: np.ndarray) -> np.ndarray:
    """Multiplicative 112×112 map darkening the face towards its contour (a cheap stand-in for 3-D shading)."""
    quarter = IMAGE_SIZE // 4
    small = np.zeros((quarter, quarter), dtype=np.uint8)
    cv2.fillPoly(small, [np.rint((outline / 4.0) * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
    small = cv2.GaussianBlur(small, (0, 0), 2.0)
    inside = cv2.resize(small, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255.0
    mask = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    cv2.fillPoly(mask, [np.rint(outline * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
    darkening = FACE_EDGE_DARKENING * (1.0 - np.clip(inside * 1.6 - 0.6, 0.0, 1.0))
    return 1.0 - darkening * (mask.astype(np.float32) / 255.0)


def _photometric(image: np.ndarray, nuisance: Nuisance, outline: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Face shading, directional light ramp, exposure gain and white balance, blur, then sensor noise."""
    xs, ys = _grid(IMAGE_SIZE)
    centre = IMAGE_SIZE / 2.0
    ramp = 1.0 + nuisance.light_strength * ((xs - centre) * math.cos(nuisance.light_angle) +
                                            (ys - centre) * math.sin(nuisance.light_angle)) / centre
    ramp = ramp * _face_shading(outline)
    gain = nuisance.gain * np.asarray(nuisance.tint, dtype=np.float32)
    out = image.astype(np.float32) * ramp[..., None] * gain
    if nuisance.blur_sigma > 0.25:
        out = cv2.GaussianBlur(out, (0, 0), nuisance.blur_sigma)
    if nuisance.noise_sigma > 0:
        out += rng.standard_normal(out.shape, dtype=np.float32) * np.float32(nuisance.noise_sigma)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def render_face(identity: Identity, nuisance: Nuisance) -> Tuple[np.ndarray, np.ndarray]:
    """Draw one photo: ``(uint8 RGB 112×112×3, float32 [5, 2] landmarks in image pixels)``."""
    rng = np.random.default_rng(nuisance.texture_seed)
    pose = _Pose(identity, nuisance)
    canvas = _background(nuisance, rng)
    _draw_body(canvas, identity, nuisance, pose)
    _draw_back_hair(canvas, identity, nuisance, pose)
    outline = _draw_head(canvas, identity, pose)
    _draw_skin_marks(canvas, identity, nuisance, pose)
    _draw_beard(canvas, identity, nuisance, pose, rng)
    eyes = _draw_eyes(canvas, identity, nuisance, pose)
    _draw_brows(canvas, identity, nuisance, pose)
    nose = _draw_nose(canvas, identity, nuisance, pose)
    mouth = _draw_mouth(canvas, identity, nuisance, pose)
    _draw_front_hair(canvas, identity, nuisance, pose, rng)
    image = cv2.resize(canvas, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_AREA)
    image = _photometric(image, nuisance, outline, rng)
    landmarks = np.concatenate([eyes, nose[None], mouth]).astype(np.float32)
    return image, landmarks


def render_identity_image(seed: int, split: str, identity_index: int, image_index: int,
                          difficulty: Difficulty = Difficulty()) -> Tuple[np.ndarray, np.ndarray]:
    """Render photo ``image_index`` of identity ``identity_index`` of ``split`` (fully determined by the seed)."""
    identity = sample_identity(identity_rng(seed, split, identity_index), difficulty.identity_spread)
    nuisance = sample_nuisance(image_rng(seed, split, identity_index, image_index), difficulty)
    return render_face(identity, nuisance)


def write_identity_images(seed: int, split: str, identity_index: int, difficulty: Dict[str, float], images_dir: str,
                          files: Sequence[Tuple[int, str]]) -> List[Tuple[str, List[float], str]]:
    """Render photos ``(image_index, relative_path)`` of one identity as PNGs under ``images_dir``.

    Returns ``(relative_path, 10 landmark coordinates, sha256 of the PNG)`` per photo. Lives here, free of torch, so
    spawned worker processes start fast."""
    cv2.setNumThreads(1)
    settings = Difficulty(**difficulty)
    identity = sample_identity(identity_rng(seed, split, identity_index), settings.identity_spread)
    rows = []
    for image_index, relative in files:
        image, landmarks = render_face(identity, sample_nuisance(image_rng(seed, split, identity_index, image_index),
                                                                 settings))
        data = encode_image(image, ".png")
        path = Path(images_dir) / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        rows.append((relative, landmarks.reshape(-1).tolist(), hashlib.sha256(data).hexdigest()))
    return rows


def write_identity_images_job(job: tuple) -> List[Tuple[str, List[float], str]]:
    """:func:`write_identity_images` taking its arguments as one tuple (for ``Pool.imap``)."""
    return write_identity_images(*job)

