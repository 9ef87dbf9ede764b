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

from typing import List, Optional, Sequence, Tuple

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
STEM_CHANNELS = 64


def scaled_channels(channels: int, width: float) -> int:
    """``channels × width`` rounded to a multiple of 8 (at least 8)."""
    return max(8, int(round(channels * width / 8.0)) * 8)


def map_size(input_size: Sequence[int], num_stride2: int) -> Tuple[int, int]:
    """Spatial size after ``num_stride2`` stride-2 convolutions with kernel 3 and padding 1 (ceil halving)."""
    height, width = int(input_size[0]), int(input_size[1])
    for _ in range(num_stride2):
        height, width = (height + 1) // 2, (width + 1) // 2
    return height, width


def make_activation(name: Optional[str], channels: int) -> nn.Module:
    """``prelu`` | ``relu6`` | ``relu`` | ``None`` (identity: a linear layer)."""
    if name is None:
        return nn.Identity()
    if name == "prelu":
        return nn.PReLU(channels)
    if name == "relu6":
        return nn.ReLU6(inplace=True)
    if name == "relu":
        return nn.ReLU(inplace=True)
    raise ValueError(f"unknown activation {name!r}; expected prelu, relu6, relu or None")


class ConvBNAct(nn.Module):
    """Conv → BatchNorm → activation (``None`` = linear). Padding keeps the size for odd kernels unless given."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Tuple[int, int] = 3, stride: int = 1,
                 groups: int = 1, activation: Optional[str] = "prelu", padding: Optional[int] = None,
                 bias: bool = False) -> None:
        super().__init__()
        if padding is None:
            padding = kernel_size // 2 if isinstance(kernel_size, int) else 0
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=bias)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = make_activation(activation, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class InvertedBottleneck(nn.Module):
    """1×1 expand → 3×3 depthwise (stride) → 1×1 linear projection; identity shortcut when shapes match."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int,
                 activation: str = "prelu") -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.use_shortcut = stride == 1 and in_channels == out_channels
        self.expand = ConvBNAct(in_channels, hidden, 1, activation=activation)
        self.depthwise = ConvBNAct(hidden, hidden, 3, stride, groups=hidden, activation=activation)
        self.project = ConvBNAct(hidden, out_channels, 1, activation=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return x + out if self.use_shortcut else out


def bottleneck_blocks(in_channels: int, width: float = 1.0, activation: str = "prelu") -> Tuple[nn.Sequential, int]:
    """The ``BOTTLENECK_STAGES`` blocks (channels scaled by ``width``) and their output channel count."""
    blocks: List[nn.Module] = []
    for expansion, channels, repeats, stride in BOTTLENECK_STAGES:
        out_channels = scaled_channels(channels, width)
        for index in range(repeats):
            blocks.append(InvertedBottleneck(in_channels, out_channels, stride if index == 0 else 1, expansion,
                                             activation))
            in_channels = out_channels
    return nn.Sequential(*blocks), in_channels


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
        stem_channels = scaled_channels(STEM_CHANNELS, width)
        self.stem = ConvBNAct(3, stem_channels, 3, stride=2)
        self.stem_depthwise = ConvBNAct(stem_channels, stem_channels, 3, groups=stem_channels)
        self.blocks, channels = bottleneck_blocks(stem_channels, width)
        self.conv_out = ConvBNAct(channels, self.feature_channels, 1)
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
