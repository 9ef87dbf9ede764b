"""User-supplied RGBA occluder art (mask, glasses, …) with 5 anchor points, warped onto each face by homography.

The anchors are where the art expects the 5 face landmarks (left eye, right eye, nose tip, left mouth corner,
right mouth corner) in the art's own pixel coordinates. A folder of occluders holds ``NAME.png`` (RGBA) next to
``NAME.json`` = ``{"anchors": [[x, y], ... 5 points]}``.

Pixels whose warped alpha is >= ``alpha_threshold`` are alpha-blended and marked occluded; pixels below it are
left untouched and stay visible — so the visibility mask is exactly the set of pixels that may have changed.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from data_processor.occlusion.base import OCCLUDERS
from data_processor.occlusion.geometry import jitter_matrix

WORKING_SIZE = 320  # art is pre-scaled so its longest side is at most this (sharp, fast warps)


def _read_rgba(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"RGBA occluder image not found: {path}")
    data = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if data is None or data.ndim != 3 or data.shape[2] != 4:
        shape = None if data is None else data.shape
        raise ValueError(f"{path}: expected an RGBA image with an alpha channel, got shape {shape}")
    return cv2.cvtColor(data, cv2.COLOR_BGRA2RGBA)


class RGBAOccluder:
    """One RGBA occluder: ``occluder(image, landmarks, rng) -> (noisy, visibility)``."""

    def __init__(self, image: Union[str, Path, np.ndarray], anchors: Sequence[Sequence[float]],
                 alpha_threshold: float = 0.5, colour_offset: int = 0, scale_range: Sequence[float] = (0.95, 1.05),
                 rotation_deg: float = 4.0, shift: float = 0.02, name: Optional[str] = None) -> None:
        source = str(image) if not isinstance(image, np.ndarray) else "<array>"
        rgba = _read_rgba(Path(image)) if not isinstance(image, np.ndarray) else np.asarray(image)
        if rgba.dtype != np.uint8 or rgba.ndim != 3 or rgba.shape[2] != 4:
            raise ValueError(f"{source}: RGBA occluder must be uint8 H×W×4, got {rgba.dtype} {rgba.shape}")
        points = np.asarray(anchors, dtype=np.float64)
        if points.shape != (5, 2):
            raise ValueError(f"{source}: anchors must be 5 (x, y) points, got shape {points.shape}")
        if not 0.0 < alpha_threshold <= 1.0:
            raise ValueError(f"{source}: alpha_threshold must be in (0, 1], got {alpha_threshold}")
        factor = min(1.0, WORKING_SIZE / max(rgba.shape[:2]))
        if factor < 1.0:
            size = (max(1, round(rgba.shape[1] * factor)), max(1, round(rgba.shape[0] * factor)))
            points = points * np.array([size[0] / rgba.shape[1], size[1] / rgba.shape[0]])
            rgba = cv2.resize(rgba, size, interpolation=cv2.INTER_AREA)
        self.rgba = rgba
        # Premultiplied alpha, so resampling does not bleed the colour of transparent pixels into the edges.
        alpha = rgba[..., 3:].astype(np.float32) / 255.0
        self._premultiplied = np.concatenate([rgba[..., :3].astype(np.float32) * alpha, alpha], axis=2)
        self.anchors = points
        self.alpha_threshold = float(alpha_threshold)
        self.colour_offset = int(colour_offset)
        self.scale_range, self.rotation_deg, self.shift = tuple(scale_range), float(rotation_deg), float(shift)
        self.name = name or Path(source).stem

    def homography(self, landmarks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """3×3 map from art pixels to image pixels: least-squares fit of the anchors to the landmarks, then a random
        similarity about the landmarks' centroid (``shift`` is a fraction of the eye distance)."""
        fit, _ = cv2.findHomography(self.anchors, np.asarray(landmarks, dtype=np.float64), 0)
        if fit is None:
            raise ValueError(f"RGBA occluder {self.name}: no homography from its anchors to landmarks "
                             f"{np.round(landmarks, 2).tolist()}")
        eye_distance = float(np.linalg.norm(landmarks[1] - landmarks[0]))
        jitter = jitter_matrix(rng, landmarks.mean(axis=0), self.scale_range, self.rotation_deg,
                               self.shift * eye_distance)
        return np.vstack([jitter, [0.0, 0.0, 1.0]]) @ fit

    def __call__(self, image: np.ndarray, landmarks: np.ndarray,
                 rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
        height, width = image.shape[:2]
        warped = cv2.warpPerspective(self._premultiplied, self.homography(landmarks, rng), (width, height),
                                     flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        alpha = warped[..., 3]
        hidden = alpha >= self.alpha_threshold
        colour = warped[hidden, :3]
        if self.colour_offset > 0:
            colour = colour + alpha[hidden, None] * rng.integers(0, self.colour_offset + 1, size=3)
        noisy = image.copy()
        blend = colour + (1.0 - alpha[hidden, None]) * image[hidden]
        noisy[hidden] = np.clip(np.round(blend), 0, 255).astype(np.uint8)
        return noisy, (~hidden).astype(np.uint8)


def load_rgba_occluders(folder: Union[str, Path], **options: float) -> List[RGBAOccluder]:
    """Every ``NAME.png`` + ``NAME.json`` (anchors) pair in ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"RGBA occluder folder not found: {folder}")
    occluders = []
    for image_path in sorted(folder.glob("*.png")):
        meta_path = image_path.with_suffix(".json")
        if not meta_path.is_file():
            raise FileNotFoundError(f"{image_path}: missing anchor file {meta_path.name} "
                                    f'(expected {{"anchors": [[x, y], ... 5 points]}})')
        try:
            anchors = json.loads(meta_path.read_text(encoding="utf-8"))["anchors"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(f"{meta_path}: expected a JSON object with key 'anchors' (5 [x, y] points): "
                             f"{error}") from None
        occluders.append(RGBAOccluder(image_path, anchors, **options))
    if not occluders:
        raise ValueError(f"{folder}: no RGBA occluders (*.png + *.json anchors) found")
    return occluders


@OCCLUDERS.register("rgba")
def rgba(image: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator,
         occluder: Union[RGBAOccluder, Sequence[RGBAOccluder], None] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Paste a user RGBA occluder (or one drawn at random from a list of them)."""
    if occluder is None:
        raise ValueError("occlusion kind 'rgba' needs occluder=RGBAOccluder(...) or a list of them "
                         "(see load_rgba_occluders)")
    if not isinstance(occluder, RGBAOccluder):
        choices = list(occluder)
        if not choices:
            raise ValueError("occlusion kind 'rgba': the occluder list is empty")
        occluder = choices[int(rng.integers(len(choices)))]
    return occluder(image, landmarks, rng)
