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

from typing import Sequence, Tuple

import torch
from torch import nn

from backbone import BACKBONES
from backbone.base import FaceBackbone
from backbone.mobilefacenet import STEM_CHANNELS, ConvBNAct, bottleneck_blocks, map_size

MAP_CHANNELS = 512


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


class _MobileFaceNetWithGDC(FaceBackbone):
    """Shared body: stem, stem_dw, bottleneck blocks, 1×1 conv to 512; GDC neck."""

    activation = "prelu"
    embedding_bias = False

    def __init__(self, feat_dim: int = 128, input_size: Sequence[int] = (112, 112)) -> None:
        super().__init__()
        self.feat_dim = int(feat_dim)
        self.feature_channels = MAP_CHANNELS
        if len(input_size) != 2:
            raise ValueError(f"input_size must be (height, width), got {input_size!r}")
        self.feature_size = map_size(input_size, 4)
        self.stem = ConvBNAct(3, STEM_CHANNELS, 3, 2, activation=self.activation)
        self.stem_dw = self._make_stem_dw()
        self.blocks, channels = bottleneck_blocks(STEM_CHANNELS, activation=self.activation)
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
