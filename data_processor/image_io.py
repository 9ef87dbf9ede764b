"""Image reading and writing. Everything inside the toolbox is uint8 RGB ``H×W×3``."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as uint8 RGB ``H×W×3``; raise FileNotFoundError / ValueError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot decode image: {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def decode_image(buffer: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes (JPEG/PNG) to uint8 RGB."""
    image = cv2.imdecode(np.frombuffer(buffer, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot decode image bytes from {source}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def encode_image(image_rgb: np.ndarray, ext: str = ".png") -> bytes:
    ok, buffer = cv2.imencode(ext, cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"cannot encode image as {ext}")
    return buffer.tobytes()


def write_image(path: str | Path, image_rgb: np.ndarray) -> None:
    """Write uint8 RGB to ``path`` (format from the suffix), creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_image(image_rgb, path.suffix or ".png"))
