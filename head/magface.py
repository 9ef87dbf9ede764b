"""MagFace (Meng et al. 2021): an ArcFace margin that grows with the embedding norm, plus a norm regulariser."""
from __future__ import annotations

from typing import Dict

import torch

from head import HEADS
from head.margin_base import MarginHead, additive_angular_target, check_margin_am


@HEADS.register()
class MagFace(MarginHead):
    """Reference: FaceX-Zoo ``head/MagFace.py`` (defaults s 64, l_a 10, u_a 110, l_m 0.45, u_m 0.8, λ_g 20,
    margin_am 0, as in its ``head_conf.yaml``; the loss adds the mean of the returned λ_g·g).

    a = ‖e‖ clamped to [lower_norm, upper_norm] (not detached: the margin and g carry gradient to the norm);
    m(a) = lower_margin + (upper_margin − lower_margin)·(a − lower_norm)/(upper_norm − lower_norm);
    target cos(θ_y + m(a)) where cos θ_y > cos(π − m(a)), else cos θ_y − margin_am;
    ``aux_loss`` = lambda_g·mean(a/upper_norm² + 1/a) (add it to the CE).

    The official MagFace (IrvingMeng/MagFace ``models/magface.py`` ``MagLinear`` + ``MagLoss``; λ_g 35 in its
    scripts, also JHMFR/FaceT) is available with ``margin_am="insightface"`` (fallback cos θ_y − sin(π − m(a))·m(a)
    past th = cos(π − m(a))) or ``easy_margin=True`` (MagLinear's default: cos θ_y kept where cos θ_y ≤ 0).

    The embeddings must be the backbone output before any normalisation, since the norm is the quality signal.
    Departure: the cosine is clamped to ±(1 − 1e-7) instead of ±1.
    """

    def __init__(self, feat_dim: int, num_class: int, lower_margin: float = 0.45, upper_margin: float = 0.8,
                 lower_norm: float = 10.0, upper_norm: float = 110.0, scale: float = 64.0,
                 lambda_g: float = 20.0, margin_am: float | str = 0.0, easy_margin: bool = False) -> None:
        super().__init__(feat_dim, num_class, scale)
        if not 0 < lower_norm < upper_norm:
            raise ValueError(f"MagFace: need 0 < lower_norm < upper_norm, got {lower_norm}, {upper_norm}")
        self.lower_margin = float(lower_margin)
        self.upper_margin = float(upper_margin)
        self.lower_norm = float(lower_norm)
        self.upper_norm = float(upper_norm)
        self.lambda_g = float(lambda_g)
        if margin_am is None:
            raise ValueError("MagFace: margin_am must be a number or 'insightface'")
        self.margin_am = check_margin_am(margin_am, "MagFace")
        self.easy_margin = bool(easy_margin)

    def logits_from_cosine(self, cosine: torch.Tensor, labels: torch.Tensor,
                           embeddings: torch.Tensor) -> Dict[str, torch.Tensor]:
        norms = embeddings.norm(dim=1).clamp(self.lower_norm, self.upper_norm)
        slope = (self.upper_margin - self.lower_margin) / (self.upper_norm - self.lower_norm)
        margins = slope * (norms - self.lower_norm) + self.lower_margin
        target = additive_angular_target(self.target_cosine(cosine, labels), margins, self.margin_am,
                                         self.easy_margin)
        regulariser = norms / self.upper_norm ** 2 + 1.0 / norms
        return {"logits": self.scale * self.replace_target(cosine, labels, target),
                "aux_loss": self.lambda_g * regulariser.mean()}
