"""CurricularFace (Huang et al. 2020): ArcFace target plus adaptive re-weighting of hard negatives."""
from __future__ import annotations

from typing import Dict

import torch

from head import HEADS
from head.margin_base import INSIGHTFACE_FALLBACK, MarginHead, additive_angular_target, global_mean_std


@HEADS.register()
class CurricularFace(MarginHead):
    """Reference: HuangYG123/CurricularFace ``head/metrics.py`` ``CurricularFace`` (copied unchanged into
    FaceX-Zoo ``head/CurricularFace.py``); defaults m 0.5, s 64, momentum 0.01.

    With c_y = cos θ_y and c_m = cos(θ_y + m) (the raw value, no fallback):

    - target: c_m where c_y > cos(π − m), else c_y − sin(π − m)·m (insightface fallback);
    - t ← momentum·mean(c_y) + (1 − momentum)·t, updated *before* the re-weighting, which uses the new t;
    - hard negatives are the j with cos θ_j > c_m (the raw c_m, as the reference's mask, not the fallback
      target); they become cos θ_j·(t + cos θ_j); the other logits stay s·cos θ_j.

    Departures: t is a scalar buffer (reference: shape [1]) updated only in training mode (the reference updates
    it on every forward); the cosine is clamped to ±(1 − 1e-7) instead of ±1.
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
        raw_shifted = additive_angular_target(target_cos, self.margin, margin_am=None)
        target = additive_angular_target(target_cos, self.margin, INSIGHTFACE_FALLBACK)
        if self.training:
            with torch.no_grad():
                batch_t = global_mean_std(target_cos, not self.batch_is_global)[0]
                self.t.copy_(self.momentum * batch_t + (1.0 - self.momentum) * self.t)
        hard = cosine > raw_shifted[:, None]
        t = self.t.to(cosine.dtype)
        logits = torch.where(hard, cosine * (t + cosine), cosine)
        return {"logits": self.scale * self.replace_target(logits, labels, target)}
