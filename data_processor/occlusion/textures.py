"""Colours and simple textures (solid, stripes, noise, gradient, checker) for drawn occluders."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

TEXTURE_STYLES = ("solid", "stripes", "noise", "gradient", "checker")
SKIN_TONES = ((255, 219, 172), (241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36), (92, 58, 32))
DARK_LENSES = ((20, 20, 22), (40, 30, 22), (25, 35, 50), (45, 45, 45), (60, 40, 20))
FRAME_COLOURS = ((15, 15, 15), (90, 55, 30), (200, 170, 90), (185, 185, 195), (120, 20, 30), (30, 40, 110))


def jitter_colour(rng: np.random.Generator, colour: Sequence[int], amount: int = 15) -> np.ndarray:
    """``colour`` plus a uniform per-channel offset in ±``amount`` (uint8 range)."""
    return np.clip(np.asarray(colour, dtype=np.int32) + rng.integers(-amount, amount + 1, size=3), 0, 255)


def pick_colour(rng: np.random.Generator, palette: Optional[Sequence[Sequence[int]]] = None,
                amount: int = 15) -> np.ndarray:
    """A jittered palette colour, or a uniformly random colour when ``palette`` is None."""
    if palette is None:
        return rng.integers(0, 256, size=3)
    return jitter_colour(rng, palette[int(rng.integers(len(palette)))], amount)


def make_texture(rng: np.random.Generator, height: int, width: int, colour: Sequence[int],
                 style: Optional[str] = None, second_colour: Optional[Sequence[int]] = None) -> np.ndarray:
    """A uint8 ``height×width×3`` patch of ``colour`` in ``style`` (random style when None)."""
    if style is None:
        style = TEXTURE_STYLES[int(rng.integers(len(TEXTURE_STYLES)))]
    if style not in TEXTURE_STYLES:
        raise ValueError(f"texture style must be one of {TEXTURE_STYLES}, got {style!r}")
    base = np.asarray(colour, dtype=np.float32)
    other = (np.asarray(second_colour, dtype=np.float32) if second_colour is not None
             else np.clip(base + rng.uniform(-90, 90, size=3), 0, 255).astype(np.float32))
    height, width = max(1, int(height)), max(1, int(width))
    if style == "solid":
        patch = np.broadcast_to(base, (height, width, 3))
    elif style == "noise":
        patch = base + rng.standard_normal((height, width, 1), dtype=np.float32) * np.float32(rng.uniform(8, 25))
    else:
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        angle = rng.uniform(0, np.pi)
        along = xs * np.cos(angle) + ys * np.sin(angle)
        if style == "stripes":
            period = rng.uniform(3, 10)
            weight = ((along / period) % 2.0 < 1.0).astype(np.float32)
        elif style == "checker":
            period = rng.uniform(3, 9)
            across = -xs * np.sin(angle) + ys * np.cos(angle)
            weight = (((along // period) + (across // period)) % 2).astype(np.float32)
        else:  # gradient
            span = max(float(along.max() - along.min()), 1.0)
            weight = (along - along.min()) / span
        patch = base * (1.0 - weight[..., None]) + other * weight[..., None]
    return np.clip(patch, 0, 255).astype(np.uint8)
