"""AdaFace (Kim et al. 2022): a margin that adapts to image quality, read from the embedding norm."""
from __future__ import annotations

import math
from typing import Dict

import torch

from head import HEADS
from head.margin_base import MarginHead

ANGLE_EPS = 1e-3


@HEADS.register()
class AdaFace(MarginHead):
    """Quality ĝ = clip(h·(‖e‖ − μ)/(σ + 1e-3), −1, 1) with μ, σ EMAs (``t_alpha``) of the batch norm mean and
    std (buffers, initialised 20 and 100, updated in training mode only). Target:
    θ' = θ_y − m·ĝ (kept in [1e-3, π − 1e-3]), logit s·(cos θ' − (m + m·ĝ)).

    Defaults m 0.4, h 0.333, s 64, t_alpha 0.01 (OAML's scripts). Norms are clipped to [1e-3, 100] and detached,
    as in the reference. The angle clip only limits a shift the margin made, so m = 0 gives exactly s·cos.
    """

    def __init__(self, feat_dim: int, num_class: int, margin: float = 0.4, h: float = 0.333,
                 scale: float = 64.0, t_alpha: float = 0.01) -> None:
        super().__init__(feat_dim, num_class, scale)
        if not 0.0 <= t_alpha <= 1.0:
            raise ValueError(f"AdaFace: t_alpha must be in [0, 1], got {t_alpha}")
        self.margin = float(margin)
        self.h = float(h)
        self.t_alpha = float(t_alpha)
        self.register_buffer("batch_mean", torch.tensor(20.0))
        self.register_buffer("batch_std", torch.tensor(100.0))

    def quality(self, embeddings: torch.Tensor) -> torch.Tensor:
        """[B] ĝ in [−1, 1]; updates the norm statistics first when training."""
        norms = embeddings.detach().norm(dim=1).clamp(1e-3, 100.0)
        if self.training:
            with torch.no_grad():
                self.batch_mean.mul_(1.0 - self.t_alpha).add_(self.t_alpha * norms.mean())
                if norms.numel() > 1:  # the std of one sample is undefined
                    self.batch_std.mul_(1.0 - self.t_alpha).add_(self.t_alpha * norms.std())
        return (self.h * (norms - self.batch_mean) / (self.batch_std + 1e-3)).clamp(-1.0, 1.0)

    def logits_from_cosine(self, cosine: torch.Tensor, labels: torch.Tensor,
                           embeddings: torch.Tensor) -> Dict[str, torch.Tensor]:
        g = self.quality(embeddings)
        target_cos = self.target_cosine(cosine, labels)
        angle_shift = -self.margin * g
        shifted = target_cos * torch.cos(angle_shift) - torch.sqrt(1.0 - target_cos ** 2) * torch.sin(angle_shift)
        theta = torch.acos(target_cos)
        shifted = torch.where((theta + angle_shift < ANGLE_EPS) & (angle_shift < 0),
                              torch.full_like(shifted, math.cos(ANGLE_EPS)), shifted)
        shifted = torch.where((theta + angle_shift > math.pi - ANGLE_EPS) & (angle_shift > 0),
                              torch.full_like(shifted, math.cos(math.pi - ANGLE_EPS)), shifted)
        target = shifted - (self.margin + self.margin * g)
        return {"logits": self.scale * self.replace_target(cosine, labels, target)}
