"""AdaFace (Kim et al. 2022): a margin that adapts to image quality, read from the embedding norm."""
from __future__ import annotations

import math
from typing import Dict

import torch

from head import HEADS
from head.margin_base import MarginHead, global_mean_std

EPS = 1e-3  # the reference's eps: cosine clamp, norm-std guard and angle clip


@HEADS.register()
class AdaFace(MarginHead):
    """Reference: mk-minchul/AdaFace ``head.py`` ``AdaFace`` (defaults m 0.4, h 0.333, s 64 and t_alpha 0.01 as
    in its ``config.py``/scripts and OAML's; ``head.py`` itself defaults t_alpha to 1.0).

    - Every cosine is clamped to [−1 + 1e-3, 1 − 1e-3] (so every logit, not only the target, is capped).
    - Norms ‖e‖ are clipped to [1e-3, 100] and detached. In training mode the buffers are updated first:
      μ ← t_alpha·mean(‖e‖) + (1 − t_alpha)·μ, σ ← t_alpha·std(‖e‖) + (1 − t_alpha)·σ (unbiased std; initial
      μ 20, σ 100); then ĝ = clip(h·(‖e‖ − μ)/(σ + 1e-3), −1, 1) uses the updated μ, σ.
    - Target: θ' = clip(θ_y − m·ĝ, 1e-3, π − 1e-3) (g_angular = −m·ĝ), logit s·(cos θ' − (m + m·ĝ))
      (g_additive = m + m·ĝ); non-targets s·cos θ_j.

    cos θ' is computed as cos θ_y·cos(−m·ĝ) − sin θ_y·sin(−m·ĝ) (the reference: cos(acos(cos θ_y) − m·ĝ)), equal
    up to rounding, and exact for m = 0. Departures: the statistics are updated only in training mode (the
    reference updates them on every forward), a batch of one sample leaves σ unchanged (the reference's std is
    NaN there), the buffers are scalars (reference: shape [1]).
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
        norms = embeddings.detach().norm(dim=1).clamp(EPS, 100.0)
        if self.training:
            with torch.no_grad():  # global batch statistics under torchrun: the buffers agree on every rank
                batch_mean, batch_std = global_mean_std(norms, not self.batch_is_global)
                self.batch_mean.copy_(batch_mean * self.t_alpha + (1.0 - self.t_alpha) * self.batch_mean)
                if not torch.isnan(batch_std):  # the std of one sample is undefined
                    self.batch_std.copy_(batch_std * self.t_alpha + (1.0 - self.t_alpha) * self.batch_std)
        mean, std = self.batch_mean.to(norms.dtype), self.batch_std.to(norms.dtype)
        return (self.h * ((norms - mean) / (std + EPS))).clamp(-1.0, 1.0)

    def logits_from_cosine(self, cosine: torch.Tensor, labels: torch.Tensor,
                           embeddings: torch.Tensor) -> Dict[str, torch.Tensor]:
        cosine = cosine.clamp(-1.0 + EPS, 1.0 - EPS)
        g = self.quality(embeddings)
        target_cos = self.target_cosine(cosine, labels)
        angle_shift = -self.margin * g
        shifted = target_cos * torch.cos(angle_shift) - torch.sqrt(1.0 - target_cos ** 2) * torch.sin(angle_shift)
        theta = torch.acos(target_cos) + angle_shift  # θ ∈ [0.045, π − 0.045]: only the shift can leave [ε, π − ε]
        shifted = torch.where(theta < EPS, torch.full_like(shifted, math.cos(EPS)), shifted)
        shifted = torch.where(theta > math.pi - EPS, torch.full_like(shifted, math.cos(math.pi - EPS)), shifted)
        target = shifted - (self.margin + self.margin * g)
        return {"logits": self.scale * self.replace_target(cosine, labels, target)}
