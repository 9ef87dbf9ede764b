"""MobileFaceNets with a global-depthwise-conv (GDC) embedding, in the two layouts of the released weights.

* ``MobileFaceNetGDC`` — the paper's network (Chen et al., 2018): PReLU everywhere, 3×3 depthwise stem, inverted
  bottlenecks ``[t, c, n, s] = [2,64,5,2] [4,128,1,2] [2,128,6,1] [4,128,1,2] [2,128,2,1]``, 1×1 conv to 512,
  then GDC (depthwise conv over the whole map) + 1×1 linear conv + BN. Released weights: xiaoccer (CASIA, 112×96
  input → 7×6 map) and bubbliiiing (CASIA, 112×112).
* ``MobileFaceNetReLU6`` — the MobileNetV2-flavoured variant (foamliu, MS1M): ReLU6 in the stem, bottlenecks and
  the 512 conv; a depthwise-separable (3×3 dw + 1×1 pw, ReLU) second stem layer; the embedding conv has a bias.

Both split into ``forward_features`` (→ ``[B, 512, H/16, W/16]``) and ``forward_neck`` (GDC → embedding), so they
fine-tune like every other ``FaceBackbone``. ``face_sdk.weights`` maps the released state_dicts onto these names.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from backbone import BACKBONES
from backbone.base import FaceBackbone

BOTTLENECK_SETTING = ((2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1))
STEM_CHANNELS = 64
MAP_CHANNELS = 512


def make_activation(name: Optional[str], channels: int) -> nn.Module:
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

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int, activation: str) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.use_shortcut = stride == 1 and in_channels == out_channels
        self.expand = ConvBNAct(in_channels, hidden, 1, activation=activation)
        self.depthwise = ConvBNAct(hidden, hidden, 3, stride, groups=hidden, activation=activation)
        self.project = ConvBNAct(hidden, out_channels, 1, activation=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return x + out if self.use_shortcut else out


class DepthwiseSeparableStem(nn.Module):
    """3×3 depthwise ConvBN-ReLU then 1×1 pointwise ConvBN-ReLU (the ReLU6 variant's second stem layer)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.depthwise = ConvBNAct(channels, channels, 3, groups=channels, activation="relu")
        self.pointwise = ConvBNAct(channels, channels, 1, activation="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class GDCNeck(nn.Module):
    """Global depthwise conv over the whole ``feature_size`` map + BN, then a 1×1 conv to ``feat_dim`` + BN."""

    def __init__(self, channels: int, feature_size: Tuple[int, int], feat_dim: int, embedding_bias: bool) -> None:
        super().__init__()
        self.gdc = ConvBNAct(channels, channels, tuple(feature_size), groups=channels, activation=None, padding=0)
        self.embedding = ConvBNAct(channels, feat_dim, 1, activation=None, bias=embedding_bias)

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.embedding(self.gdc(feature_map)), 1)


def feature_size_for(input_size: Sequence[int]) -> Tuple[int, int]:
    """Spatial size of the last map: four stride-2 stages (each ``ceil(x / 2)``)."""
    if len(input_size) != 2:
        raise ValueError(f"input_size must be (height, width), got {input_size!r}")
    return tuple(int(math.ceil(int(v) / 16)) for v in input_size)  # type: ignore[return-value]


class _MobileFaceNetWithGDC(FaceBackbone):
    """Shared body: stem, stem_dw, bottleneck blocks, 1×1 conv to 512; GDC neck."""

    activation = "prelu"
    embedding_bias = False

    def __init__(self, feat_dim: int = 128, input_size: Sequence[int] = (112, 112)) -> None:
        super().__init__()
        self.feat_dim = int(feat_dim)
        self.feature_channels = MAP_CHANNELS
        self.feature_size = feature_size_for(input_size)
        self.stem = ConvBNAct(3, STEM_CHANNELS, 3, 2, activation=self.activation)
        self.stem_dw = self._make_stem_dw()
        blocks: List[nn.Module] = []
        channels = STEM_CHANNELS
        for expansion, out_channels, repeats, stride in BOTTLENECK_SETTING:
            for index in range(repeats):
                blocks.append(InvertedBottleneck(channels, out_channels, stride if index == 0 else 1, expansion,
                                                 self.activation))
                channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.head_conv = ConvBNAct(channels, MAP_CHANNELS, 1, activation=self.activation)
        self.neck = GDCNeck(MAP_CHANNELS, self.feature_size, self.feat_dim, self.embedding_bias)

    def _make_stem_dw(self) -> nn.Module:
        return ConvBNAct(STEM_CHANNELS, STEM_CHANNELS, 3, groups=STEM_CHANNELS, activation=self.activation)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head_conv(self.blocks(self.stem_dw(self.stem(x))))

    def forward_neck(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self.neck(feature_map)


@BACKBONES.register()
class MobileFaceNetGDC(_MobileFaceNetWithGDC):
    """The paper's MobileFaceNet (PReLU, GDC). ``input_size=(112, 96)`` for SphereFace-crop weights (7×6 map)."""

    activation = "prelu"
    embedding_bias = False


@BACKBONES.register()
class MobileFaceNetReLU6(_MobileFaceNetWithGDC):
    """MobileNetV2-style MobileFaceNet (ReLU6, depthwise-separable stem, biased embedding conv)."""

    activation = "relu6"
    embedding_bias = True

    def _make_stem_dw(self) -> nn.Module:
        return DepthwiseSeparableStem(STEM_CHANNELS)
