"""ElasticFace (Boutros et al. 2022): ArcFace / CosFace with a per-sample margin drawn from N(m, σ) in training."""
from __future__ import annotations

from typing import Dict

import torch

from head import HEADS
from head.margin_base import MarginHead, additive_angular_target, check_margin_am


class ElasticMarginHead(MarginHead):
    """Draws one margin per sample from N(margin, std) in training mode; uses ``margin`` itself in eval mode.

    The draw is ``torch.normal(margin, std, size)`` on the global generator, as the reference's, so a seeded run
    draws the reference's margins. ``plus`` (ElasticFace+) reorders the drawn margins by the target cosine exactly
    as the reference code does: with ``order`` = the indices sorting cos θ_y descending and the margins sorted
    ascending, sample i gets ``sorted_margins[order[i]]`` (a gather; the paper's intent, the largest cos θ_y
    getting the smallest margin, would be the scatter ``sorted_margins`` → ``order``; the two agree only when the
    permutation is its own inverse). Both are reproduced as coded, not as described.
    """

    def __init__(self, feat_dim: int, num_class: int, margin: float, scale: float, std: float,
                 plus: bool = False) -> None:
        super().__init__(feat_dim, num_class, scale)
        if std < 0:
            raise ValueError(f"{type(self).__name__}: std must be >= 0, got {std}")
        self.margin = float(margin)
        self.std = float(std)
        self.plus = bool(plus)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, margin={self.margin}, std={self.std}, plus={self.plus}"

    def sample_margins(self, labels: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """[B] margins: drawn in training mode (σ > 0; fp32 draws, as the reference's), else the fixed mean in
        ``dtype``."""
        if self.training and self.std > 0:
            return torch.normal(self.margin, self.std, size=labels.shape, device=labels.device)
        return torch.full(labels.shape, self.margin, dtype=dtype, device=labels.device)

    def margins_for(self, target_cos: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """[B] per-sample margins, ElasticFace+-ordered when ``plus`` (see the class docstring)."""
        margins = self.sample_margins(labels, target_cos.dtype)
        if self.plus:
            with torch.no_grad():
                order = torch.sort(target_cos.detach(), dim=0, descending=True).indices
                margins = torch.sort(margins, dim=0).values[order]
        return margins.to(target_cos.dtype)


@HEADS.register()
class ElasticArcFace(ElasticMarginHead):
    """Reference: fdbtrs/ElasticFace ``utils/losses.py`` ``ElasticArcFace`` (config: m 0.5, s 64, σ 0.05; the
    GFRO teacher's head). Target s·cos(θ_y + m_i), m_i ~ N(m, σ), computed as cos θ·cos m_i − sin θ·sin m_i
    (the reference: cos(acos(cos θ) + m_i)); no fallback past π, as the reference (``margin_am`` null).
    Non-target logits s·cos θ_j.

    Option (not in the reference): ``margin_am`` a number or ``"insightface"`` falls back to cos θ_y − mm where
    θ_y + m_i ≥ π, as ``ArcFace`` (keeps the target monotonic in θ). Departures: fixed margin m in eval mode; the
    cosine is clamped to ±(1 − 1e-7) instead of ±1.
    """

    def __init__(self, feat_dim: int, num_class: int, margin: float = 0.5, scale: float = 64.0,
                 std: float = 0.05, margin_am: float | str | None = None, plus: bool = False) -> None:
        super().__init__(feat_dim, num_class, margin, scale, std, plus)
        self.margin_am = check_margin_am(margin_am, "ElasticArcFace")

    def logits_from_cosine(self, cosine: torch.Tensor, labels: torch.Tensor,
                           embeddings: torch.Tensor) -> Dict[str, torch.Tensor]:
        target_cos = self.target_cosine(cosine, labels)
        target = additive_angular_target(target_cos, self.margins_for(target_cos, labels), self.margin_am)
        return {"logits": self.scale * self.replace_target(cosine, labels, target)}


@HEADS.register()
class ElasticCosFace(ElasticMarginHead):
    """Reference: fdbtrs/ElasticFace ``utils/losses.py`` ``ElasticCosFace``. Target s·(cos θ_y − m_i),
    m_i ~ N(m, σ); defaults m 0.35, s 64, σ 0.025 (the reference's ``config/config_ElasticCosFace.py`` uses
    σ 0.05: set ``std`` for that). Departures: fixed margin m in eval mode; the cosine is clamped to ±(1 − 1e-7)
    instead of ±1.
    """

    def __init__(self, feat_dim: int, num_class: int, margin: float = 0.35, scale: float = 64.0,
                 std: float = 0.025, plus: bool = False) -> None:
        super().__init__(feat_dim, num_class, margin, scale, std, plus)

    def logits_from_cosine(self, cosine: torch.Tensor, labels: torch.Tensor,
                           embeddings: torch.Tensor) -> Dict[str, torch.Tensor]:
        target_cos = self.target_cosine(cosine, labels)
        target = target_cos - self.margins_for(target_cos, labels)
        return {"logits": self.scale * self.replace_target(cosine, labels, target)}
