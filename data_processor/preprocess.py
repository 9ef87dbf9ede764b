"""The one preprocessing contract: uint8 RGB batches → normalised float tensors for a model.

Datasets, the SDK and protocols all hand around uint8 RGB images ``[B, 3, H, W]``; channel order, mean, std and
input size are metadata of a *model* (``PreprocessSpec``), applied here and nowhere else — by training, evaluation,
the SDK and the teacher alike.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Mapping, Sequence, Tuple

import torch
import torch.nn.functional as F

CHANNEL_ORDERS = ("RGB", "BGR")


@dataclass(frozen=True)
class PreprocessSpec:
    """How a model expects its input: channel order, per-channel mean/std (in that order), size (H, W)."""

    channel_order: str = "BGR"
    mean: Tuple[float, float, float] = (127.5, 127.5, 127.5)
    std: Tuple[float, float, float] = (128.0, 128.0, 128.0)
    input_size: Tuple[int, int] = (112, 112)
    template: str = "arcface_112x112"

    def __post_init__(self) -> None:
        if self.channel_order not in CHANNEL_ORDERS:
            raise ValueError(f"channel_order must be one of {CHANNEL_ORDERS}, got {self.channel_order!r}")
        for name in ("mean", "std"):
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) == 1:
                value = value * 3
            if len(value) != 3:
                raise ValueError(f"{name} must have 1 or 3 values, got {getattr(self, name)!r}")
            object.__setattr__(self, name, value)
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")
        object.__setattr__(self, "input_size", tuple(int(v) for v in self.input_size))

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any] | None) -> "PreprocessSpec":
        cfg = dict(cfg or {})
        unknown = set(cfg) - {"channel_order", "mean", "std", "input_size", "template"}
        if unknown:
            raise ValueError(f"preprocess: unknown key(s) {sorted(unknown)}")
        return cls(**cfg)

    def to_dict(self) -> Dict[str, Any]:
        out = asdict(self)
        out["mean"], out["std"], out["input_size"] = list(self.mean), list(self.std), list(self.input_size)
        return out


FACEXZOO_SPEC = PreprocessSpec("BGR", (127.5,) * 3, (128.0,) * 3)
INSIGHTFACE_SPEC = PreprocessSpec("RGB", (127.5,) * 3, (127.5,) * 3)
IMAGENET_SPEC = PreprocessSpec("RGB", tuple(round(255 * v, 4) for v in (0.485, 0.456, 0.406)),
                               tuple(round(255 * v, 4) for v in (0.229, 0.224, 0.225)))

# The named input contracts of common releases, the one place they are written (``--preprocess NAME``):
#   insightface: RGB, (x - 127.5) / 127.5, 112x112, ArcFace 5-point template (insightface model zoo, ArcFace,
#                CurricularFace, MagFace, AdaFace, ElasticFace releases)
#   facexzoo:    BGR, (x - 127.5) / 128, 112x112, ArcFace template (FaceX-Zoo's OpenCV-read training/test code)
#   imagenet:    RGB, torchvision ImageNet mean/std x 255, 112x112, ArcFace template (PIL + torchvision loaders)
PREPROCESS_PRESETS: Dict[str, PreprocessSpec] = {
    "insightface": INSIGHTFACE_SPEC,
    "facexzoo": FACEXZOO_SPEC,
    "imagenet": IMAGENET_SPEC,
}


def parse_preprocess(text: str) -> PreprocessSpec:
    """``--preprocess``: a preset name, a JSON object of ``PreprocessSpec`` keys, or ``[PRESET,]key=value,...``
    (``mean``/``std`` as ``127.5`` or ``123.7/116.3/103.5``, ``input_size`` as ``112x96``), e.g.
    ``facexzoo,channel_order=RGB,input_size=112x96,template=sphereface_112x96``."""
    text = text.strip()
    if text.startswith("{"):
        import json

        return PreprocessSpec.from_dict(json.loads(text))
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise ValueError("--preprocess: empty spec")
    base = INSIGHTFACE_SPEC
    if "=" not in items[0]:
        name = items.pop(0)
        if name not in PREPROCESS_PRESETS:
            raise ValueError(f"--preprocess: unknown preset {name!r}; presets: {', '.join(PREPROCESS_PRESETS)} "
                             f"(or key=value pairs / a JSON object)")
        base = PREPROCESS_PRESETS[name]
    cfg = base.to_dict()
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in cfg:
            raise ValueError(f"--preprocess: expected key=value with key in {sorted(cfg)}, got {item!r}")
        if key in ("mean", "std"):
            cfg[key] = [float(v) for v in value.split("/")]
        elif key == "input_size":
            cfg[key] = [int(v) for v in value.lower().split("x")]
        else:
            cfg[key] = value
    return PreprocessSpec.from_dict(cfg)


def preprocess(images: torch.Tensor, spec: PreprocessSpec) -> torch.Tensor:
    """uint8 (or float 0..255) RGB ``[B,3,H,W]`` → float32 normalised input in ``spec``'s channel order and size."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"preprocess expects [B, 3, H, W] RGB images, got shape {tuple(images.shape)}")
    x = images.float()
    if spec.channel_order == "BGR":
        x = x.flip(1)
    if tuple(x.shape[-2:]) != spec.input_size:
        x = F.interpolate(x, size=spec.input_size, mode="bilinear", align_corners=False)
    mean = torch.tensor(spec.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


def spec_from_sequence(values: Sequence[float]) -> Tuple[float, float, float]:
    values = tuple(float(v) for v in values)
    return values * 3 if len(values) == 1 else values  # type: ignore[return-value]
