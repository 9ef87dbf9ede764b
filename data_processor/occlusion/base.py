"""The occluder registry, RNG resolution, input checks and the compositing step every occluder ends with.

An occluder is a function ``fn(image, landmarks, rng, **params) -> (noisy, visibility)`` registered in
``OCCLUDERS``. It receives a *read-only* view of the input image (so an accidental in-place write raises), float64
``[5, 2]`` landmarks in image pixels, and a ``numpy.random.Generator``; it returns a new uint8 ``H×W×3`` array and a
uint8 ``H×W`` visibility mask (1 = the pixel is the original one, 0 = occluded/filled).
"""
from __future__ import annotations

from typing import Sequence, Tuple, Union

import numpy as np

from utils.registry import Registry

OCCLUDERS = Registry("occluder")
RngLike = Union[np.random.Generator, int, Sequence[int]]


def make_rng(rng: RngLike) -> np.random.Generator:
    """A Generator from a Generator, an int seed or a sequence such as ``(seed, index)`` / ``(seed, epoch, index)``.

    Sequences seed ``numpy.random.default_rng([...])``, so a sample depends only on its (seed, index) and not on
    the worker count or the order in which samples are drawn.
    """
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        if rng < 0:
            raise ValueError(f"rng seed must be >= 0, got {rng}")
        return np.random.default_rng(int(rng))
    if isinstance(rng, (list, tuple)) and rng and all(isinstance(v, (int, np.integer)) for v in rng):
        if any(v < 0 for v in rng):
            raise ValueError(f"rng seed entries must be >= 0, got {tuple(rng)}")
        return np.random.default_rng([int(v) for v in rng])
    raise TypeError(f"rng must be a numpy Generator, an int seed or a (seed, index) tuple, got {rng!r}")


def check_face_input(image: np.ndarray, landmarks: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Validate an RGB face + its 5 landmarks; return a read-only view of the image and float64 landmarks."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ValueError(f"image must be a uint8 H×W×3 RGB numpy array, got shape {shape} dtype {dtype}")
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (5, 2):
        raise ValueError(f"landmarks must have shape (5, 2) (left eye, right eye, nose, left mouth, right mouth), "
                         f"got {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError(f"landmarks must be finite, got {points.tolist()}")
    view = image.view() if image.flags.c_contiguous else np.ascontiguousarray(image)  # cv2 needs contiguous
    view.flags.writeable = False
    return view, points


def composite(image: np.ndarray, hidden: np.ndarray, paint: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """New image = ``image`` with ``paint`` where ``hidden``; visibility = ``1 - hidden`` (uint8)."""
    hidden = hidden.astype(bool, copy=False)
    noisy = image.copy()
    np.copyto(noisy, paint, where=hidden[..., None])
    return noisy, (~hidden).view(np.uint8)


@OCCLUDERS.register("clean")
def clean_view(image: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """The identity view: a copy of the image, everything visible."""
    return image.copy(), np.ones(image.shape[:2], dtype=np.uint8)
