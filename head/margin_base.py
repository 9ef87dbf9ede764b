"""What every margin head shares: class weights, fp32 cosine, label checks, and the additive angular target.

A margin head scores an embedding against one weight vector per class. Subclasses implement
``logits_from_cosine(cosine, labels, embeddings)``; this base normalises both sides, computes the cosine in fp32
with autocast disabled (margins on bf16/fp16 cosines give NaN losses; fp64 inputs stay fp64), clamps it away from
±1 so that √(1 − cos²) and acos have finite gradients, and checks the labels before anything is indexed with them.

Each head's docstring names the reference implementation it follows (repository + file) and every deliberate
departure; ``tests/test_heads_reference.py`` recomputes each reference formula independently.
"""
from __future__ import annotations

import math
from typing import Dict, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from utils.distributed import process_group

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


INSIGHTFACE_FALLBACK = "insightface"


def check_margin_am(margin_am: float | str | None, where: str) -> float | str | None:
    """Validate a ``margin_am`` setting: a float, ``"insightface"`` or ``None`` (see ``additive_angular_target``)."""
    if margin_am is None or margin_am == INSIGHTFACE_FALLBACK:
        return margin_am
    if isinstance(margin_am, bool) or not isinstance(margin_am, (int, float)):
        raise ValueError(f"{where}: margin_am must be a number, '{INSIGHTFACE_FALLBACK}' or null, got {margin_am!r}")
    return float(margin_am)


def additive_angular_target(cosine: torch.Tensor, margin: torch.Tensor | float,
                            margin_am: float | str | None = 0.0, easy_margin: bool = False) -> torch.Tensor:
    """cos(θ + m) computed as cos θ·cos m − sin θ·sin m (so m = 0 gives back cos θ exactly).

    When θ + m would pass π (cos θ ≤ th = cos(π − m)), cos(θ + m) stops decreasing in θ; there the target falls
    back to cos θ − mm, with mm chosen by ``margin_am``:

    - a number: mm = margin_am (FaceX-Zoo ``head/ArcFace.py`` and ``head/MagFace.py``; 0 means no penalty there);
    - ``"insightface"``: mm = sin(π − m)·m (insightface arcface_torch ``losses.ArcFace``, CurricularFace,
      the official MagFace ``MagLinear``), computed per sample when ``margin`` is a tensor;
    - ``None``: no fallback, cos(θ + m) everywhere (ElasticFace ``utils/losses.ElasticArcFace``).

    ``easy_margin`` instead keeps cos θ wherever cos θ ≤ 0 (and ignores ``margin_am``).
    ``margin`` may be a float (thresholds computed with ``math`` in float64, as the references do) or a tensor
    broadcastable to ``cosine`` (per-sample margins; thresholds computed with torch, as MagFace does).
    """
    if isinstance(margin, torch.Tensor):
        margin_t = margin.to(cosine.dtype)
        cos_m, sin_m = torch.cos(margin_t), torch.sin(margin_t)
        threshold = torch.cos(math.pi - margin_t)
        insightface_mm = torch.sin(math.pi - margin_t) * margin_t
    else:
        margin_f = float(margin)
        cos_m, sin_m = math.cos(margin_f), math.sin(margin_f)
        threshold = math.cos(math.pi - margin_f)
        insightface_mm = math.sin(math.pi - margin_f) * margin_f
    sine = torch.sqrt((1.0 - cosine * cosine).clamp_min(0.0))
    shifted = cosine * cos_m - sine * sin_m
    if easy_margin:
        return torch.where(cosine > 0, shifted, cosine)
    if margin_am is None:
        return shifted
    mm = insightface_mm if margin_am == INSIGHTFACE_FALLBACK else float(margin_am)
    # θ + m < π  ⇔  cos θ > cos(π − m)
    return torch.where(cosine > threshold, shifted, cosine - mm)


def global_mean_std(values: torch.Tensor, across_ranks: bool = True) -> tuple:
    """(mean, unbiased std) of ``values`` over the global batch: all ranks' values under torchrun (sums reduced in
    float64), so a head's running statistics (CurricularFace ``t``, AdaFace's norm EMA) stay identical on every
    rank; one process (or ``across_ranks=False``: the values are the global batch already, as under Partial FC):
    ``values.mean()``, ``values.std()`` exactly. The std is NaN for a single value overall."""
    if not across_ranks or process_group()[1] == 1:
        return values.mean(), (values.std() if values.numel() > 1 else values.new_tensor(float("nan")))
    flat = values.detach().double().reshape(-1)
    sums = torch.stack([flat.sum(), (flat * flat).sum(), flat.new_tensor(float(flat.numel()))])
    dist.all_reduce(sums)
    total, squares, count = sums.unbind()
    mean = total / count
    variance = (squares - count * mean * mean).clamp_min(0.0) / (count - 1.0) if count > 1 else mean * float("nan")
    return mean.to(values.dtype), variance.sqrt().to(values.dtype)


def cross_entropy_rows(head_out: Dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """[B] per-row cross-entropy of a head's output: Partial FC's ``ce_per_row`` (softmax over every rank's
    classes), else the CE of ``logits`` (fp32)."""
    if "ce_per_row" in head_out:
        return head_out["ce_per_row"]
    return F.cross_entropy(head_out["logits"].float(), labels, reduction="none")


def compute_dtype(embeddings: torch.Tensor) -> torch.dtype:
    """fp32 for fp32/bf16/fp16 inputs (margins are never computed in half precision), fp64 for fp64 inputs."""
    return torch.float64 if embeddings.dtype == torch.float64 else torch.float32


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
        self.batch_is_global = False  # Partial FC sets it: its rows are every rank's, no further reduction

    def extra_repr(self) -> str:
        return f"feat_dim={self.feat_dim}, num_class={self.num_class}, scale={self.scale}"

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """[B, C] cosine between normalised embeddings and class weights, clamped to ±(1 − 1e-7).

        Computed in fp32, or in fp64 when the embeddings are fp64 (the reference tests run the heads in fp64)."""
        dtype = compute_dtype(embeddings)
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            normed_embeddings = F.normalize(embeddings.to(dtype), dim=1)
            normed_weight = F.normalize(self.weight.to(dtype), dim=1)
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
            dtype = compute_dtype(embeddings)
            return self.logits_from_cosine(self.cosine(embeddings), labels, embeddings.to(dtype))

    def logits_from_cosine(self, cosine: torch.Tensor, labels: torch.Tensor,
                           embeddings: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Apply the head's margin. ``cosine`` [B, C] fp32 (fp64 for fp64 inputs); ``embeddings`` are the raw
        (unnormalised) inputs in the same dtype."""
        raise NotImplementedError

    @staticmethod
    def replace_target(logits: torch.Tensor, labels: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Copy of ``logits`` with column ``labels[i]`` of row i set to ``target[i]`` (out of place, autograd-safe)."""
        return logits.scatter(1, labels[:, None], target.reshape(-1, 1))

    @staticmethod
    def target_cosine(cosine: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """[B] cosine of each embedding with its own class."""
        return cosine.gather(1, labels[:, None]).squeeze(1)
