"""RetinaFace prior boxes, box/landmark decoding and greedy NMS (numpy/torch, no third-party ops)."""
from __future__ import annotations

import math
from typing import Sequence, Tuple

import numpy as np
import torch

VARIANCES: Tuple[float, float] = (0.1, 0.2)


def prior_boxes(image_size: Tuple[int, int], min_sizes: Sequence[Sequence[int]],
                steps: Sequence[int]) -> torch.Tensor:
    """Priors ``[N, 4]`` as (cx, cy, w, h) relative to the image, in the heads' output order.

    Level ``k`` has a ``ceil(H/step) × ceil(W/step)`` grid (what stride-2, padding-1 convs produce for any size);
    row-major over the grid, then the anchor sizes of that level.
    """
    height, width = image_size
    per_level = []
    for sizes, step in zip(min_sizes, steps):
        rows, cols = math.ceil(height / step), math.ceil(width / step)
        cy, cx = torch.meshgrid((torch.arange(rows, dtype=torch.float32) + 0.5) * step / height,
                                (torch.arange(cols, dtype=torch.float32) + 0.5) * step / width, indexing="ij")
        centres = torch.stack([cx, cy], dim=-1).reshape(-1, 1, 2).expand(-1, len(sizes), 2)
        scales = torch.tensor([[s / width, s / height] for s in sizes], dtype=torch.float32)
        scales = scales.unsqueeze(0).expand(centres.shape[0], -1, -1)
        per_level.append(torch.cat([centres, scales], dim=-1).reshape(-1, 4))
    return torch.cat(per_level, dim=0)


def decode_boxes(offsets: torch.Tensor, priors: torch.Tensor,
                 variances: Tuple[float, float] = VARIANCES) -> torch.Tensor:
    """SSD-style decoding: ``[N, 4]`` offsets → (x1, y1, x2, y2) relative to the image."""
    centres = priors[:, :2] + offsets[:, :2] * variances[0] * priors[:, 2:]
    sizes = priors[:, 2:] * torch.exp(offsets[:, 2:] * variances[1])
    return torch.cat([centres - sizes / 2, centres + sizes / 2], dim=1)


def decode_landmarks(offsets: torch.Tensor, priors: torch.Tensor,
                     variances: Tuple[float, float] = VARIANCES) -> torch.Tensor:
    """``[N, 10]`` offsets → ``[N, 5, 2]`` landmark (x, y) relative to the image."""
    points = offsets.reshape(-1, 5, 2)
    return priors[:, None, :2] + points * variances[0] * priors[:, None, 2:]


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices in decreasing score order."""
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        w = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]))
        h = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]))
        inter = w * h
        iou = inter / np.maximum(areas[best] + areas[rest] - inter, 1e-12)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)
