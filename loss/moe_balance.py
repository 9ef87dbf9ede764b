"""Load balancing for mixture-of-experts gates: Switch-style importance × load.

For a gate that routes N tokens over E experts with probabilities ``P`` ([N, E], rows sum to 1):

* importance ``P̄_i`` — the mean gate probability of expert i (differentiable);
* load ``f_i``       — the fraction of routing slots dispatched to expert i: each token's top-k experts
  (k = 1, the arg-max, for dense gates); a count, so it carries no gradient;
* loss ``E · Σ_i f_i · P̄_i`` (Fedus et al., Switch Transformer, 2021).

Choice *(ours)*: this product form instead of Shazeer's CV²(importance) + CV²(load) because it needs no noisy
gating to make the load differentiable. The loss is 1 for balanced routing (f and P̄ uniform), E when every token
goes to one expert with certainty, and its gradient ``E·f_i`` lowers the probability of overloaded experts.
Computed in float32 whatever the autocast dtype.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from loss import LOSSES


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
    chosen = probs.detach().topk(k, dim=1).indices.reshape(-1)
    load = torch.bincount(chosen, minlength=num_experts).to(probs.dtype) / chosen.numel()
    return num_experts * (load * importance).sum()


@LOSSES.register()
class MoEBalanceLoss(nn.Module):
    """Module form of :func:`switch_balance_loss` for configs; ``forward(probs)`` → scalar."""

    def __init__(self, top_k: Optional[int] = None) -> None:
        super().__init__()
        self.top_k = top_k

    def forward(self, probs: torch.Tensor) -> torch.Tensor:
        return switch_balance_loss(probs, self.top_k)
