"""GFRO's embedding network: a shared trunk, template-region branches and a dual mixture of experts (GFRO.md §2).

    image → trunk.forward_features → map [B, C, h, w]
        ├─ global branch: trunk.forward_neck(map)                        → [B, D]
        └─ R region branches: masked depthwise pooling over a template
           region of the map → BN → Dropout → Linear → BN                → [B, D] each
    MoE #1 (refine): per branch, x + Σ_e g_e(x)·MLP_e(x) over E experts (softmax gate, optional top-k)
    MoE #2 (integrate): a gate over all refined branches → one softmax weight per branch
    (option ``visibility_head``: a light head predicts each branch's visible fraction v_b from the map and the
    integrate weights become softmax(gate logits + log v_b), i.e. w_b ∝ v_b · exp(gate_b))
    embedding = γ ⊙ (Σ_b w_b · x_b) + β   (``embedding_norm: affine``; ``batchnorm``: BN as in GFRO.md) → [B, D]

Train and test run the same computation (``forward`` and ``forward_train`` share ``_aggregate``); test time
needs no landmarks because alignment puts the face parts at the template positions.

Choices *(ours)*: region masks are the fractional overlap of each map cell with a box derived from the ArcFace
template landmarks (``template_region_boxes``); a region branch pools with a learnable per-channel spatial weight
restricted to its mask (a masked global depthwise convolution, initialised to the masked average); the refine
experts are per branch (GELU MLPs whose output layers start small); both gates start uniform (zero-initialised
output layers), so the untrained aggregator is close to the plain average of the branch features; the integrate
gate is LayerNorm → Linear → ReLU → Linear over its input; ``global_prior`` biases it towards the global branch
at initialisation (useful when fine-tuning a released trunk).

Fine-tuning starts where the released model is *(ours)*: GFRO.md puts a BN after the weighted sum, but a new BN
there normalises with batch statistics in train mode and with running statistics 0/1 in eval mode, so the first
steps train a different embedding from the one an imprinted head (``runtime.init_head: class_means``) was built
with. The default ``embedding_norm: affine`` is a per-dimension scale and shift initialised to the identity and
without statistics (every branch already ends in a BN, so the sum is normalised): the fused embedding is the same
function in train and eval mode, and with a released trunk, ``global_prior`` and the small residual experts it
starts as a close copy of the release (the global branch *is* the release). GFRO's own BatchNorm layers (region
branches; the fused BN with ``embedding_norm: batchnorm``) take their statistics from clean images only:
``forward_train(x, stats_rows=n)`` normalises every row with the batch statistics of the first n rows (the clean
images of ``GFROTraining``'s [clean; noisy] batch) and updates the running statistics from those rows alone, so a
noisy view never moves them; the Trainer calibrates them on clean images before imprinting a head.

MoE balance *(ours, GFRO.md §2 "load-balancing auxiliary loss on both gates")*: the refine gates (MoE #1) get the
Switch importance × load term, averaged over branches; the integrate gate (MoE #2) gets ``KL(π ‖ P̄)`` from its
prior π = softmax of its initial logits (``global_prior`` on the global branch, 0 elsewhere) to the batch-mean
branch weights P̄ — not importance × load, which would pull the gate to uniform weights against ``global_prior``.
At initialisation every sample's integrate weights equal π, so this term is 0 with zero gradient; with
``global_prior = 0`` it is a balance term towards uniform. ``top_k`` routes each token to exactly k experts, ties
(e.g. the all-equal logits of the zero-initialised gate) going to the lower expert index.

Visibility-aware integration *(ours, option ``visibility_head``, default off)*: every noisy view carries a
visibility mask, so a light head (1×1 conv → ReLU → 1×1 conv → sigmoid on every map cell) predicts the visible
fraction of each cell, and branch b's visibility is the region-weighted mean ``v_b = Σ W_b ⊙ cell`` with the
branch's normalised region mask ``W_b`` (the global branch: the whole map). It is supervised by the masks
(``training_mode.visibility_weight``, ``loss/visibility.py``) and needs nothing but the image at test time. The
integrate gate gets it as a *log prior added to its logits* — ``w = softmax(gate(x) + log v)``, i.e.
``w_b ∝ v_b · exp(gate_b)`` — rather than as extra gate inputs: a branch whose region is hidden is down-weighted by
construction, also for occluders the gate never saw, since it no longer depends on the gate having learnt what an
occluder looks like, only on the head recognising that a region is not face. v enters the gate detached (the
head learns from the masks only, so v keeps its meaning, and log v's 1/v gradient cannot destabilise it); the head's
output layer starts at zero weights with a constant "mostly visible" bias, so at initialisation every branch gets
the same v, the log prior cancels in the softmax and the model computes exactly what it computes without the head.
The balance term sees the gate's own logits (the visibility prior is an input, not a routing decision to balance).
"""
from __future__ import annotations

