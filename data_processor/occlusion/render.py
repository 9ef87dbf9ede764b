"""Rasterise a drawn occluder (a list of textured polygon / polyline parts in template coordinates) onto a face."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from data_processor.occlusion.geometry import (affine_scale, compose, draw_polyline, fill_polygon, jitter_matrix,
                                               template_to_image, transform_points)
from data_processor.occlusion.textures import make_texture


@dataclass
class Part:
    """One piece of an occluder: filled polygon(s) (``thickness`` None) or polyline(s) of ``thickness`` template px.

    ``points`` is one ``N×2`` array or a list of them (e.g. both lenses, or palm + fingers) sharing one texture.
    Parts are painted in order, so later parts (pleats, frames, highlights) lie on top of earlier ones.
    """

    points: Union[np.ndarray, List[np.ndarray]]
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


def _draw(target: np.ndarray, shapes: List[np.ndarray], thickness: Optional[float], closed: bool,
          value: Union[int, Tuple[int, ...]]) -> None:
    for points in shapes:  # one call per shape: a multi-contour fillPoly would cut holes where shapes overlap
        if thickness is None:
            fill_polygon(target, points, value)
        else:
            draw_polyline(target, points, thickness, closed, value)


def render_parts(image: np.ndarray, parts: List[Part], matrix: np.ndarray,
                 rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Paint ``parts`` (template coordinates) through ``matrix``; return (new image, uint8 visibility)."""
    height, width = image.shape[:2]
    scale = affine_scale(matrix)
    noisy = image.copy()
    hidden = np.zeros((height, width), dtype=np.uint8)
    for part in parts:
        shapes = part.points if isinstance(part.points, list) else [part.points]
        shapes = [transform_points(matrix, points) for points in shapes]
        thickness = None if part.thickness is None else part.thickness * scale
        if part.style == "solid" and part.second_colour is None:  # plain colour: cv2 draws it in place, no texture
            colour = tuple(int(c) for c in part.colour)
            for target, value in ((noisy, colour), (hidden, 1)):
                _draw(target, shapes, thickness, part.closed, value)
            continue
        every = np.concatenate(shapes, axis=0)
        pad = 0 if thickness is None else int(np.ceil(thickness)) + 1
        x0 = max(int(np.floor(every[:, 0].min())) - pad, 0)
        y0 = max(int(np.floor(every[:, 1].min())) - pad, 0)
        x1 = min(int(np.ceil(every[:, 0].max())) + pad + 1, width)
        y1 = min(int(np.ceil(every[:, 1].max())) + pad + 1, height)
        if x1 <= x0 or y1 <= y0:
            continue
        local = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
        offset = np.array([x0, y0], dtype=np.float64)
        _draw(local, [points - offset for points in shapes], thickness, part.closed, 1)
        texture = make_texture(rng, y1 - y0, x1 - x0, part.colour, part.style, part.second_colour)
        np.copyto(noisy[y0:y1, x0:x1], texture, where=local.view(bool)[..., None])
        hidden[y0:y1, x0:x1] |= local
    return noisy, 1 - hidden
