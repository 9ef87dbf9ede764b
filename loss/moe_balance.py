"""Load balancing for mixture-of-experts gates: Switch-style importance × load, and a KL to a prior.

For a gate that routes N tokens over E experts with probabilities ``P`` ([N, E], rows sum to 1):

* importance ``P̄_i`` — the mean gate probability of expert i (differentiable);
* load ``f_i``       — the fraction of routing slots dispatched to expert i: each token's top-k experts
  (k = 1, the arg-max, for dense gates) chosen by :func:`top_k_mask` (ties go to the lower expert index, so the
  load is deterministic even when the gate starts with all logits equal); a count, so it carries no gradient;
* loss ``E · Σ_i f_i · P̄_i`` (Fedus et al., Switch Transformer, 2021).

Choice *(ours)*: this product form instead of Shazeer's CV²(importance) + CV²(load) because it needs no noisy
gating to make the load differentiable. The loss is 1 for balanced routing (f and P̄ uniform), E when every token
goes to one expert with certainty, and its gradient ``E·f_i`` lowers the probability of overloaded experts.

:func:`prior_kl_loss` is the form for a gate that is *meant* to be unbalanced (GFRO's integrate gate with
``global_prior``): ``KL(π ‖ P̄) = Σ_i π_i log(π_i / P̄_i)`` from a fixed prior ``π`` to the importance. It is 0
with zero gradient wrt the gate logits when every token's distribution equals the prior, grows without bound
when the batch abandons any expert that the prior keeps (P̄_i → 0), and with a uniform prior it is a plain
balance term (minimum at uniform importance). Both are computed in float32 whatever the autocast dtype.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from loss import LOSSES


def top_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the ``k`` largest entries of ``scores`` along the last dim, exactly k per row.

    Ties are broken deterministically towards the lower index (a stable descending order), so a gate whose logits
    all tie — e.g. a zero-initialised one — still routes to exactly k experts (0..k-1). Element-wise comparisons
    only (no sort or scatter): the same on every device and exportable to ONNX.
    """
    num = scores.shape[-1]
    if not 1 <= k <= num:
        raise ValueError(f"top_k must be in [1, {num}], got {k}")
    if k == num:
        return torch.ones_like(scores, dtype=torch.bool)
    mine, other = scores.unsqueeze(-1), scores.unsqueeze(-2)  # [..., i, 1] and [..., 1, j]
    index = torch.arange(num, device=scores.device)
    lower_index = index.view(1, num) < index.view(num, 1)     # [i, j]: j < i
    ahead = (other > mine) | ((other == mine) & lower_index)  # experts j ranked before expert i
    return ahead.sum(dim=-1) < k


def switch_balance_loss(probs: torch.Tensor, top_k: Optional[int] = None) -> torch.Tensor:
    """``E · Σ_i f_i · P̄_i`` for gate probabilities ``probs`` [..., E] (leading dims are tokens)."""
    if probs.dim() < 2:
        raise ValueError(f"gate probabilities must be [..., num_experts], got shape {tuple(probs.shape)}")
    num_experts = probs.shape[-1]
    k = 1 if top_k is None else int(top_k)
    if not 1 <= k <= num_experts:
        raise ValueError(f"top_k must be in [1, {num_experts}], got {top_k}")
    probs = probs.float().reshape(-1, num_experts)
    importance = probs.mean(dim=0)
    chosen = top_k_mask(probs.detach(), k).to(probs.dtype)
    load = chosen.sum(dim=0) / chosen.sum()
    return num_experts * (load * importance).sum()


def prior_kl_loss(probs: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """``KL(π ‖ P̄)`` between a fixed prior ``π`` [E] and the mean of gate probabilities ``probs`` [..., E]."""
    if probs.dim() < 2 or prior.shape != probs.shape[-1:]:
        raise ValueError(f"gate probabilities must be [..., E] and the prior [E]; got {tuple(probs.shape)} and "
                         f"{tuple(prior.shape)}")
    importance = probs.float().reshape(-1, probs.shape[-1]).mean(dim=0)
    prior = prior.to(device=importance.device, dtype=torch.float32)
    kept = prior > 0  # 0 · log 0 = 0
    return (prior[kept] * (prior[kept].log() - importance[kept].clamp_min(1e-12).log())).sum()


@LOSSES.register()
class MoEBalanceLoss(nn.Module):
    """Module form of :func:`switch_balance_loss` for configs; ``forward(probs)`` → scalar."""

    def __init__(self, top_k: Optional[int] = None) -> None:
        super().__init__()
        self.top_k = top_k

    def forward(self, probs: torch.Tensor) -> torch.Tensor:
        return switch_balance_loss(probs, self.top_k)
