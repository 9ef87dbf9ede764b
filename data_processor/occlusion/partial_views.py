"""Landmark-guided partial-face views (GFRO.md §1): keep one region of the face, fill the rest.

Regions are cut in the face's own frame (the pixels mapped into ArcFace-template space through the landmark fit),
so they follow roll and scale; the cut positions come from the image's own landmarks. Geometry is kept: pixels
outside the region are filled in place (zero | mean | noise | blur | white | random), never cropped away.

- ``partial_upper``: everything above a line half-way between the eye line and the nose tip (eyes + forehead).
- ``partial_lower``: the complement — nose and below.
- ``partial_left`` / ``partial_right``: the image's left / right of the nose (the left eye is on the image left).
- ``partial_eyes``: a band around the eyes (eyebrows down to above the nose tip).
- ``partial_mouth``: a band around the mouth (below the nose tip down to the chin).
- ``partial_central``: the eyes–nose–mouth box.
- ``partial_random``: a box around a random landmark group (eyes, one eye, nose, mouth, one face side) with
  random margins; that group always stays visible.
``jitter`` moves every cut by up to ±jitter × (the relevant landmark distance).
"""
from __future__ import annotations

from typing import Callable, Dict, Tuple

import numpy as np

from data_processor.occlusion.base import OCCLUDERS, composite
from data_processor.occlusion.fills import fill_image
from data_processor.occlusion.geometry import invert_affine, template_coordinates, template_to_image, transform_points

LANDMARK_GROUPS: Dict[str, Tuple[int, ...]] = {
    "eyes": (0, 1), "left_eye": (0,), "right_eye": (1,), "nose": (2,), "mouth": (3, 4),
    "left_side": (0, 3), "right_side": (1, 4),
}


class FaceFrame:
    """Template-space coordinates of every pixel plus the image's landmarks mapped into that space."""

    def __init__(self, shape: Tuple[int, int], landmarks: np.ndarray) -> None:
        matrix = template_to_image(landmarks)
        self.tx, self.ty = template_coordinates(matrix, shape)
        self.points = transform_points(invert_affine(matrix), landmarks)
        self.eye_y = float(self.points[:2, 1].mean())
        self.nose_x, self.nose_y = (float(v) for v in self.points[2])
        self.mouth_y = float(self.points[3:, 1].mean())
        self.eye_distance = max(float(self.points[1, 0] - self.points[0, 0]), 1.0)
        self.eye_mouth = max(self.mouth_y - self.eye_y, 1.0)

    def band(self, top: float, bottom: float) -> np.ndarray:
        return (self.ty >= top) & (self.ty <= bottom)

    def box(self, left: float, top: float, right: float, bottom: float) -> np.ndarray:
        return (self.tx >= left) & (self.tx <= right) & self.band(top, bottom)


RegionFn = Callable[[FaceFrame, np.random.Generator, float], np.ndarray]


def _upper_cut(frame: FaceFrame, rng: np.random.Generator, jitter: float) -> float:
    return frame.eye_y + (0.5 + rng.uniform(-jitter, jitter)) * (frame.nose_y - frame.eye_y)


def _upper(frame: FaceFrame, rng: np.random.Generator, jitter: float) -> np.ndarray:
    return frame.ty < _upper_cut(frame, rng, jitter)


def _lower(frame: FaceFrame, rng: np.random.Generator, jitter: float) -> np.ndarray:
    return frame.ty >= _upper_cut(frame, rng, jitter)


def _split_x(frame: FaceFrame, rng: np.random.Generator, jitter: float) -> float:
    return frame.nose_x + rng.uniform(-jitter, jitter) * frame.eye_distance


def _left(frame: FaceFrame, rng: np.random.Generator, jitter: float) -> np.ndarray:
    return frame.tx < _split_x(frame, rng, jitter)


def _right(frame: FaceFrame, rng: np.random.Generator, jitter: float) -> np.ndarray:
    return frame.tx >= _split_x(frame, rng, jitter)


def _eyes(frame: FaceFrame, rng: np.random.Generator, jitter: float) -> np.ndarray:
    top, bottom = (rng.uniform(-jitter, jitter, size=2) + [0.35, 0.3]) * frame.eye_mouth
    return frame.band(frame.eye_y - top, frame.eye_y + bottom)


def _mouth(frame: FaceFrame, rng: np.random.Generator, jitter: float) -> np.ndarray:
    top, bottom = (rng.uniform(-jitter, jitter, size=2) + [0.3, 0.3]) * frame.eye_mouth
    return frame.band(frame.mouth_y - top, frame.mouth_y + bottom)


def _central(frame: FaceFrame, rng: np.random.Generator, jitter: float) -> np.ndarray:
    margins = rng.uniform(-jitter, jitter, size=4) + [0.35, 0.3, 0.35, 0.25]
    side, top, bottom = margins[[0, 2]] * frame.eye_distance, margins[1] * frame.eye_mouth, margins[3] * frame.eye_mouth
    return frame.box(frame.points[0, 0] - side[0], frame.eye_y - top, frame.points[1, 0] + side[1],
                     frame.mouth_y + bottom)


def _random(frame: FaceFrame, rng: np.random.Generator, jitter: float) -> np.ndarray:
    names = tuple(LANDMARK_GROUPS)
    group = frame.points[list(LANDMARK_GROUPS[names[int(rng.integers(len(names)))]])]
    margins = rng.uniform(0.3, 0.9, size=4) * frame.eye_distance
    low, high = group.min(axis=0), group.max(axis=0)
    return frame.box(low[0] - margins[0], low[1] - margins[1], high[0] + margins[2], high[1] + margins[3])


REGIONS: Dict[str, RegionFn] = {
    "partial_upper": _upper, "partial_lower": _lower, "partial_left": _left, "partial_right": _right,
    "partial_eyes": _eyes, "partial_mouth": _mouth, "partial_central": _central, "partial_random": _random,
}
PARTIAL_VIEWS = tuple(REGIONS)


def partial_view(image: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator, region: str,
                 fill: str = "mean", jitter: float = 0.1) -> Tuple[np.ndarray, np.ndarray]:
    """Keep ``region`` (a PARTIAL_VIEWS name) of the face, fill everything else with ``fill``."""
    if region not in REGIONS:
        raise ValueError(f"region must be one of {PARTIAL_VIEWS}, got {region!r}")
    if not 0.0 <= jitter <= 0.25:
        raise ValueError(f"jitter must be in [0, 0.25], got {jitter}")
    keep = REGIONS[region](FaceFrame(image.shape[:2], landmarks), rng, jitter)
    return composite(image, ~keep, fill_image(image, fill, rng))


def _register(region: str) -> None:
    def view(image: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator, fill: str = "mean",
             jitter: float = 0.1) -> Tuple[np.ndarray, np.ndarray]:
        return partial_view(image, landmarks, rng, region, fill, jitter)

    view.__name__ = region
    view.__doc__ = f"Partial view '{region}' (see data_processor.occlusion.partial_views)."
    OCCLUDERS.register(region)(view)


for _region in PARTIAL_VIEWS:
    _register(_region)
