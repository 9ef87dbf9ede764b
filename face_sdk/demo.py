"""A real face image that ships with the environment: scikit-image's ``astronaut`` (Eileen Collins, NASA, public
domain), 512×512 RGB with one frontal face at roughly x 177–271, y 55–178."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from data_processor.image_io import read_image

DEMO_PREFIX = "demo:"
DEMO_IMAGES = ("astronaut",)


def demo_image(name: str = "astronaut") -> np.ndarray:
    """uint8 RGB demo image by name."""
    if name not in DEMO_IMAGES:
        raise KeyError(f"unknown demo image {name!r}; available: {list(DEMO_IMAGES)}")
    import skimage.data

    return np.ascontiguousarray(getattr(skimage.data, name)())


def load_image_argument(argument: str) -> np.ndarray:
    """A CLI image argument: a file path, or ``demo:<name>`` for an embedded demo image."""
    if argument.startswith(DEMO_PREFIX):
        return demo_image(argument[len(DEMO_PREFIX):])
    return read_image(Path(argument))
