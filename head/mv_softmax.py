"""MV-Softmax (Wang et al. 2020): margin on the target plus emphasis on mis-classified negatives."""
from __future__ import annotations

from typing import Dict

import torch

from head import HEADS
from head.margin_base import MarginHead, additive_angular_target


@HEADS.register()
class MVSoftmax(MarginHead):
    """FaceX-Zoo's default head (MobileFaceNet SDK model): m 0.35, s 32, t 1.12, AM margin.

    Target: cos θ_y − m (``is_am``) or cos(θ_y + m) (ArcFace rule). A negative j is mis-classified when
    cos θ_j exceeds that target; its cosine becomes t·cos θ_j + t − 1 (t = 1 leaves it unchanged).
    """

    def __init__(self, feat_dim: int, num_class: int, margin: float = 0.35, scale: float = 32.0,
                 t: float = 1.12, is_am: bool = True) -> None:
        super().__init__(feat_dim, num_class, scale)
        if t < 1.0:
            raise ValueError(f"MVSoftmax: t must be >= 1 (it emphasises mis-classified negatives), got {t}")
        self.margin = float(margin)
        self.t = float(t)
        self.is_am = is_am

    def logits_from_cosine(self, cosine: torch.Tensor, labels: torch.Tensor,
                           embeddings: torch.Tensor) -> Dict[str, torch.Tensor]:
        target_cos = self.target_cosine(cosine, labels)
        if self.is_am:
            target = target_cos - self.margin
        else:
            target = additive_angular_target(target_cos, self.margin)
        misclassified = cosine > target[:, None]
        logits = torch.where(misclassified, self.t * cosine + (self.t - 1.0), cosine)
        return {"logits": self.scale * self.replace_target(logits, labels, target)}
