"""Rasterise a drawn occluder (a list of textured polygon / polyline parts in template coordinates) onto a face."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from data_processor.occlusion.geometry import (affine_scale, compose, draw_polyline, fill_polygon, jitter_matrix,
                                               template_to_image, transform_points)
from data_processor.occlusion.textures import make_texture


@dataclass
class Part:
    """One piece of an occluder: a filled polygon (``thickness`` None) or a polyline of ``thickness`` template px.

    Parts are painted in order, so later parts (pleats, frames, highlights) lie on top of earlier ones.
    """

    points: np.ndarray
    colour: Sequence[int]
    style: str = "solid"
    second_colour: Optional[Sequence[int]] = None
    thickness: Optional[float] = None
    closed: bool = True


def placement_matrix(landmarks: np.ndarray, rng: np.random.Generator, centre: Sequence[float],
                     scale_range: Sequence[float], rotation_deg: float, shift: float) -> np.ndarray:
    """Template→image affine for one occluder: fit to the landmarks, then a random similarity about ``centre``
    (template coordinates; ``shift`` in template pixels)."""
    return compose(template_to_image(landmarks), jitter_matrix(rng, centre, scale_range, rotation_deg, shift))


def render_parts(image: np.ndarray, parts: List[Part], matrix: np.ndarray,
                 rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Paint ``parts`` (template coordinates) through ``matrix``; return (new image, uint8 visibility)."""
    height, width = image.shape[:2]
    scale = affine_scale(matrix)
    noisy = image.copy()
    hidden = np.zeros((height, width), dtype=np.uint8)
    for part in parts:
        points = transform_points(matrix, part.points)
        pad = 0 if part.thickness is None else int(np.ceil(part.thickness * scale)) + 1
        x0 = max(int(np.floor(points[:, 0].min())) - pad, 0)
        y0 = max(int(np.floor(points[:, 1].min())) - pad, 0)
        x1 = min(int(np.ceil(points[:, 0].max())) + pad + 1, width)
        y1 = min(int(np.ceil(points[:, 1].max())) + pad + 1, height)
        if x1 <= x0 or y1 <= y0:
            continue
        local = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
        shifted = points - np.array([x0, y0], dtype=np.float64)
        if part.thickness is None:
            fill_polygon(local, shifted)
        else:
            draw_polyline(local, shifted, part.thickness * scale, part.closed)
        region = local.view(bool)
        texture = make_texture(rng, y1 - y0, x1 - x0, part.colour, part.style, part.second_colour)
        np.copyto(noisy[y0:y1, x0:x1], texture, where=region[..., None])
        hidden[y0:y1, x0:x1] |= local
    return noisy, 1 - hidden
