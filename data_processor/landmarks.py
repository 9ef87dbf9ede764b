"""Five-point landmarks: the ArcFace template and the per-image landmark file format.

Landmark file: one line per image, ``relative/path x1 y1 x2 y2 x3 y3 x4 y4 x5 y5`` in image pixels, points in the
order left eye, right eye, nose tip, left mouth corner, right mouth corner (the image's left = viewer's left).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict

import numpy as np

ARCFACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)
SPHEREFACE_TEMPLATE_112x96 = ARCFACE_TEMPLATE_112 - np.array([8.0, 0.0], dtype=np.float32)
TEMPLATES = {"arcface_112x112": ARCFACE_TEMPLATE_112, "sphereface_112x96": SPHEREFACE_TEMPLATE_112x96}
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")


def read_landmark_file(path: str | Path) -> Dict[str, np.ndarray]:
    """Parse a landmark file into ``{relative_path: float32[5, 2]}``; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"landmark file not found: {path}")
    landmarks: Dict[str, np.ndarray] = {}
    with open(path, "r", encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            if len(fields) != 11:
                raise ValueError(f"{path}:{line_no}: expected 'path x1 y1 ... x5 y5' (11 fields), got {len(fields)}")
            try:
                points = np.array([float(v) for v in fields[1:]], dtype=np.float32).reshape(5, 2)
            except ValueError:
                raise ValueError(f"{path}:{line_no}: landmark coordinates must be numbers: {line.strip()!r}") from None
            if fields[0] in landmarks:
                raise ValueError(f"{path}:{line_no}: duplicate entry for {fields[0]}")
            landmarks[fields[0]] = points
    return landmarks


def write_landmark_file(path: str | Path, landmarks: Dict[str, np.ndarray]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for name, points in landmarks.items():
            coords = " ".join(f"{v:.2f}" for v in np.asarray(points, dtype=np.float32).reshape(-1))
            handle.write(f"{name} {coords}\n")
