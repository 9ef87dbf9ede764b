"""What every backbone provides, and the standard face embedding neck."""
from __future__ import annotations

from typing import Any, Dict, Tuple

import torch
from torch import nn


class FaceBackbone(nn.Module):
    """A trunk that ends in a feature map plus a neck that turns it into an embedding.

    Subclasses set ``feat_dim`` (embedding size), ``feature_channels`` and ``feature_size`` (of the last map,
    7×7 for 112×112 inputs) and implement ``forward_features`` and ``forward_neck``. GFRO reuses both halves.
    """

    feat_dim: int
    feature_channels: int
    feature_size: Tuple[int, int] = (7, 7)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_neck(self, feature_map: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_neck(self.forward_features(x))

    def forward_train(self, x: torch.Tensor) -> Dict[str, Any]:
        """Training forward: ``{"embedding", "aux_losses": {name: scalar}, "stats": {name: tensor}}``.

        Plain backbones have no auxiliary terms; composite models (e.g. GFRO's MoE aggregator) add theirs here, so
        training modes never need to know which model they train.
        """
        return {"embedding": self(x), "aux_losses": {}, "stats": {}}


class EmbeddingNeck(nn.Module):
    """FaceX-Zoo's output layer: BN2d → Dropout → Flatten → Linear → BN1d."""

    def __init__(self, channels: int, feature_size: Tuple[int, int], feat_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn_map = nn.BatchNorm2d(channels)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels * feature_size[0] * feature_size[1], feat_dim)
        self.bn_embedding = nn.BatchNorm1d(feat_dim)

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.bn_map(feature_map))
        return self.bn_embedding(self.fc(torch.flatten(x, 1)))
