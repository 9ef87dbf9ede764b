"""MSML: Multi-Scale Segmentation-based Mask Learning (Yuan, Zheng, Dong, AAAI 2022; methods.md §5).

Two branches on the same image (shapes for a 112×112 input, width 1)::

    OSB (occlusion segmentation branch, U-Net-like, IResNet-18-style encoder):
        stem conv3×3 s2 → 64@56, layers [2,2,2,2] each at stride 2 → 64@28, 128@14, 256@7, 512@4
        per encoder scale a Global Convolution Module (k×1 → 1×k plus 1×k → k×1, k = 7) → 18 channels
        decoder: from 4 upwards, transposed-conv upsampling, concat with the scale's GCM output, conv → 18 channels
            side outputs Y_o [B,18,7,7], [B,18,14,14], [B,18,28,28], [B,18,56,56]
        final stage at 112: transposed conv → 18 channels → DAP (PixelShuffle(3) + AvgPool(3)) → logits [B,2,112,112]
    FRB (face recognition branch, insightface IResNet-18/34/50):
        conv3×3 s1 → stage i (stride 2) → Y_f → FM_i(Y_f, Y_o.detach()) → Z → stage i+1 ...
        stage outputs [B,64,56,56], [B,128,28,28], [B,256,14,14], [B,512,7,7]
        neck BN2d → Dropout → Linear → BN1d (the IResNet's own) → embedding [B, feat_dim]

FM operator: concat(Y_f, Y_o) → 3×3 conv (C+18 → C) → 2 bottleneck residual blocks (width C/2, at most 128·width)
→ activation (sigmoid) → mask M [B,C,h,w]; ``Z = arith(Y_f, M) + Y_f`` with ``mul`` (Z = Y_f ⊙ (1 + M), the
current public config) or ``sub`` (Z = 2·Y_f − M, the AAAI-era config); ``add`` and ``div`` exist in the public code
and are accepted too. The side outputs enter the FRB detached: the recognition loss never trains the OSB, only the
segmentation loss does (``training_mode/msml.py``). All sizes follow ``input_size`` (64×64: FRB maps 32/16/8/4,
OSB encoder 32/16/8/4/2, logits [B,2,64,64]).

``forward`` (evaluation, ONNX export) runs the OSB encoder and decoder up to the 56×56 side output plus the FRB; the
final 112×112 segmentation stage only serves the loss and runs in ``forward_train`` (and ``segment``).
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from backbone import BACKBONES
from backbone.base import FaceBackbone
from backbone.iresnet import IBasicBlock, IResNet
from backbone.mobilefacenet import scaled_channels
from utils.registry import ConfigError

FM_ARITHMETIC = ("mul", "sub", "add", "div")
FM_ACTIVATIONS = ("sigmoid", "tanh")
FRB_DEPTHS = (18, 34, 50)
NUM_SEG_CLASSES = 2          # class 1 = clean / visible, class 0 = occluded
OSB_STAGE_CHANNELS = (64, 128, 256, 512)
DIV_EPS = 1e-3


class GradientScale(torch.autograd.Function):
    """Identity forward; the backward pass multiplies the incoming gradient by ``scale``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Tuple[torch.Tensor, None]:
        return grad * ctx.scale, None


def conv_bn_prelu(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
                         nn.BatchNorm2d(out_channels), nn.PReLU(out_channels))


