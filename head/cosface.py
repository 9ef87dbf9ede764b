"""CosFace / AM-Softmax (additive cosine margin): target logit s·(cos θ_y − m)."""
from __future__ import annotations

from typing import Dict

import torch

from head import HEADS
from head.margin_base import MarginHead


@HEADS.register()
@HEADS.register("AMSoftmax")
class CosFace(MarginHead):
    """CosFace, also registered as ``AMSoftmax``. Reference: FaceX-Zoo ``head/AM_Softmax.py`` (defaults m 0.35,
    s 32; the same formula as insightface ``recognition/arcface_torch/losses.py`` ``CosFace``, m 0.4, s 64).

    Target s·(cos θ_y − m) for every sample (no condition), non-target logits s·cos θ_j.
    Departure: the cosine is clamped to ±(1 − 1e-7) instead of ±1.
    """

    def __init__(self, feat_dim: int, num_class: int, margin: float = 0.35, scale: float = 32.0) -> None:
        super().__init__(feat_dim, num_class, scale)
        self.margin = float(margin)

    def logits_from_cosine(self, cosine: torch.Tensor, labels: torch.Tensor,
                           embeddings: torch.Tensor) -> Dict[str, torch.Tensor]:
        target = self.target_cosine(cosine, labels) - self.margin
        return {"logits": self.scale * self.replace_target(cosine, labels, target)}