import math
import re
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from backbone import BACKBONES
from backbone.base import FaceBackbone
from data_processor.landmarks import TEMPLATES
from loss.moe_balance import prior_kl_loss, switch_balance_loss, top_k_mask
from utils.checkpoint import load_backbone_weights
from utils.registry import ConfigError

REGION_NAMES = ("upper", "lower", "left", "right", "eyes", "mouth", "central")
INTEGRATE_INPUTS = ("concat", "mean_norms")
EMBEDDING_NORMS = ("affine", "batchnorm")
VISIBILITY_FLOOR = 1e-3  # smallest visibility in the integrate gate's log prior (log v >= -6.9)
Box = Tuple[float, float, float, float]


def template_size(template: str) -> Tuple[int, int]:
    """(height, width) encoded in a template name such as ``arcface_112x112``."""
    match = re.search(r"_(\d+)x(\d+)$", template)
    if template not in TEMPLATES or match is None:
        raise ConfigError(f"backbone.template: unknown template {template!r}; expected one of {sorted(TEMPLATES)}")
    return int(match.group(1)), int(match.group(2))


def template_region_boxes(landmarks: np.ndarray, image_size: Tuple[int, int]) -> Dict[str, Box]:
    """Boxes ``(x0, y0, x1, y1)`` in pixels of every region in ``REGION_NAMES`` for 5 template landmarks.

    ``upper`` lies above the line halfway between the eye line and the nose tip, ``lower`` below it; ``left`` /
    ``right`` split at the nose x (image left); ``eyes`` and ``mouth`` are bands around the eye line and the
    mouth-corner line; ``central`` is the eyes–nose–mouth box.
    """
    height, width = image_size
    points = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    eye_y = float(points[:2, 1].mean())
    nose_x, nose_y = (float(v) for v in points[2])
    mouth_y = float(points[3:, 1].mean())
    left_x, right_x = float(points[:, 0].min()), float(points[:, 0].max())
    split_y = (eye_y + nose_y) / 2.0
    eye_half = split_y - eye_y
    mouth_half = (mouth_y - nose_y) / 2.0
    return {
        "upper": (0.0, 0.0, float(width), split_y),
        "lower": (0.0, split_y, float(width), float(height)),
        "left": (0.0, 0.0, nose_x, float(height)),
        "right": (nose_x, 0.0, float(width), float(height)),
        "eyes": (0.0, eye_y - eye_half, float(width), eye_y + eye_half),
        "mouth": (0.0, mouth_y - mouth_half, float(width), min(float(height), mouth_y + mouth_half)),
        "central": (left_x, eye_y - eye_half, right_x, min(float(height), mouth_y + mouth_half)),
    }


def region_cell_weights(box: Box, image_size: Tuple[int, int], grid_size: Tuple[int, int]) -> torch.Tensor:
    """Fraction of every cell of a ``grid_size`` map (spread over ``image_size`` pixels) that ``box`` covers."""
    (height, width), (rows, cols) = image_size, grid_size
    x0, y0, x1, y1 = box

    def overlap(start: float, end: float, extent: float, cells: int) -> torch.Tensor:
        edges = torch.linspace(0.0, extent, cells + 1, dtype=torch.float64)
        covered = (torch.minimum(edges[1:], torch.tensor(end)) - torch.maximum(edges[:-1], torch.tensor(start)))
        return covered.clamp(min=0.0) / (extent / cells)

    weights = overlap(y0, y1, height, rows)[:, None] * overlap(x0, x1, width, cols)[None, :]
    return weights.float()