class GlobalConvolution(nn.Module):
    """Global Convolution Module (Peng et al. 2017): (k×1 → 1×k) + (1×k → k×1), both size-preserving."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 7) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.left = nn.Sequential(nn.Conv2d(in_channels, out_channels, (kernel_size, 1), padding=(pad, 0)),
                                  nn.Conv2d(out_channels, out_channels, (1, kernel_size), padding=(0, pad)))
        self.right = nn.Sequential(nn.Conv2d(in_channels, out_channels, (1, kernel_size), padding=(0, pad)),
                                   nn.Conv2d(out_channels, out_channels, (kernel_size, 1), padding=(pad, 0)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.left(x) + self.right(x)


class DecoderStage(nn.Module):
    """Transposed-conv ×2 upsampling of the coarser decoder output, concat with this scale's GCM output, conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(channels, channels, 3, stride=2, padding=1, bias=False)
        self.fuse = conv_bn_prelu(2 * channels, channels)

    def forward(self, coarse: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = self.up(coarse, output_size=list(skip.shape[-2:]))
        return self.fuse(torch.cat([up, skip], dim=1))


class OcclusionSegmentationBranch(nn.Module):
    """The OSB: IResNet-18-style encoder, GCM per scale, transposed-conv decoder with skips, DAP output.

    ``forward(x)`` returns the side outputs (finest first: [B,18,H/2], [B,18,H/4], [B,18,H/8], [B,18,H/16]);
    ``segment(side_outputs, size)`` the 2-class logits at the input size.
    """

    def __init__(self, width: float = 1.0, gcm_kernel: int = 7, dap_kernel: int = 3) -> None:
        super().__init__()
        channels = [scaled_channels(c, width) if width != 1.0 else c for c in OSB_STAGE_CHANNELS]
        self.side_channels = NUM_SEG_CLASSES * dap_kernel * dap_kernel
        self.dap_kernel = dap_kernel
        self.stem = nn.Sequential(nn.Conv2d(3, channels[0], 3, 2, 1, bias=False), nn.BatchNorm2d(channels[0]),
                                  nn.PReLU(channels[0]))
        encoder: List[nn.Sequential] = []
        in_channels = channels[0]
        for out_channels in channels:   # layer1..layer4, each at stride 2
            encoder.append(nn.Sequential(IBasicBlock(in_channels, out_channels, 2, False),
                                         IBasicBlock(out_channels, out_channels, 1, False)))
            in_channels = out_channels
        self.encoder = nn.ModuleList(encoder)
        encoder_channels = [channels[0], channels[0]] + channels[1:]   # stem, layer1..layer4
        self.gcm = nn.ModuleList(GlobalConvolution(c, self.side_channels, gcm_kernel) for c in encoder_channels)
        self.decoder = nn.ModuleList(DecoderStage(self.side_channels) for _ in range(len(encoder_channels) - 1))
        self.final_up = nn.ConvTranspose2d(self.side_channels, self.side_channels, 3, stride=2, padding=1)
        self.final_conv = nn.Conv2d(self.side_channels, self.side_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        features = [self.stem(x)]
        for layer in self.encoder:
            features.append(layer(features[-1]))
        skips = [gcm(f) for gcm, f in zip(self.gcm, features)]   # sizes H/2 .. H/32
        decoded = skips[-1]
        sides: List[torch.Tensor] = []
        for stage, skip in zip(reversed(self.decoder), reversed(skips[:-1])):
            decoded = stage(decoded, skip)
            sides.append(decoded)
        return sides[::-1]   # H/2, H/4, H/8, H/16

    def segment(self, side_outputs: Sequence[torch.Tensor], size: Sequence[int]) -> torch.Tensor:
        """Final stage: upsample the finest side output to ``size``, conv, DAP → logits [B, 2, *size]."""
        up = self.final_up(side_outputs[0], output_size=[int(s) for s in size])
        shuffled = F.pixel_shuffle(self.final_conv(up), self.dap_kernel)   # [B, 2, k·H, k·W]
        return F.avg_pool2d(shuffled, self.dap_kernel)


class BottleneckResidual(nn.Module):
    """1×1 (C → b) → 3×3 (b → b) → 1×1 (b → C), BN + PReLU between, BN at the end, identity shortcut."""

    def __init__(self, channels: int, bottleneck: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, bottleneck, 1, bias=False), nn.BatchNorm2d(bottleneck), nn.PReLU(bottleneck),
            nn.Conv2d(bottleneck, bottleneck, 3, padding=1, bias=False), nn.BatchNorm2d(bottleneck),
            nn.PReLU(bottleneck),
            nn.Conv2d(bottleneck, channels, 1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class FeatureMaskingOperator(nn.Module):
    """FM operator: mask M from concat(Y_f, Y_o) and ``Z = arith(Y_f, M) + Y_f`` (module docstring)."""

    def __init__(self, channels: int, side_channels: int, bottleneck: int, arithmetic: str = "mul",
                 activation: str = "sigmoid", num_blocks: int = 2) -> None:
        super().__init__()
        self.arithmetic = arithmetic
        self.fuse = nn.Sequential(nn.Conv2d(channels + side_channels, channels, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(channels), nn.PReLU(channels))
        self.blocks = nn.Sequential(*[BottleneckResidual(channels, bottleneck) for _ in range(num_blocks)])
        self.activation = nn.Sigmoid() if activation == "sigmoid" else nn.Tanh()

    def mask(self, y_f: torch.Tensor, y_o: torch.Tensor) -> torch.Tensor:
        return self.activation(self.blocks(self.fuse(torch.cat([y_f, y_o], dim=1))))

    def forward(self, y_f: torch.Tensor, y_o: torch.Tensor) -> torch.Tensor:
        m = self.mask(y_f, y_o)
        if self.arithmetic == "mul":
            masked = y_f * m
        elif self.arithmetic == "sub":
            masked = y_f - m
        elif self.arithmetic == "add":
            masked = y_f + m
        else:
            masked = y_f / (m.abs() + DIV_EPS)
        return masked + y_f


@BACKBONES.register()
class MSML(FaceBackbone):
    """MSML embedding network: OSB side outputs (detached) steer FM operators after every FRB stage.

    Args:
        depth: FRB IResNet depth, 18, 34 or 50.
        width: channel multiplier of the FRB and (unless ``osb_width`` is set) of the OSB encoder; 1.0 = paper.
        input_size: (height, width) of the input; every map size follows it.
        feat_dim: embedding size.
        dropout: dropout of the FRB neck (the public code intends 0.4 on CASIA).
        fm_arithmetic: ``mul`` (Z = Y_f ⊙ (1 + M), current public config), ``sub`` (Z = 2·Y_f − M, AAAI-era
            config), ``add`` or ``div``.
        fm_activation: ``sigmoid`` (current config) or ``tanh`` (the public code's default).
        fm_blocks: bottleneck residual blocks per FM operator (2).
        osb_width: channel multiplier of the OSB encoder (default: ``width``).
        gcm_kernel: k of the Global Convolution Modules (7).
        osb_lr_scale: multiplier of the OSB's gradients (identity forward, ``GradientScale`` on the segmentation
            logits): under SGD it is the OSB's learning rate relative to the base lr (public code: 0.01 vs 0.1 per
            512 images → 0.1). Weight decay is not scaled with it.

    Departures from the public code (ygtxr1997/MSML): the OSB decoder is written from methods.md's description
    (GCM per encoder scale, transposed-conv upsampling, skip concatenation, 18-channel stages, DAP), not from its
    source, so channel details inside the decoder and the GCMs' lack of boundary refinement are ours; the FM
    bottleneck cap (128) scales with ``width`` and its fusing 3×3 conv is followed by BN + PReLU; the side outputs
    are the raw 18-channel decoder maps; the OSB learning rate is a gradient scale, not an optimiser group (the
    toolbox's optimiser has one lr; the global gradient-norm clip then sees the scaled OSB gradients); the
    post-paper peer-guided KD is left out (in the release it is added to the logits, which cross-entropy ignores —
    a numerical no-op); the per-sample relighting and mask-region
    perturbations of the public data pipeline are not reproduced (occlusion comes from ``data.occlusion``).
    """

    def __init__(self, depth: int = 18, width: float = 1.0, input_size: Sequence[int] = (112, 112),
                 feat_dim: int = 512, dropout: float = 0.0, fm_arithmetic: str = "mul",
                 fm_activation: str = "sigmoid", fm_blocks: int = 2, osb_width: float | None = None,
                 gcm_kernel: int = 7, osb_lr_scale: float = 0.1) -> None:
        super().__init__()
        if depth not in FRB_DEPTHS:
            raise ConfigError(f"backbone.depth: MSML's FRB is IResNet-18/34/50, expected one of {FRB_DEPTHS}, "
                              f"got {depth!r}")
        if fm_arithmetic not in FM_ARITHMETIC:
            raise ConfigError(f"backbone.fm_arithmetic: expected one of {FM_ARITHMETIC}, got {fm_arithmetic!r}")
        if fm_activation not in FM_ACTIVATIONS:
            raise ConfigError(f"backbone.fm_activation: expected one of {FM_ACTIVATIONS}, got {fm_activation!r}")
        for key, value in (("width", width), ("osb_width", width if osb_width is None else osb_width),
                           ("osb_lr_scale", osb_lr_scale)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"backbone.{key}: expected a number > 0, got {value!r}")
        if not isinstance(fm_blocks, int) or fm_blocks < 0:
            raise ConfigError(f"backbone.fm_blocks: expected an integer >= 0, got {fm_blocks!r}")
        if not isinstance(gcm_kernel, int) or gcm_kernel < 1 or gcm_kernel % 2 == 0:
            raise ConfigError(f"backbone.gcm_kernel: expected an odd integer >= 1, got {gcm_kernel!r}")
        if len(input_size) != 2 or min(input_size) < 32:
            raise ConfigError(f"backbone.input_size: expected (height, width) >= 32, got {list(input_size)!r}")
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.fm_arithmetic = fm_arithmetic
        self.osb_lr_scale = float(osb_lr_scale)
        self.frb = IResNet(depth=depth, feat_dim=feat_dim, dropout=dropout, input_size=self.input_size,
                           width=width)
        self.osb = OcclusionSegmentationBranch(width if osb_width is None else osb_width, gcm_kernel)
        cap = 128 if width == 1.0 else scaled_channels(128, width)
        self.fm = nn.ModuleList(
            FeatureMaskingOperator(c, self.osb.side_channels, min(max(c // 2, 1), cap), fm_arithmetic,
                                   fm_activation, fm_blocks)
            for c in self.frb.stage_channels)
        self.feat_dim = feat_dim
        self.feature_channels = self.frb.feature_channels
        self.feature_size = tuple(self.frb.feature_size)
        self.depth = depth

    def _recognition(self, x: torch.Tensor, side_outputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """FRB feature map with an FM operator after every stage (the side outputs enter detached)."""
        y = self.frb.prelu(self.frb.bn1(self.frb.conv1(x)))
        stages = (self.frb.layer1, self.frb.layer2, self.frb.layer3, self.frb.layer4)
        for stage, fm, side in zip(stages, self.fm, side_outputs):
            y = fm(stage(y), side.detach())
        return y

    def _check_input(self, x: torch.Tensor) -> None:
        if not torch.jit.is_tracing() and tuple(x.shape[-2:]) != self.input_size:
            raise ValueError(f"MSML: input is {tuple(x.shape[-2:])} but backbone.input_size is {self.input_size} "
                             f"(the neck's Linear is sized for it)")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return self._recognition(x, self.osb(x))

    def forward_neck(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self.frb.forward_neck(feature_map)

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        """Occlusion segmentation logits [B, 2, H, W] (class 1 = visible)."""
        return self.osb.segment(self.osb(x), x.shape[-2:])

    def forward_train(self, x: torch.Tensor) -> Dict[str, Any]:
        """Embedding plus ``segmentation`` logits [B, 2, H, W] (their gradient scaled by ``osb_lr_scale``)."""
        self._check_input(x)
        side_outputs = self.osb(x)
        embedding = self.forward_neck(self._recognition(x, side_outputs))
        logits = self.osb.segment(side_outputs, x.shape[-2:])
        if torch.is_grad_enabled() and self.osb_lr_scale != 1.0:
            logits = GradientScale.apply(logits, self.osb_lr_scale)
        with torch.no_grad():
            visible_share = logits.detach().argmax(dim=1).float().mean()
        return {"embedding": embedding, "segmentation": logits, "aux_losses": {},
                "stats": {"osb/predicted_visible": visible_share}}
