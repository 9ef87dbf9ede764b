"""MobileFaceNet (Chen et al. 2018): a 1M-parameter inverted-residual trunk that ends in a 512×7×7 map.

Layout for a 112×112 input (t = expansion, c = output channels, n = repeats, s = stride of the first block)::

    conv3×3 s2 → 64, depthwise conv3×3 → 64
    bottleneck t2 c64  n5 s2
    bottleneck t4 c128 n1 s2
    bottleneck t2 c128 n6 s1
    bottleneck t4 c128 n1 s2
    bottleneck t2 c128 n2 s1
    conv1×1 → 512                                  → feature map [B, 512, 7, 7]

Every convolution is followed by BN and PReLU except the bottlenecks' projections (linear bottlenecks). The neck
is the toolbox's ``EmbeddingNeck`` (BN2d → Dropout → Flatten → Linear → BN1d, as FaceX-Zoo's backbones), which
adds 512·H·W·feat_dim weights (12.8M for 7×7 → 512) to the 0.9M trunk. The paper's global-depthwise-conv neck,
which the released 128-d checkpoints use, is ``MobileFaceNetGDC`` (backbone/released_mobilefacenets.py).
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
from torch import nn

from backbone import BACKBONES
from backbone.base import EmbeddingNeck, FaceBackbone

# (expansion, output channels, repeats, stride of the first block) per bottleneck stage.
BOTTLENECK_STAGES: Tuple[Tuple[int, int, int, int], ...] = (
    (2, 64, 5, 2),
    (4, 128, 1, 2),
    (2, 128, 6, 1),
    (4, 128, 1, 2),
    (2, 128, 2, 1),
)


def scaled_channels(channels: int, width: float) -> int:
    """``channels × width`` rounded to a multiple of 8 (at least 8)."""
    return max(8, int(round(channels * width / 8.0)) * 8)


def map_size(input_size: Sequence[int], num_stride2: int) -> Tuple[int, int]:
    """Spatial size after ``num_stride2`` stride-2 convolutions with kernel 3 and padding 1 (ceil halving)."""
    height, width = int(input_size[0]), int(input_size[1])
    for _ in range(num_stride2):
        height, width = (height + 1) // 2, (width + 1) // 2
    return height, width


class ConvBNPReLU(nn.Sequential):
    """Convolution (no bias) → BatchNorm → PReLU; ``activation=False`` drops the PReLU (linear layer)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 groups: int = 1, activation: bool = True) -> None:
        layers: List[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        if activation:
            layers.append(nn.PReLU(out_channels))
        super().__init__(*layers)


class InvertedResidual(nn.Module):
    """Expand 1×1 → depthwise 3×3 (stride) → project 1×1 (linear); identity shortcut when shapes allow."""

    def __init__(self, in_channels: int, out_channels: int, expansion: int, stride: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.expand = ConvBNPReLU(in_channels, hidden, 1)
        self.depthwise = ConvBNPReLU(hidden, hidden, 3, stride, groups=hidden)
        self.project = ConvBNPReLU(hidden, out_channels, 1, activation=False)
        self.use_shortcut = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return x + out if self.use_shortcut else out


@BACKBONES.register()
class MobileFaceNet(FaceBackbone):
    """MobileFaceNet trunk + FaceX-Zoo embedding neck.

    Args:
        feat_dim: embedding size.
        width: channel multiplier for the trunk (the final 512-channel map is kept).
        dropout: dropout before the neck's linear layer.
        input_size: (height, width) of the input; the map is input/16 (112×112 → 7×7, 112×96 → 7×6).
    """

    feature_channels = 512

    def __init__(self, feat_dim: int = 512, width: float = 1.0, dropout: float = 0.0,
                 input_size: Sequence[int] = (112, 112)) -> None:
        super().__init__()
        if width <= 0:
            raise ValueError(f"MobileFaceNet: width must be > 0, got {width}")
        if len(input_size) != 2 or min(input_size) < 16:
            raise ValueError(f"MobileFaceNet: input_size must be (height, width) >= 16, got {input_size!r}")
        self.feat_dim = feat_dim
        self.feature_size = map_size(input_size, 4)
        stem_channels = scaled_channels(64, width)
        self.stem = ConvBNPReLU(3, stem_channels, 3, stride=2)
        self.stem_depthwise = ConvBNPReLU(stem_channels, stem_channels, 3, groups=stem_channels)
        blocks: List[nn.Module] = []
        in_channels = stem_channels
        for expansion, channels, repeats, stride in BOTTLENECK_STAGES:
            out_channels = scaled_channels(channels, width)
            for index in range(repeats):
                blocks.append(InvertedResidual(in_channels, out_channels, expansion, stride if index == 0 else 1))
                in_channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.conv_out = ConvBNPReLU(in_channels, self.feature_channels, 1)
        self.neck = EmbeddingNeck(self.feature_channels, self.feature_size, feat_dim, dropout)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.blocks(self.stem_depthwise(self.stem(x))))

    def forward_neck(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self.neck(feature_map)
