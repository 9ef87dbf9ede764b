"""What replaces hidden pixels of a partial view or a random block: zero, mean, noise, blur or white."""
from __future__ import annotations

import cv2
import numpy as np

FILL_MODES = ("zero", "mean", "noise", "blur", "white")
BLUR_SIGMA_FRACTION = 0.08  # Gaussian sigma as a fraction of the image width: 9 px on a 112-wide face


def resolve_fill(mode: str, rng: np.random.Generator) -> str:
    """``mode`` itself, or one drawn uniformly from FILL_MODES when ``mode == "random"``."""
    if mode == "random":
        return FILL_MODES[int(rng.integers(len(FILL_MODES)))]
    if mode not in FILL_MODES:
        raise ValueError(f"fill must be one of {FILL_MODES} or 'random', got {mode!r}")
    return mode


def fill_image(image: np.ndarray, mode: str, rng: np.random.Generator) -> np.ndarray:
    """A full-size uint8 ``H×W×3`` paint layer for ``mode`` (composite it where pixels are hidden)."""
    mode = resolve_fill(mode, rng)
    if mode == "zero":
        return np.zeros_like(image)
    if mode == "white":
        return np.full_like(image, 255)
    if mode == "mean":
        mean = np.round(cv2.mean(image)[:3]).astype(np.uint8)
        return np.broadcast_to(mean, image.shape)
    if mode == "noise":
        mean, std = (np.asarray(v, dtype=np.float32).reshape(3) for v in cv2.meanStdDev(image))
        std = np.maximum(std, 16.0)
        noise = rng.standard_normal(image.shape, dtype=np.float32) * std + mean
        return np.clip(noise, 0, 255).astype(np.uint8)
    sigma = max(1.0, BLUR_SIGMA_FRACTION * image.shape[1])
    return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)
