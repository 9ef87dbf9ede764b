"""MagFace (Meng et al. 2021): an ArcFace margin that grows with the embedding norm, plus a norm regulariser."""
from __future__ import annotations

from typing import Dict

import torch

from head import HEADS
from head.margin_base import MarginHead, additive_angular_target


@HEADS.register()
class MagFace(MarginHead):
    """Norm a = ‖e‖ clamped to [lower_norm, upper_norm]; margin m(a) = lower_margin + (upper_margin −
    lower_margin)·(a − lower_norm)/(upper_norm − lower_norm); target s·cos(θ_y + m(a)) with fallback
    cos θ_y − margin_am past π. ``aux_loss`` = lambda_g · mean(g(a)), g(a) = a/upper_norm² + 1/a (add it to the CE).

    Defaults are FaceX-Zoo's (λ_g 20; JHMFR/FaceT uses 35). The embeddings must be the backbone output before any
    normalisation, since the norm is the quality signal.
    """

    def __init__(self, feat_dim: int, num_class: int, lower_margin: float = 0.45, upper_margin: float = 0.8,
                 lower_norm: float = 10.0, upper_norm: float = 110.0, scale: float = 64.0,
                 lambda_g: float = 20.0, margin_am: float = 0.0) -> None:
        super().__init__(feat_dim, num_class, scale)
        if not 0 < lower_norm < upper_norm:
            raise ValueError(f"MagFace: need 0 < lower_norm < upper_norm, got {lower_norm}, {upper_norm}")
        self.lower_margin = float(lower_margin)
        self.upper_margin = float(upper_margin)
        self.lower_norm = float(lower_norm)
        self.upper_norm = float(upper_norm)
        self.lambda_g = float(lambda_g)
        self.margin_am = float(margin_am)

    def logits_from_cosine(self, cosine: torch.Tensor, labels: torch.Tensor,
                           embeddings: torch.Tensor) -> Dict[str, torch.Tensor]:
        norms = embeddings.norm(dim=1).clamp(self.lower_norm, self.upper_norm)
        slope = (self.upper_margin - self.lower_margin) / (self.upper_norm - self.lower_norm)
        margins = self.lower_margin + slope * (norms - self.lower_norm)
        target = additive_angular_target(self.target_cosine(cosine, labels), margins, self.margin_am)
        regulariser = norms / self.upper_norm ** 2 + 1.0 / norms
        return {"logits": self.scale * self.replace_target(cosine, labels, target),
                "aux_loss": self.lambda_g * regulariser.mean()}
