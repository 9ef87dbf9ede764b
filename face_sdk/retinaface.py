"""RetinaFace network with a MobileNet-0.25 trunk: FPN over strides 8/16/32, SSH context modules, 3 heads.

Layer shapes follow the released ``mobilenet0.25`` state_dicts (biubug6 Face-Detector-1MB, FaceX-Zoo SDK); module
names are our own and ``face_sdk.weights`` maps the released keys onto them. The two releases share the layers but
not two settings, which ``RetinaFaceConfig`` records: the activation (FaceX-Zoo: LeakyReLU(0.1) everywhere;
Face-Detector-1MB: ReLU, i.e. ``negative_slope=0``) and the prior-box sizes per level.

Input convention (the detector's own, not the recogniser's): BGR float minus the per-channel mean (104, 117, 123),
no scaling — applied by ``FaceDetector``. Outputs per image: ``boxes [N, 4]`` (encoded offsets), ``scores [N, 2]``
(softmax, column 1 = face), ``landmarks [N, 10]`` (encoded offsets) for the ``N`` priors of ``face_sdk.priors``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

ANCHORS_PER_LOCATION = 2


@dataclass(frozen=True)
class RetinaFaceConfig:
    """What differs between released mobilenet0.25 RetinaFaces: activation slope and prior boxes."""

    negative_slope: float = 0.1
    min_sizes: Tuple[Tuple[int, ...], ...] = ((16, 32), (64, 128), (256, 512))
    steps: Tuple[int, ...] = (8, 16, 32)
    variances: Tuple[float, float] = (0.1, 0.2)

    def __post_init__(self) -> None:
        if len(self.min_sizes) != 3 or len(self.steps) != 3:
            raise ValueError(f"RetinaFaceConfig needs 3 levels, got min_sizes={self.min_sizes}, steps={self.steps}")
        if any(len(sizes) != ANCHORS_PER_LOCATION for sizes in self.min_sizes):
            raise ValueError(f"each level needs {ANCHORS_PER_LOCATION} anchor sizes, got {self.min_sizes}")


class ConvBN(nn.Module):
    """Conv (no bias) → BatchNorm → optional LeakyReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1, negative_slope: Optional[float] = 0.1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups,
                              bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = nn.LeakyReLU(negative_slope) if negative_slope is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class DepthwiseSeparable(nn.Module):
    """3×3 depthwise ConvBN-LeakyReLU then 1×1 pointwise ConvBN-LeakyReLU (MobileNetV1 unit)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, negative_slope: float) -> None:
        super().__init__()
        self.depthwise = ConvBN(in_channels, in_channels, 3, stride, groups=in_channels, negative_slope=negative_slope)
        self.pointwise = ConvBN(in_channels, out_channels, 1, negative_slope=negative_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class MobileNetV1Trunk(nn.Module):
    """MobileNetV1 at width 0.25 cut into three stages (strides 8, 16, 32; 64/128/256 channels)."""

    def __init__(self, width: int = 8, negative_slope: float = 0.1) -> None:
        super().__init__()
        w, slope = width, negative_slope
        self.stage1 = nn.Sequential(
            ConvBN(3, w, 3, 2, negative_slope=slope),
            DepthwiseSeparable(w, 2 * w, 1, slope),
            DepthwiseSeparable(2 * w, 4 * w, 2, slope),
            DepthwiseSeparable(4 * w, 4 * w, 1, slope),
            DepthwiseSeparable(4 * w, 8 * w, 2, slope),
            DepthwiseSeparable(8 * w, 8 * w, 1, slope),
        )
        self.stage2 = nn.Sequential(DepthwiseSeparable(8 * w, 16 * w, 2, slope),
                                    *[DepthwiseSeparable(16 * w, 16 * w, 1, slope) for _ in range(5)])
        self.stage3 = nn.Sequential(DepthwiseSeparable(16 * w, 32 * w, 2, slope),
                                    DepthwiseSeparable(32 * w, 32 * w, 1, slope))
        self.out_channels = (8 * w, 16 * w, 32 * w)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        c1 = self.stage1(x)
        c2 = self.stage2(c1)
        return [c1, c2, self.stage3(c2)]


class FeaturePyramid(nn.Module):
    """1×1 laterals, top-down nearest upsampling + add, 3×3 smoothing on the two finer levels."""

    def __init__(self, in_channels: Sequence[int], channels: int, slope: float) -> None:
        super().__init__()
        self.lateral = nn.ModuleList([ConvBN(c, channels, 1, negative_slope=slope) for c in in_channels])
        self.smooth = nn.ModuleList([ConvBN(channels, channels, 3, negative_slope=slope) for _ in in_channels[:-1]])

    def forward(self, features: List[torch.Tensor]) -> List[torch.Tensor]:
        outs = [lateral(f) for lateral, f in zip(self.lateral, features)]
        for level in range(len(outs) - 2, -1, -1):  # coarse → fine
            upsampled = F.interpolate(outs[level + 1], size=outs[level].shape[-2:], mode="nearest")
            outs[level] = self.smooth[level](outs[level] + upsampled)
        return outs


class ContextModule(nn.Module):
    """SSH context module: concat of 3×3, 5×5 (two 3×3) and 7×7 (three 3×3) receptive-field branches, then ReLU."""

    def __init__(self, channels: int, slope: float) -> None:
        super().__init__()
        self.branch3x3 = ConvBN(channels, channels // 2, 3, negative_slope=None)
        self.branch5x5_reduce = ConvBN(channels, channels // 4, 3, negative_slope=slope)
        self.branch5x5 = ConvBN(channels // 4, channels // 4, 3, negative_slope=None)
        self.branch7x7_reduce = ConvBN(channels // 4, channels // 4, 3, negative_slope=slope)
        self.branch7x7 = ConvBN(channels // 4, channels // 4, 3, negative_slope=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reduced = self.branch5x5_reduce(x)
        out = torch.cat([self.branch3x3(x), self.branch5x5(reduced),
                         self.branch7x7(self.branch7x7_reduce(reduced))], dim=1)
        return F.relu(out)


class RetinaFace(nn.Module):
    """MobileNet-0.25 RetinaFace: returns ``(box_offsets [B,N,4], face_scores [B,N,2], landmark_offsets [B,N,10])``."""

    def __init__(self, width: int = 8, channels: int = 64, negative_slope: float = 0.1) -> None:
        super().__init__()
        self.trunk = MobileNetV1Trunk(width, negative_slope)
        self.fpn = FeaturePyramid(self.trunk.out_channels, channels, negative_slope)
        self.context = nn.ModuleList([ContextModule(channels, negative_slope) for _ in range(3)])
        a = ANCHORS_PER_LOCATION
        self.class_heads = nn.ModuleList([nn.Conv2d(channels, a * 2, 1) for _ in range(3)])
        self.box_heads = nn.ModuleList([nn.Conv2d(channels, a * 4, 1) for _ in range(3)])
        self.landmark_heads = nn.ModuleList([nn.Conv2d(channels, a * 10, 1) for _ in range(3)])

    @staticmethod
    def _flatten(head: nn.Module, feature: torch.Tensor, width: int) -> torch.Tensor:
        out = head(feature).permute(0, 2, 3, 1)  # anchors vary fastest within a location
        return out.reshape(out.shape[0], -1, width)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = [ctx(f) for ctx, f in zip(self.context, self.fpn(self.trunk(x)))]
        boxes = torch.cat([self._flatten(h, f, 4) for h, f in zip(self.box_heads, features)], dim=1)
        logits = torch.cat([self._flatten(h, f, 2) for h, f in zip(self.class_heads, features)], dim=1)
        landmarks = torch.cat([self._flatten(h, f, 10) for h, f in zip(self.landmark_heads, features)], dim=1)
        return boxes, logits.softmax(dim=-1), landmarks
