"""ArcFace (additive angular margin): target logit s·cos(θ_y + m)."""
from __future__ import annotations

from typing import Dict

import torch

from head import HEADS
from head.margin_base import MarginHead, additive_angular_target


@HEADS.register()
class ArcFace(MarginHead):
    """ArcFace with FaceX-Zoo defaults (m 0.35, s 32); insightface uses m 0.5, s 64, margin_am = m·sin m.

    Where θ_y + m would pass π the target becomes cos θ_y − margin_am (FaceX-Zoo's rule; margin_am 0 means no
    penalty there). ``easy_margin`` applies the margin only where cos θ_y > 0.
    """

    def __init__(self, feat_dim: int, num_class: int, margin: float = 0.35, scale: float = 32.0,
                 easy_margin: bool = False, margin_am: float = 0.0) -> None:
        super().__init__(feat_dim, num_class, scale)
        self.margin = float(margin)
        self.easy_margin = easy_margin
        self.margin_am = float(margin_am)

    def logits_from_cosine(self, cosine: torch.Tensor, labels: torch.Tensor,
                           embeddings: torch.Tensor) -> Dict[str, torch.Tensor]:
        target = additive_angular_target(self.target_cosine(cosine, labels), self.margin,
                                         self.margin_am, self.easy_margin)
        return {"logits": self.scale * self.replace_target(cosine, labels, target)}
