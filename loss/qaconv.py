"""OAML's in-batch QAConv losses (methods.md §6.2): L_QAConv = L_pair + triplet_weight · L_triplet.

For a batch scored against itself, ``scores`` [B, B] (logits) and labels y [B]:

    L_pair    = mean_i Σ_j BCE-with-logits(S[i, j], 1[y_i = y_j])             (diagonal included, summed over j)
    L_triplet = mean_i max(0, margin − (min_{j≠i, y_j = y_i} S[i, j] − max_{y_j ≠ y_i} S[i, j]))

(``nn.MarginRankingLoss`` with target 1 on the hardest positive and the hardest negative of each row.) The hardest
positive excludes the diagonal (a self-match is no positive to learn from; QAConv's own accuracy statistic does the
same); rows with no positive other than themselves or with no negative are left out of the triplet mean
*(ours: the public code assumes PK batches, where every row has both)*.
"""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F
from torch import nn

from loss import LOSSES


def hardest_pair_scores(scores: torch.Tensor, labels: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Per row: the lowest positive score (j ≠ i), the highest negative score, and which rows have both."""
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(scores.shape[0], dtype=torch.bool, device=scores.device)
    positives, negatives = same & ~eye, ~same
    big = torch.finfo(scores.dtype).max
    hardest_positive = scores.masked_fill(~positives, big).amin(dim=1)
    hardest_negative = scores.masked_fill(~negatives, -big).amax(dim=1)
    return {"positive": hardest_positive, "negative": hardest_negative,
            "valid": positives.any(dim=1) & negatives.any(dim=1)}


@LOSSES.register()
class QAConvPairLoss(nn.Module):
    """``forward(scores [B, B], labels [B]) → {"pair", "triplet", "total", "accuracy"}`` (module docstring).

    ``accuracy``: share of rows whose hardest positive outscores their hardest negative (no gradient).
    """

    def __init__(self, triplet_weight: float = 0.5, margin: float = 1.0) -> None:
        super().__init__()
        if triplet_weight < 0 or margin < 0:
            raise ValueError(f"QAConvPairLoss: triplet_weight and margin must be >= 0, got {triplet_weight}, {margin}")
        self.triplet_weight, self.margin = float(triplet_weight), float(margin)

    def forward(self, scores: torch.Tensor, labels: torch.Tensor) -> Dict[str, torch.Tensor]:
        if scores.dim() != 2 or scores.shape[0] != scores.shape[1] or labels.shape != (scores.shape[0],):
            raise ValueError(f"QAConvPairLoss: scores must be [B, B] and labels [B], got {list(scores.shape)} and "
                             f"{list(labels.shape)}")
        scores = scores.float()
        targets = (labels[:, None] == labels[None, :]).float()
        pair = F.binary_cross_entropy_with_logits(scores, targets, reduction="none").sum(dim=1).mean()
        hardest = hardest_pair_scores(scores, labels)
        valid = hardest["valid"]
        if valid.any():
            gaps = hardest["positive"][valid] - hardest["negative"][valid]
            triplet = F.relu(self.margin - gaps).mean()
            accuracy = (gaps.detach() > 0).float().mean()
        else:
            triplet = scores.sum() * 0.0
            accuracy = scores.new_zeros(())
        return {"pair": pair, "triplet": triplet, "total": pair + self.triplet_weight * triplet,
                "accuracy": accuracy}
