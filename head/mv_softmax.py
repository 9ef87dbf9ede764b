"""MV-Softmax (Wang et al. 2020): margin on the target plus emphasis on mis-classified negatives."""
from __future__ import annotations

from typing import Dict

import torch

from head import HEADS
from head.margin_base import MarginHead, additive_angular_target


@HEADS.register()
class MVSoftmax(MarginHead):
    """Reference: FaceX-Zoo ``head/MV_Softmax.py`` (FaceX-Zoo's default head, its MobileFaceNet SDK model);
    defaults m 0.35, s 32, t (``mv_weight``) 1.12, ``is_am`` true. With c_y = cos θ_y:

    - ``is_am``: negatives j with cos θ_j > c_y − m are mis-classified; the target is c_y − m only where
      c_y > m, else c_y unchanged;
    - arc branch: negatives with cos θ_j > cos(θ_y + m) (raw) are mis-classified; the target is cos(θ_y + m)
      where c_y > 0, else c_y (an easy margin; the reference's threshold/mm attributes are unused);
    - a mis-classified negative becomes t·cos θ_j + t − 1 (t = 1 leaves it unchanged); the rest stay s·cos θ_j.

    Departure: the reference does not clamp the cosine (this head clamps to ±(1 − 1e-7), as every head here).
    """

    def __init__(self, feat_dim: int, num_class: int, margin: float = 0.35, scale: float = 32.0,
                 t: float = 1.12, is_am: bool = True) -> None:
        super().__init__(feat_dim, num_class, scale)
        if t < 1.0:
            raise ValueError(f"MVSoftmax: t must be >= 1 (it emphasises mis-classified negatives), got {t}")
        self.margin = float(margin)
        self.t = float(t)
        self.is_am = bool(is_am)

    def logits_from_cosine(self, cosine: torch.Tensor, labels: torch.Tensor,
                           embeddings: torch.Tensor) -> Dict[str, torch.Tensor]:
        target_cos = self.target_cosine(cosine, labels)
        if self.is_am:
            boundary = target_cos - self.margin
            target = torch.where(target_cos > self.margin, boundary, target_cos)
        else:
            boundary = additive_angular_target(target_cos, self.margin, margin_am=None)
            target = torch.where(target_cos > 0, boundary, target_cos)
        misclassified = cosine > boundary[:, None]
        logits = torch.where(misclassified, self.t * cosine + (self.t - 1.0), cosine)
        return {"logits": self.scale * self.replace_target(logits, labels, target)}
