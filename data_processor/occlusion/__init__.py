"""Occlusion synthesis: landmark-guided partial views, drawn occluders, photographic objects / other people's faces
(objects.py) and user RGBA occluders — one entry point.

    noisy, visibility = occlude(image_rgb, landmarks, "sunglasses", (seed, index))

``visibility`` is uint8 ``H×W``, 1 = the original pixel is kept. The input array is never modified. Results depend
only on the RNG argument (a ``(seed, index)`` tuple seeds ``numpy.random.default_rng([seed, index])``).

Adding an occluder is a file plus a decorator::

    from data_processor.occlusion.base import OCCLUDERS

    @OCCLUDERS.register("my_occluder")
    def my_occluder(image, landmarks, rng, **params): ...  # -> (new uint8 H×W×3, uint8 H×W visibility)

(then import the module here so it registers, and give its type a family in ``families.py``).
"""
from __future__ import annotations

from typing import Any, Tuple

import numpy as np

# imported so their occluders register:
from data_processor.occlusion import objects, occluders, partial_views, rgba_occluder, shapes  # noqa: F401
from data_processor.occlusion.base import OCCLUDERS, RngLike, check_face_input, make_rng
from data_processor.occlusion.families import (FAMILIES, OCCLUDER_FAMILIES, families_of, family_of, family_types,
                                               seen_or_held_out)
from data_processor.occlusion.objects import IDENTITY_KINDS, OBJECT_OCCLUDERS, PHOTO_OBJECTS, DonorPool
from data_processor.occlusion.partial_views import PARTIAL_VIEWS
from data_processor.occlusion.rgba_occluder import RGBAOccluder, load_rgba_occluders
from utils.registry import check_kwargs

DRAWN_OCCLUDERS = ("mask", "eyeglasses", "sunglasses", "hat", "scarf", "hand")
RANDOM_SHAPES = ("block", "ellipse", "polygon")
SYNTHETIC_OCCLUDERS = DRAWN_OCCLUDERS + RANDOM_SHAPES

_CHECKED_PARAMS: set = set()

__all__ = ["OCCLUDERS", "PARTIAL_VIEWS", "DRAWN_OCCLUDERS", "RANDOM_SHAPES", "SYNTHETIC_OCCLUDERS", "OBJECT_OCCLUDERS",
           "PHOTO_OBJECTS", "IDENTITY_KINDS", "DonorPool", "RGBAOccluder", "load_rgba_occluders", "make_rng", "occlude",
           "FAMILIES", "OCCLUDER_FAMILIES", "family_of", "family_types", "families_of", "seen_or_held_out"]


def occlude(image_rgb: np.ndarray, landmarks: np.ndarray, kind: str, rng: RngLike,
            **params: Any) -> Tuple[np.ndarray, np.ndarray]:
    """Apply the occluder ``kind`` (an OCCLUDERS name) to a copy of ``image_rgb`` (uint8 H×W×3).

    ``landmarks``: the image's own 5 points (left eye, right eye, nose, left mouth, right mouth) in pixels.
    ``rng``: a numpy Generator, an int seed, or ``(seed, index)`` / ``(seed, epoch, index)``.
    Returns ``(noisy uint8 H×W×3, visibility uint8 H×W with 1 = visible)``.
    """
    image, points = check_face_input(image_rgb, landmarks)
    function = OCCLUDERS.get(kind)
    checked = (kind, function, frozenset(params))
    if checked not in _CHECKED_PARAMS:  # inspect.signature is slow; a (kind, keys) combination is checked once
        check_kwargs(function, params, f"occluder '{kind}'")
        _CHECKED_PARAMS.add(checked)
    noisy, visibility = function(image, points, make_rng(rng), **params)
    if noisy.shape != image.shape or noisy.dtype != np.uint8 or visibility.shape != image.shape[:2]:
        raise RuntimeError(f"occluder '{kind}' returned image {noisy.shape}/{noisy.dtype} and visibility "
                           f"{visibility.shape} for an input of shape {image.shape}")
    if np.shares_memory(noisy, image_rgb):
        raise RuntimeError(f"occluder '{kind}' returned a view of its input instead of a new array")
    return noisy, visibility
