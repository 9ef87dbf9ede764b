"""IResNet (insightface's "improved" ResNet for faces), state_dict-compatible with insightface checkpoints.

Module names and shapes follow the published insightface layout, so an insightface-format state_dict (e.g. the
ElasticFace-Arc IResNet-100 teacher) loads with ``load_state_dict(strict=True)`` and no key mapping::

    conv1 (3×3 s1, 3→64) → bn1 → prelu
    layer1..layer4: 64/128/256/512 channels, each starting with stride 2; a block is
        bn1 → conv1 (3×3) → bn2 → prelu → conv2 (3×3, stride) → bn3 [→ se_module] (+ downsample(x) or x)
        with downsample = (conv 1×1 stride 2, BN) on the first block of every stage
    → feature map [B, 512, 7, 7]
    neck: bn2 → flatten → dropout → fc (512·7·7 → feat_dim) → features (BatchNorm1d, weight frozen at 1)

``mode="ir_se"`` adds a squeeze-excitation module (``se_module``) at the end of every block's residual branch
(FaceX-Zoo's IR-SE); its keys exist only in that mode. Note that ``features.weight`` has ``requires_grad=False``
as in insightface: optimisers should be built from parameters that require grad.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from backbone import BACKBONES
from backbone.base import FaceBackbone
from backbone.mobilefacenet import map_size, scaled_channels

LAYERS_PER_DEPTH: Dict[int, Tuple[int, int, int, int]] = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
    200: (6, 26, 60, 6),
}
STAGE_CHANNELS: Tuple[int, int, int, int] = (64, 128, 256, 512)
MODES = ("ir", "ir_se")
BN_EPS = 1e-5
SE_REDUCTION = 16


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)


class SqueezeExcitation(nn.Module):
    """Channel attention: global average pool → 1×1 conv (C/16) → ReLU → 1×1 conv (C) → sigmoid → rescale."""

    def __init__(self, channels: int, reduction: int = SE_REDUCTION) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.sigmoid(self.fc2(self.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True)))))
        return x * weights


class IBasicBlock(nn.Module):
    """insightface's pre-activation basic block (BN → conv → BN → PReLU → conv → BN)."""

    def __init__(self, in_channels: int, channels: int, stride: int, use_se: bool) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels, eps=BN_EPS)
        self.conv1 = conv3x3(in_channels, channels)
        self.bn2 = nn.BatchNorm2d(channels, eps=BN_EPS)
        self.prelu = nn.PReLU(channels)
        self.conv2 = conv3x3(channels, channels, stride)
        self.bn3 = nn.BatchNorm2d(channels, eps=BN_EPS)
        if use_se:
            self.se_module = SqueezeExcitation(channels)
        self.downsample: Optional[nn.Sequential] = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride, bias=False),
                nn.BatchNorm2d(channels, eps=BN_EPS),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        if hasattr(self, "se_module"):
            out = self.se_module(out)
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


@BACKBONES.register()
class IResNet(FaceBackbone):
    """IResNet-{18,34,50,100,200} in ``ir`` or ``ir_se`` mode.

    Args:
        depth: one of 18, 34, 50, 100, 200.
        mode: ``"ir"`` (insightface layout) or ``"ir_se"`` (adds squeeze-excitation per block).
        feat_dim: embedding size.
        dropout: dropout on the flattened map before ``fc`` (insightface default 0).
        input_size: (height, width) of the input; the map is input/16 (112×112 → 7×7).
        width: channel multiplier of every stage (64/128/256/512 × width, rounded to a multiple of 8); 1.0 is the
            insightface layout (checkpoints load unchanged), e.g. 0.25 gives 16/32/64/128 channels.
    """

    feature_channels = STAGE_CHANNELS[-1]

    def __init__(self, depth: int = 50, mode: str = "ir", feat_dim: int = 512, dropout: float = 0.0,
                 input_size: Sequence[int] = (112, 112), width: float = 1.0) -> None:
        super().__init__()
        if depth not in LAYERS_PER_DEPTH:
            raise ValueError(f"IResNet: depth must be one of {sorted(LAYERS_PER_DEPTH)}, got {depth!r}")
        if mode not in MODES:
            raise ValueError(f"IResNet: mode must be one of {MODES}, got {mode!r}")
        if len(input_size) != 2 or min(input_size) < 16:
            raise ValueError(f"IResNet: input_size must be (height, width) >= 16, got {input_size!r}")
        if isinstance(width, bool) or not isinstance(width, (int, float)) or width <= 0:
            raise ValueError(f"IResNet: width must be a number > 0, got {width!r}")
        self.depth = depth
        self.width = float(width)
        stage_channels = tuple(c if width == 1.0 else scaled_channels(c, width) for c in STAGE_CHANNELS)
        self.stage_channels = stage_channels
        self.feature_channels = stage_channels[-1]
        self.mode = mode
        self.feat_dim = feat_dim
        self.feature_size = map_size(input_size, len(STAGE_CHANNELS))  # every stage halves the map

        self.conv1 = conv3x3(3, stage_channels[0])
        self.bn1 = nn.BatchNorm2d(stage_channels[0], eps=BN_EPS)
        self.prelu = nn.PReLU(stage_channels[0])
        in_channels = stage_channels[0]
        stages: List[nn.Sequential] = []
        for channels, blocks in zip(stage_channels, LAYERS_PER_DEPTH[depth]):
            layer = [IBasicBlock(in_channels, channels, 2, mode == "ir_se")]
            layer += [IBasicBlock(channels, channels, 1, mode == "ir_se") for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layer))
            in_channels = channels
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.bn2 = nn.BatchNorm2d(self.feature_channels, eps=BN_EPS)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.feature_channels * self.feature_size[0] * self.feature_size[1], feat_dim)
        self.features = nn.BatchNorm1d(feat_dim, eps=BN_EPS)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_neck(self, feature_map: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.bn2(feature_map), 1)
        return self.features(self.fc(self.dropout(x)))


class _FixedDepthIResNet(IResNet):
    """Base of the ``IResNet<depth>`` presets: same arguments as ``IResNet`` without ``depth``."""

    fixed_depth: int

    def __init__(self, mode: str = "ir", feat_dim: int = 512, dropout: float = 0.0,
                 input_size: Sequence[int] = (112, 112), width: float = 1.0) -> None:
        super().__init__(depth=self.fixed_depth, mode=mode, feat_dim=feat_dim, dropout=dropout,
                         input_size=input_size, width=width)


@BACKBONES.register()
class IResNet18(_FixedDepthIResNet):
    fixed_depth = 18


@BACKBONES.register()
class IResNet34(_FixedDepthIResNet):
    fixed_depth = 34


@BACKBONES.register()
class IResNet50(_FixedDepthIResNet):
    fixed_depth = 50


@BACKBONES.register()
class IResNet100(_FixedDepthIResNet):
    fixed_depth = 100


@BACKBONES.register()
class IResNet200(_FixedDepthIResNet):
    fixed_depth = 200
