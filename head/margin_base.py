"""What every margin head shares: class weights, fp32 cosine, label checks, and the additive angular target.

A margin head scores an embedding against one weight vector per class. Subclasses implement
``logits_from_cosine(cosine, labels, embeddings)``; this base normalises both sides, computes the cosine in fp32
with autocast disabled (margins on bf16/fp16 cosines give NaN losses), clamps it away from ±1 so that
√(1 − cos²) and acos have finite gradients, and checks the labels before anything is indexed with them.
"""
from __future__ import annotations

import math
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

COSINE_LIMIT = 1.0 - 1e-7
INTEGER_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def check_labels(labels: torch.Tensor, batch_size: int, num_class: int) -> None:
    """Raise ValueError unless ``labels`` is an integer tensor of shape [batch_size] with values in [0, num_class)."""
    if not isinstance(labels, torch.Tensor):
        raise ValueError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dtype not in INTEGER_DTYPES:
        raise ValueError(f"labels must have an integer dtype (class indices), got {labels.dtype}")
    if labels.dim() != 1 or labels.shape[0] != batch_size:
        raise ValueError(f"labels must have shape [{batch_size}] (one class index per embedding), "
                         f"got {list(labels.shape)}")
    if batch_size == 0:
        return
    low, high = torch.aminmax(labels.long())  # one device sync for both bounds
    low, high = int(low), int(high)
    for value in (low, high):
        if not 0 <= value < num_class:
            raise ValueError(f"label {value} out of range for head with num_class={num_class} "
                             f"(labels must be in [0, {num_class - 1}])")


def additive_angular_target(cosine: torch.Tensor, margin: torch.Tensor | float,
                            margin_am: float = 0.0, easy_margin: bool = False) -> torch.Tensor:
    """cos(θ + m) computed as cos θ·cos m − sin θ·sin m (so m = 0 gives back cos θ exactly).

    When θ + m would pass π, cos(θ + m) stops decreasing in θ; there the target falls back to cos θ − margin_am
    (FaceX-Zoo; insightface uses margin_am = m·sin m). ``easy_margin`` instead keeps cos θ wherever cos θ ≤ 0.
    ``margin`` may be a float or a tensor broadcastable to ``cosine`` (per-sample margins).
    """
    margin_t = torch.as_tensor(margin, dtype=cosine.dtype, device=cosine.device)
    sine = torch.sqrt((1.0 - cosine * cosine).clamp_min(0.0))
    shifted = cosine * torch.cos(margin_t) - sine * torch.sin(margin_t)
    if easy_margin:
        return torch.where(cosine > 0, shifted, cosine)
    # θ + m < π  ⇔  cos θ > cos(π − m)
    return torch.where(cosine > torch.cos(math.pi - margin_t), shifted, cosine - margin_am)


class MarginHead(nn.Module):
    """Base of the margin heads: ``forward(embeddings, labels) -> {"logits": [B, C] float32, ...}``.

    ``labels=None`` returns plain ``scale · cos`` logits (no margin, nothing updated), e.g. for inference.
    """

    def __init__(self, feat_dim: int, num_class: int, scale: float) -> None:
        super().__init__()
        if feat_dim <= 0 or num_class <= 0:
            raise ValueError(f"{type(self).__name__}: feat_dim and num_class must be positive, "
                             f"got feat_dim={feat_dim}, num_class={num_class}")
        if scale <= 0:
            raise ValueError(f"{type(self).__name__}: scale must be positive, got {scale}")
        self.feat_dim = feat_dim
        self.num_class = num_class
        self.scale = float(scale)
        self.weight = nn.Parameter(torch.empty(num_class, feat_dim))
        nn.init.normal_(self.weight, std=0.01)

    def extra_repr(self) -> str:
        return f"feat_dim={self.feat_dim}, num_class={self.num_class}, scale={self.scale}"

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """[B, C] cosine between normalised embeddings and class weights, fp32, clamped to ±(1 − 1e-7)."""
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            normed_embeddings = F.normalize(embeddings.float(), dim=1)
            normed_weight = F.normalize(self.weight.float(), dim=1)
            return F.linear(normed_embeddings, normed_weight).clamp(-COSINE_LIMIT, COSINE_LIMIT)

    def forward(self, embeddings: torch.Tensor, labels: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        if embeddings.dim() != 2 or embeddings.shape[1] != self.feat_dim:
            raise ValueError(f"{type(self).__name__}: embeddings must have shape [B, {self.feat_dim}], "
                             f"got {list(embeddings.shape)}")
        if labels is None:
            return {"logits": self.scale * self.cosine(embeddings)}
        check_labels(labels, embeddings.shape[0], self.num_class)
        labels = labels.long()
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            return self.logits_from_cosine(self.cosine(embeddings), labels, embeddings.float())

    def logits_from_cosine(self, cosine: torch.Tensor, labels: torch.Tensor,
                           embeddings: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Apply the head's margin. ``cosine`` [B, C] fp32; ``embeddings`` are the raw (unnormalised) fp32 inputs."""
        raise NotImplementedError

    @staticmethod
    def replace_target(logits: torch.Tensor, labels: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Copy of ``logits`` with column ``labels[i]`` of row i set to ``target[i]`` (out of place, autograd-safe)."""
        return logits.scatter(1, labels[:, None], target.reshape(-1, 1))

    @staticmethod
    def target_cosine(cosine: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """[B] cosine of each embedding with its own class."""
        return cosine.gather(1, labels[:, None]).squeeze(1)
