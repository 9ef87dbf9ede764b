"""Labelled image grids for example figures (deterministic: the same images give the same PNG bytes)."""
from __future__ import annotations

from typing import List, Optional, Sequence

import cv2
import numpy as np

BACKGROUND = 255
TEXT_COLOUR = (20, 20, 20)


def _text(canvas: np.ndarray, text: str, origin: tuple, scale: float = 0.4) -> None:
    cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, TEXT_COLOUR, 1, cv2.LINE_AA)


def image_grid(rows: Sequence[Sequence[np.ndarray]], row_labels: Optional[Sequence[str]] = None,
               column_labels: Optional[Sequence[str]] = None, cell: int = 112, gap: int = 4,
               label_width: int = 110) -> np.ndarray:
    """Uint8 RGB grid: one row per ``rows`` entry (uint8 RGB images, resized to ``cell``×``cell``), with optional
    labels on the left and on top."""
    if not rows or not all(len(row) for row in rows):
        raise ValueError("image_grid needs at least one image per row")
    columns = max(len(row) for row in rows)
    left = label_width if row_labels else 0
    top = 18 if column_labels else 0
    height = top + len(rows) * (cell + gap) + gap
    width = left + columns * (cell + gap) + gap
    canvas = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
    for r, row in enumerate(rows):
        y = top + gap + r * (cell + gap)
        if row_labels:
            _text(canvas, str(row_labels[r]), (4, y + cell // 2 + 4))
        for c, image in enumerate(row):
            x = left + gap + c * (cell + gap)
            if image.shape[:2] != (cell, cell):
                image = cv2.resize(image, (cell, cell), interpolation=cv2.INTER_AREA)
            canvas[y:y + cell, x:x + cell] = image
    if column_labels:
        for c, label in enumerate(column_labels):
            _text(canvas, str(label), (left + gap + c * (cell + gap) + 2, 13))
    return canvas


def visibility_overlay(image: np.ndarray, visibility: np.ndarray, colour: Sequence[int] = (255, 0, 255),
                       strength: float = 0.45) -> np.ndarray:
    """``image`` with the occluded pixels (visibility 0) tinted, to show a visibility mask."""
    tinted = image.astype(np.float32)
    hidden = visibility == 0
    tinted[hidden] = (1 - strength) * tinted[hidden] + strength * np.asarray(colour, dtype=np.float32)
    return np.round(tinted).astype(np.uint8)


def stack_rows(images: List[np.ndarray], gap: int = 8) -> np.ndarray:
    """Stack grids of possibly different widths vertically (right-padded with background)."""
    width = max(image.shape[1] for image in images)
    padded = [np.pad(image, ((0, gap), (0, width - image.shape[1]), (0, 0)), constant_values=BACKGROUND)
              for image in images]
    return np.concatenate(padded, axis=0)
