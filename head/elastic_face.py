"""ElasticFace (Boutros et al. 2022): ArcFace / CosFace with a per-sample margin drawn from N(m, σ) in training."""
from __future__ import annotations

from typing import Dict

import torch

from head import HEADS
from head.margin_base import MarginHead, additive_angular_target


class ElasticMarginHead(MarginHead):
    """Draws one margin per sample from N(margin, std) in training mode; uses ``margin`` itself in eval mode."""

    def __init__(self, feat_dim: int, num_class: int, margin: float, scale: float, std: float) -> None:
        super().__init__(feat_dim, num_class, scale)
        if std < 0:
            raise ValueError(f"{type(self).__name__}: std must be >= 0, got {std}")
        self.margin = float(margin)
        self.std = float(std)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, margin={self.margin}, std={self.std}"

    def sample_margins(self, labels: torch.Tensor) -> torch.Tensor:
        """[B] margins: random in training mode (σ > 0), the fixed mean otherwise."""
        margins = torch.full(labels.shape, self.margin, dtype=torch.float32, device=labels.device)
        if self.training and self.std > 0:
            margins = margins + self.std * torch.randn_like(margins)
        return margins


@HEADS.register()
class ElasticArcFace(ElasticMarginHead):
    """Target s·cos(θ_y + m_i), m_i ~ N(m, σ); defaults m 0.5, s 64, σ 0.05 (ElasticFace-Arc).

    Unlike the reference, θ_y + m_i ≥ π falls back to cos θ_y − margin_am as in ``ArcFace`` (keeps it monotonic).
    """

    def __init__(self, feat_dim: int, num_class: int, margin: float = 0.5, scale: float = 64.0,
                 std: float = 0.05, margin_am: float = 0.0) -> None:
        super().__init__(feat_dim, num_class, margin, scale, std)
        self.margin_am = float(margin_am)

    def logits_from_cosine(self, cosine: torch.Tensor, labels: torch.Tensor,
                           embeddings: torch.Tensor) -> Dict[str, torch.Tensor]:
        target = additive_angular_target(self.target_cosine(cosine, labels), self.sample_margins(labels),
                                         self.margin_am)
        return {"logits": self.scale * self.replace_target(cosine, labels, target)}


@HEADS.register()
class ElasticCosFace(ElasticMarginHead):
    """Target s·(cos θ_y − m_i), m_i ~ N(m, σ); defaults m 0.35, s 64, σ 0.025 (ElasticFace-Cos)."""

    def __init__(self, feat_dim: int, num_class: int, margin: float = 0.35, scale: float = 64.0,
                 std: float = 0.025) -> None:
        super().__init__(feat_dim, num_class, margin, scale, std)

    def logits_from_cosine(self, cosine: torch.Tensor, labels: torch.Tensor,
                           embeddings: torch.Tensor) -> Dict[str, torch.Tensor]:
        target = self.target_cosine(cosine, labels) - self.sample_margins(labels)
        return {"logits": self.scale * self.replace_target(cosine, labels, target)}