class CleanStatsBatchNorm1d(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` whose training-mode statistics may come from the first ``stats_rows`` rows only.

    With ``stats_rows=n`` (train mode) every row is normalised with the batch mean and variance of rows ``[:n]``
    (gradients flow through them as in BN) and the running statistics are updated from those rows alone. In eval
    mode, without ``stats_rows`` or with ``n`` ≥ the batch it is exactly ``nn.BatchNorm1d`` (same state_dict).
    """

    def forward(self, x: torch.Tensor, stats_rows: Optional[int] = None) -> torch.Tensor:
        if stats_rows is None or not self.training or stats_rows >= x.shape[0]:
            return super().forward(x)
        if stats_rows < 2:
            raise ValueError(f"stats_rows must be >= 2 for batch statistics, got {stats_rows}")
        reference = x[:stats_rows].float()
        mean, var = reference.mean(dim=0), reference.var(dim=0, unbiased=False)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
                unbiased = var * (stats_rows / (stats_rows - 1))
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        out = (x.float() - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            out = out * self.weight.float() + self.bias.float()
        return out.to(x.dtype)


class ScaleShift(nn.Module):
    """Per-dimension ``γ ⊙ x + β``, initialised to the identity; no statistics (same in train and eval mode)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor, stats_rows: Optional[int] = None) -> torch.Tensor:
        return x * self.weight.to(x.dtype) + self.bias.to(x.dtype)


class RegionBranch(nn.Module):
    """Masked depthwise pooling of the map over one region → BN → Dropout → Linear → BN (clean-row statistics)."""

    def __init__(self, mask: torch.Tensor, channels: int, feat_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        if float(mask.sum()) <= 0:
            raise ValueError("region mask covers no cell of the feature map")
        self.register_buffer("mask", mask, persistent=False)
        self.spatial_weight = nn.Parameter(torch.full((channels, *mask.shape), 1.0 / float(mask.sum())))
        self.bn_pooled = CleanStatsBatchNorm1d(channels)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, feat_dim, bias=False)
        self.bn_embedding = CleanStatsBatchNorm1d(feat_dim)

    def forward(self, feature_map: torch.Tensor, stats_rows: Optional[int] = None) -> torch.Tensor:
        pooled = (feature_map * (self.spatial_weight * self.mask)).sum(dim=(2, 3))
        hidden = self.fc(self.dropout(self.bn_pooled(pooled, stats_rows)))
        return self.bn_embedding(hidden, stats_rows)


class RefineMoE(nn.Module):
    """MoE #1: per branch, ``x + Σ_e g_e(x)·MLP_e(x)`` with E two-layer experts and a softmax gate.

    All branches' experts run as batched einsums; with ``top_k`` the gate keeps each token's k largest logits
    (softmax over those, as in sparse MoEs) — the other experts are still evaluated (they are small) but weighted 0.
    Exactly k are kept even when logits tie (``top_k_mask``: the lower expert index wins), as they all do at
    initialisation (zero gate).
    """

    def __init__(self, num_branches: int, dim: int, num_experts: int, hidden: int, top_k: Optional[int],
                 gate_scale: float = 1.0) -> None:
        super().__init__()
        self.num_experts, self.top_k, self.gate_scale = num_experts, top_k, gate_scale  # see LrScaledLinear
        self.gate_weight = nn.Parameter(torch.zeros(num_branches, dim, num_experts))
        self.gate_bias = nn.Parameter(torch.zeros(num_branches, num_experts))
        bound = 1.0 / math.sqrt(dim)
        self.w1 = nn.Parameter(torch.empty(num_branches, num_experts, dim, hidden).uniform_(-bound, bound))
        self.b1 = nn.Parameter(torch.zeros(num_branches, num_experts, hidden))
        self.w2 = nn.Parameter(torch.empty(num_branches, num_experts, hidden, dim).normal_(0.0, 0.02))
        self.b2 = nn.Parameter(torch.zeros(num_branches, num_experts, dim))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x`` [B, branches, D] → (refined [B, branches, D], gate logits, routing weights [B, branches, E])."""
        logits = self.gate_scale * (torch.einsum("bnd,nde->bne", x, self.gate_weight.to(x.dtype))
                                    + self.gate_bias).float()
        if self.top_k is None or self.top_k >= self.num_experts:
            weights = logits.softmax(dim=-1)
        else:
            keep = top_k_mask(logits, self.top_k)  # comparisons, not a scatter: exports
            weights = logits.masked_fill(~keep, float("-inf")).softmax(dim=-1)
        hidden = F.gelu(torch.einsum("bnd,nedh->bneh", x, self.w1.to(x.dtype)) + self.b1.to(x.dtype))
        expert_out = torch.einsum("bneh,nehd->bned", hidden, self.w2.to(x.dtype)) + self.b2.to(x.dtype)
        refined = x + torch.einsum("bne,bned->bnd", weights.to(expert_out.dtype), expert_out)
        return refined, logits, weights


class LrScaledLinear(nn.Linear):
    """``nn.Linear`` whose parameters are stored divided by ``scale`` and multiplied back in ``forward``.

    Same function and initialisation as ``nn.Linear``, but an SGD step moves the effective weights ``scale²`` as
    far (an "equalised learning rate"): a per-layer learning-rate multiplier without optimiser parameter groups.
    """

    def __init__(self, in_features: int, out_features: int, scale: float = 1.0) -> None:
        super().__init__(in_features, out_features)
        self.scale = scale
        with torch.no_grad():
            self.weight.div_(scale)
            self.bias.div_(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias * self.scale)


class VisibilityHead(nn.Module):
    """Map ``[B, C, h, w]`` → per-cell visible fraction ``[B, h, w]`` and per-branch visibility ``[B, branches]``.

    ``region_weights`` [branches, h, w] are the normalised region masks (each sums to 1); 1×1 conv → ReLU → 1×1
    conv → sigmoid per cell, computed in float32 after the convolutions. The output layer starts with zero weights
    and bias ``logit(init_visible)``: a constant prediction, identical for every branch.
    """

    def __init__(self, channels: int, region_weights: torch.Tensor, hidden: int = 32,
                 init_visible: float = 0.9) -> None:
        super().__init__()
        self.register_buffer("region_weights", region_weights.float(), persistent=False)
        self.hidden = nn.Conv2d(channels, hidden, 1)
        self.out = nn.Conv2d(hidden, 1, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.constant_(self.out.bias, math.log(init_visible / (1.0 - init_visible)))

    def forward(self, feature_map: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        cells = torch.sigmoid(self.out(F.relu(self.hidden(feature_map))).float())[:, 0]  # [B, h, w]
        return torch.einsum("bij,nij->bn", cells, self.region_weights), cells


class IntegrateGate(nn.Module):
    """MoE #2's gate: refined branch features → one softmax weight per branch."""

    def __init__(self, num_branches: int, dim: int, integrate_input: str, hidden: int, global_prior: float,
                 gate_scale: float = 1.0) -> None:
        super().__init__()
        self.gate_scale = gate_scale
        if integrate_input not in INTEGRATE_INPUTS:
            raise ConfigError(f"backbone.integrate_input must be one of {INTEGRATE_INPUTS}, got {integrate_input!r}")
        self.integrate_input = integrate_input
        in_dim = num_branches * dim if integrate_input == "concat" else dim + num_branches
        self.net = nn.Sequential(nn.LayerNorm(in_dim, elementwise_affine=False),
                                 LrScaledLinear(in_dim, hidden, gate_scale), nn.ReLU(inplace=True),
                                 LrScaledLinear(hidden, num_branches, gate_scale))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)
        with torch.no_grad():
            self.net[-1].bias[0] = global_prior / gate_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` [B, branches, D] → gate logits [B, branches] (float32)."""
        if self.integrate_input == "concat":
            gate_input = torch.flatten(x, 1)
        else:
            norms = x.float().norm(dim=2) / math.sqrt(x.shape[2])
            gate_input = torch.cat([x.mean(dim=1), norms.to(x.dtype)], dim=1)
        return self.net(gate_input).float()


@BACKBONES.register()
class GFROEmbedding(FaceBackbone):
    """GFRO embedding network (module docstring). Built from ``{type: GFROEmbedding, trunk: {type: ...}}``.

    Args:
        trunk: backbone config (or an already built ``FaceBackbone``) providing the map and the global neck.
        regions: template regions, each a branch (subset of ``REGION_NAMES``).
        num_experts / top_k / expert_hidden: refine MoE size; ``top_k=None`` is a dense softmax gate.
        integrate_input: integrate-gate input, ``concat`` of the branch features or ``mean_norms`` (their mean
            plus each branch's norm).
        gate_hidden: hidden width of the integrate gate.
        global_prior: initial logit bias of the global branch in the integrate gate (0 = uniform start); the
            integrate gate's balance term is a KL to this prior (module docstring).
        gate_lr_scale: learning-rate multiplier of both gates under SGD: their weights are stored divided by
            ``sqrt(gate_lr_scale)`` and multiplied back in ``forward`` (same function, see ``LrScaledLinear``;
            under Adam the factor is ``sqrt(gate_lr_scale)``). At lr 0.1 unscaled gates saturated into one-hot
            routing within a few dozen steps on a toy task, after which they pass no gradient; 1.0 disables it.
        dropout: dropout in the region branches (the global branch uses the trunk's own).
        feat_dim: embedding size; must equal the trunk's ``feat_dim`` (the global branch is the trunk's neck).
        balance_weight: λ_bal of the load-balancing term returned by ``forward_train`` (``moe_balance``).
        template: alignment template whose landmarks place the regions.
        embedding_norm: what follows the weighted sum: ``affine`` (identity-initialised per-dimension scale and
            shift, no statistics; default) or ``batchnorm`` (GFRO.md's BN, clean-row statistics).
        visibility_head: add the visibility head (module docstring, *(ours)*): per-branch visible fractions v
            predicted from the map, integrate weights ``softmax(gate logits + log v)``; ``forward_train`` returns v
            (``visibility`` [B, branches], global first) for ``training_mode.visibility_weight`` to supervise with
            the batch's visibility masks. Off by default; off, the model and its state_dict are unchanged.
    """

    accepts_stats_rows = True  # forward_train(x, stats_rows=n): GFRO's BNs take statistics from rows [:n] only

    def __init__(self, trunk: Union[Mapping[str, Any], FaceBackbone],
                 regions: Sequence[str] = ("upper", "lower", "left", "right"), num_experts: int = 4,
                 top_k: Optional[int] = None, expert_hidden: int = 128, integrate_input: str = "concat",
                 gate_hidden: int = 128, global_prior: float = 0.0, gate_lr_scale: float = 0.03,
                 dropout: float = 0.0, feat_dim: int = 512,
                 balance_weight: float = 0.01, template: str = "arcface_112x112",
                 embedding_norm: str = "affine", visibility_head: bool = False) -> None:
        super().__init__()
        if isinstance(trunk, Mapping):
            try:
                trunk = BACKBONES.build(trunk, where="backbone.trunk")
            except ConfigError as error:
                raise ConfigError(f"backbone.trunk: {error}") from None
        self.trunk = trunk
        if not isinstance(self.trunk, FaceBackbone):
            raise ConfigError(f"backbone.trunk must be a backbone config or FaceBackbone, got {type(trunk).__name__}")
        if self.trunk.feat_dim != feat_dim:
            raise ConfigError(f"backbone.feat_dim ({feat_dim}) must equal the trunk's feat_dim "
                              f"({self.trunk.feat_dim}): the global branch is the trunk's own neck")
        unknown = [r for r in regions if r not in REGION_NAMES]
        if unknown or len(set(regions)) != len(regions):
            raise ConfigError(f"backbone.regions: expected distinct names from {REGION_NAMES}, got {list(regions)}")
        if num_experts < 1 or (top_k is not None and not 1 <= top_k <= num_experts):
            raise ConfigError(f"backbone: need num_experts >= 1 and 1 <= top_k <= num_experts, got "
                              f"num_experts={num_experts}, top_k={top_k}")
        self.feat_dim = feat_dim
        self.feature_channels = self.trunk.feature_channels
        self.feature_size = tuple(self.trunk.feature_size)
        self.regions = tuple(regions)
        self.branch_names = ("global",) + self.regions
        self.top_k = top_k
        self.balance_weight = float(balance_weight)

        image_size = template_size(template)
        boxes = template_region_boxes(TEMPLATES[template], image_size)
        self.region_branches = nn.ModuleList(
            RegionBranch(region_cell_weights(boxes[name], image_size, self.feature_size), self.feature_channels,
                         feat_dim, dropout)
            for name in self.regions)
        num_branches = len(self.branch_names)
        if gate_lr_scale <= 0:
            raise ConfigError(f"backbone.gate_lr_scale must be > 0, got {gate_lr_scale}")
        gate_scale = math.sqrt(gate_lr_scale)
        self.refine = RefineMoE(num_branches, feat_dim, num_experts, expert_hidden, top_k, gate_scale)
        self.integrate = IntegrateGate(num_branches, feat_dim, integrate_input, gate_hidden, global_prior, gate_scale)
        prior_logits = torch.zeros(num_branches)
        prior_logits[0] = float(global_prior)
        self.register_buffer("integrate_prior", prior_logits.softmax(dim=0), persistent=False)
        if embedding_norm not in EMBEDDING_NORMS:
            raise ConfigError(f"backbone.embedding_norm must be one of {EMBEDDING_NORMS}, got {embedding_norm!r}")
        self.embedding_norm = embedding_norm
        self.fusion_norm = ScaleShift(feat_dim) if embedding_norm == "affine" else CleanStatsBatchNorm1d(feat_dim)
        if not isinstance(visibility_head, bool):
            raise ConfigError(f"backbone.visibility_head must be true or false, got {visibility_head!r}")
        masks = [torch.ones(self.feature_size)] + [branch.mask for branch in self.region_branches]
        # normalised region weights of every branch (global: the whole map), shared with the visibility targets
        self.register_buffer("visibility_weights", torch.stack([m / m.sum() for m in masks]), persistent=False)
        self.visibility_head = (VisibilityHead(self.feature_channels, self.visibility_weights)
                                if visibility_head else None)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk.forward_features(x)

    def _aggregate(self, feature_map: torch.Tensor, stats_rows: Optional[int] = None) -> Dict[str, torch.Tensor]:
        branches = [self.trunk.forward_neck(feature_map)] + [branch(feature_map, stats_rows)
                                                             for branch in self.region_branches]
        dtype = branches[0].dtype
        stacked = torch.stack([b.to(dtype) for b in branches], dim=1)  # [B, branches, D]
        refined, refine_logits, refine_weights = self.refine(stacked)
        integrate_logits = self.integrate(refined)  # the gate's own logits (balance term)
        out: Dict[str, torch.Tensor] = {}
        if self.visibility_head is not None:
            visibility, _ = self.visibility_head(feature_map)
            out["visibility"] = visibility
            integrate_weights = (integrate_logits + visibility.detach().clamp_min(VISIBILITY_FLOOR).log()).softmax(-1)
        else:
            integrate_weights = integrate_logits.softmax(dim=-1)
        fused = (integrate_weights.to(refined.dtype).unsqueeze(-1) * refined).sum(dim=1)
        out.update({"embedding": self.fusion_norm(fused, stats_rows), "refine_logits": refine_logits,
                    "refine_weights": refine_weights, "integrate_logits": integrate_logits,
                    "integrate_weights": integrate_weights})
        return out

    def forward_neck(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self._aggregate(feature_map)["embedding"]

    def balance_loss(self, refine_logits: torch.Tensor, integrate_logits: torch.Tensor) -> torch.Tensor:
        """Unweighted balance loss: mean over branches of the refine gates' Switch importance × load (1 when
        balanced) + ``KL(π ‖ P̄)`` of the integrate gate to its prior π (0 at initialisation, whatever
        ``global_prior``)."""
        refine_probs = refine_logits.softmax(dim=-1)
        refine = torch.stack([switch_balance_loss(refine_probs[:, b], self.top_k)
                              for b in range(refine_probs.shape[1])]).mean()
        return refine + prior_kl_loss(integrate_logits.softmax(dim=-1), self.integrate_prior)

    def forward_train(self, x: torch.Tensor, stats_rows: Optional[int] = None) -> Dict[str, Any]:
        """Training forward; ``stats_rows=n``: GFRO's own BatchNorm layers normalise with (and update their running
        statistics from) the first n rows only — ``GFROTraining`` passes the number of clean images."""
        out = self._aggregate(self.forward_features(x), stats_rows)
        balance = self.balance_loss(out["refine_logits"], out["integrate_logits"])
        result = {
            "embedding": out["embedding"],
            "aux_losses": {"moe_balance": self.balance_weight * balance},
            "stats": {"integrate_weights": out["integrate_weights"].detach(),
                      "refine_weights": out["refine_weights"].detach()},
        }
        if "visibility" in out:
            result["visibility"] = out["visibility"]  # [B, branches], float32, with gradient (head only)
            result["stats"]["visibility"] = out["visibility"].detach()
        return result

    def load_trunk_state_dict(self, state_dict: Mapping[str, torch.Tensor], source: str = "") -> None:
        """Strictly load a trunk state_dict (e.g. a released or pre-trained plain backbone) for fine-tuning."""
        load_backbone_weights(self.trunk, state_dict, source or "trunk state_dict")
