"""ArcFace (additive angular margin): target logit s·cos(θ_y + m)."""
from __future__ import annotations

from typing import Dict

import torch

from head import HEADS
from head.margin_base import MarginHead, additive_angular_target, check_margin_am


@HEADS.register()
class ArcFace(MarginHead):
    """ArcFace. Reference: FaceX-Zoo ``head/ArcFace.py`` (defaults m 0.35, s 32, margin_am 0) and, with
    ``margin_am="insightface"`` (or the number m·sin(π − m)), insightface ``recognition/arcface_torch/losses.py``
    ``ArcFace`` (m 0.5, s 64; ``configs/head/arcface_insightface.yaml``).

    Target cos(θ_y + m) where cos θ_y > cos(π − m); elsewhere cos θ_y − mm, with mm = ``margin_am`` (FaceX-Zoo:
    a number, 0 = no penalty there) or sin(π − m)·m (``"insightface"``). ``easy_margin`` (insightface's flag)
    instead keeps cos θ_y wherever cos θ_y ≤ 0. Non-target logits are s·cos θ_j.

    Departures: the cosine is clamped to ±(1 − 1e-7) instead of ±1 (finite gradients at |cos| = 1; changes
    logits by < 1e-7·s); class weights are stored [C, D] with N(0, 0.01) init.
    """

    def __init__(self, feat_dim: int, num_class: int, margin: float = 0.35, scale: float = 32.0,
                 easy_margin: bool = False, margin_am: float | str = 0.0) -> None:
        super().__init__(feat_dim, num_class, scale)
        self.margin = float(margin)
        self.easy_margin = bool(easy_margin)
        if margin_am is None:
            raise ValueError("ArcFace: margin_am must be a number or 'insightface'")
        self.margin_am = check_margin_am(margin_am, "ArcFace")

    def logits_from_cosine(self, cosine: torch.Tensor, labels: torch.Tensor,
                           embeddings: torch.Tensor) -> Dict[str, torch.Tensor]:
        target = additive_angular_target(self.target_cosine(cosine, labels), self.margin,
                                         self.margin_am, self.easy_margin)
        return {"logits": self.scale * self.replace_target(cosine, labels, target)}
