"""5-point similarity alignment to a named template (ArcFace 112×112, SphereFace 112×96).

The similarity transform (rotation, uniform scale, translation) is the least-squares (Umeyama) fit from the
detected landmarks to the template, as scikit-image's ``SimilarityTransform`` estimates it; the crop is
``cv2.warpAffine`` with bilinear interpolation and a black border — the recipe of insightface / FaceX-Zoo crops.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Tuple

import cv2
import numpy as np
from skimage.transform import SimilarityTransform

from data_processor.landmarks import TEMPLATES


@dataclass(frozen=True)
class AlignedFace:
    """An aligned crop (uint8 RGB), the landmarks in crop coordinates and the 2×3 image→crop matrix."""

    crop: np.ndarray
    landmarks: np.ndarray
    matrix: np.ndarray


def template_geometry(template: str) -> Tuple[np.ndarray, Tuple[int, int]]:
    """Template points ``[5, 2]`` and crop size ``(height, width)`` (parsed from the ``_HxW`` name suffix)."""
    if template not in TEMPLATES:
        raise KeyError(f"unknown alignment template {template!r}; known: {sorted(TEMPLATES)}")
    match = re.search(r"_(\d+)x(\d+)$", template)
    if not match:
        raise ValueError(f"template name {template!r} does not end in _HEIGHTxWIDTH")
    return np.asarray(TEMPLATES[template], dtype=np.float64), (int(match[1]), int(match[2]))


def estimate_similarity(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """2×3 matrix of the least-squares similarity transform mapping ``source`` points onto ``target``."""
    source = np.asarray(source, dtype=np.float64).reshape(-1, 2)
    target = np.asarray(target, dtype=np.float64).reshape(-1, 2)
    if source.shape != target.shape or len(source) < 2:
        raise ValueError(f"need matching point sets of at least 2 points, got {source.shape} and {target.shape}")
    if not np.all(np.isfinite(source)):
        raise ValueError(f"landmarks must be finite, got {source.tolist()}")
    if hasattr(SimilarityTransform, "from_estimate"):  # scikit-image >= 0.26
        transform = SimilarityTransform.from_estimate(source, target)
        if not transform:
            raise ValueError(f"similarity estimation failed for landmarks {source.tolist()}")
    else:
        transform = SimilarityTransform()
        if not transform.estimate(source, target):
            raise ValueError(f"similarity estimation failed for landmarks {source.tolist()}")
    return np.asarray(transform.params[:2], dtype=np.float64)


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2×3 affine matrix to ``[N, 2]`` points."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return points @ matrix[:, :2].T + matrix[:, 2]


def warp_to_crop(image: np.ndarray, matrix: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """``cv2.warpAffine`` of a uint8 RGB image to ``size = (height, width)``, bilinear, black border."""
    height, width = size
    return cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(0, 0, 0))


def align_face(image: np.ndarray, landmarks: np.ndarray, template: str = "arcface_112x112") -> AlignedFace:
    """Warp ``image`` so that its 5 ``landmarks`` land on ``template``; returns crop + crop-space landmarks."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"align_face expects a uint8 RGB H×W×3 image, got {image.dtype} {image.shape}")
    points, size = template_geometry(template)
    landmarks = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    if landmarks.shape != (5, 2):
        raise ValueError(f"align_face expects 5 landmarks [5, 2], got {landmarks.shape}")
    matrix = estimate_similarity(landmarks, points)
    crop = warp_to_crop(image, matrix, size)
    return AlignedFace(crop, transform_points(landmarks, matrix).astype(np.float32), matrix)


def center_crop(image: np.ndarray, template: str = "arcface_112x112", fraction: float = 1.0) -> AlignedFace:
    """Fallback when no face is found: the central ``fraction`` of the image (template aspect) resized to size.

    ``landmarks`` are the template points (where a centred face would be), ``matrix`` the crop's transform.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    points, (out_h, out_w) = template_geometry(template)
    height, width = image.shape[:2]
    scale = min(height / out_h, width / out_w) * fraction  # source pixels per crop pixel
    x0, y0 = (width - out_w * scale) / 2.0, (height - out_h * scale) / 2.0
    matrix = np.array([[1.0 / scale, 0.0, -x0 / scale], [0.0, 1.0 / scale, -y0 / scale]])
    crop = warp_to_crop(image, matrix, (out_h, out_w))
    return AlignedFace(crop, points.astype(np.float32), matrix)


def sphereface_from_arcface(crop: np.ndarray) -> np.ndarray:
    """A 112×96 SphereFace crop from a 112×112 ArcFace crop: the templates differ by an 8-pixel x shift only."""
    if crop.shape[:2] != (112, 112):
        raise ValueError(f"expected a 112×112 ArcFace crop, got {crop.shape[:2]}")
    return crop[:, 8:104]
