"""The "structure via consensus" segmentation loss (Masi et al., CVPR 2020), as MSML uses it (methods.md §5.2).

For logits ``[B, K, H, W]`` and an integer label map ``[B, H, W]``, every blob b (MSML: the set of pixels of one
image carrying one label value) with pixel count n_b, per-pixel probabilities p_i = softmax(logits_i) and blob
consensus P_b = (1/n_b) Σ_{i∈b} p_i contributes

    L_b = α · (−log P_b[label_b]) + β · (1/n_b) Σ_{i∈b} KL(P_b ‖ p_i),   KL(P ‖ p) = Σ_k P_k (log P_k − log p_k)

and the loss is the mean of L_b over all blobs of the batch (MSML: α = 10, β = 5). The first term asks the blob's
average prediction to be right (pixels may disagree), the second pulls every pixel towards the blob's consensus.
Computed in float32 (float64 inputs stay float64).
"""
from __future__ import annotations

import torch
from torch import nn

from loss import LOSSES

PROBABILITY_FLOOR = 1e-12


def consensus_segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, alpha: float = 10.0,
                                beta: float = 5.0) -> torch.Tensor:
    """``logits`` [B, K, H, W], ``labels`` [B, H, W] integers in [0, K) → scalar (module docstring)."""
    if logits.dim() != 4 or labels.dim() != 3 or labels.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(f"consensus loss: logits must be [B, K, H, W] and labels [B, H, W] of the same B, H, W; "
                         f"got {tuple(logits.shape)} and {tuple(labels.shape)}")
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    num_classes = logits.shape[1]
    log_p = torch.log_softmax(logits.to(dtype).flatten(2), dim=1)          # [B, K, N]
    p = log_p.exp()
    labels = labels.flatten(1).long()                                      # [B, N]
    losses, present = [], []
    for value in range(num_classes):
        members = (labels == value).to(dtype)                              # [B, N]
        count = members.sum(dim=1)                                         # [B]
        safe_count = count.clamp(min=1.0)
        consensus = (p * members[:, None]).sum(dim=2) / safe_count[:, None]  # [B, K]
        log_consensus = consensus.clamp(min=PROBABILITY_FLOOR).log()
        nll = -log_consensus[:, value]
        kl_pixels = (consensus[:, :, None] * (log_consensus[:, :, None] - log_p)).sum(dim=1)  # [B, N]
        kl = (kl_pixels * members).sum(dim=1) / safe_count
        losses.append(alpha * nll + beta * kl)
        present.append(count > 0)
    blob_losses, blob_present = torch.stack(losses, dim=1), torch.stack(present, dim=1)  # [B, K]
    return (blob_losses * blob_present).sum() / blob_present.sum().clamp(min=1)


@LOSSES.register()
class ConsensusSegmentationLoss(nn.Module):
    """Module form of :func:`consensus_segmentation_loss`; ``forward(logits, labels)`` → scalar."""

    def __init__(self, alpha: float = 10.0, beta: float = 5.0) -> None:
        super().__init__()
        if alpha < 0 or beta < 0:
            raise ValueError(f"consensus loss: alpha and beta must be >= 0, got {alpha}, {beta}")
        self.alpha, self.beta = float(alpha), float(beta)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return consensus_segmentation_loss(logits, labels, self.alpha, self.beta)
