"""CurricularFace (Huang et al. 2020): ArcFace target plus adaptive re-weighting of hard negatives."""
from __future__ import annotations

import math
from typing import Dict

import torch

from head import HEADS
from head.margin_base import MarginHead, additive_angular_target


@HEADS.register()
class CurricularFace(MarginHead):
    """Target s·cos(θ_y + m) (fallback cos θ_y − m·sin m past π); a negative j with cos θ_j above the target is
    re-weighted to cos θ_j·(t + cos θ_j), where the buffer t is an EMA (``momentum``) of the batch mean cos θ_y.

    t starts at 0 (hard negatives down-weighted early, emphasised as t grows) and is only updated in training mode.
    """

    def __init__(self, feat_dim: int, num_class: int, margin: float = 0.5, scale: float = 64.0,
                 momentum: float = 0.01) -> None:
        super().__init__(feat_dim, num_class, scale)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"CurricularFace: momentum must be in [0, 1], got {momentum}")
        self.margin = float(margin)
        self.momentum = float(momentum)
        self.register_buffer("t", torch.zeros(()))

    def logits_from_cosine(self, cosine: torch.Tensor, labels: torch.Tensor,
                           embeddings: torch.Tensor) -> Dict[str, torch.Tensor]:
        target_cos = self.target_cosine(cosine, labels)
        insightface_fallback = self.margin * math.sin(self.margin)
        target = additive_angular_target(target_cos, self.margin, insightface_fallback)
        if self.training:
            with torch.no_grad():
                self.t.mul_(1.0 - self.momentum).add_(self.momentum * target_cos.mean())
        hard = cosine > target[:, None]
        t = self.t.to(cosine.dtype)
        logits = torch.where(hard, cosine * (t + cosine), cosine)
        return {"logits": self.scale * self.replace_target(logits, labels, target)}
