"""Region-visibility supervision for GFRO's visibility head (``backbone.visibility_head``).

Every noisy view of ``data_processor/train_dataset.py`` comes with a visibility mask (image space, 1 = visible).
The target of branch b is the visible fraction of its region on the backbone's feature-map grid:

    cell[i, j]  = area mean of the mask over cell (i, j)          (exact area pooling, any image size)
    target[b]   = Σ_ij W_b[i, j] · cell[i, j]                     (W_b: the branch's region weights, Σ W_b = 1)

with ``W_b`` the same normalised region weights the head uses to turn its per-cell predictions into per-branch
visibilities (``GFROEmbedding.visibility_weights``; the global branch weighs the whole map uniformly). The loss is
binary cross-entropy with these soft targets less their entropy (a Bernoulli KL: 0 when exact), in float32 whatever
the autocast dtype.
"""
from __future__ import annotations

import torch
from torch import nn

from loss import LOSSES


def area_pool_matrix(pixels: int, cells: int, dtype: torch.dtype = torch.float32,
                     device: torch.device = None) -> torch.Tensor:
    """[cells, pixels] matrix whose row i averages the pixels that cell i (of ``pixels / cells`` px) covers,
    fractional pixels weighted by their overlap (so ``A @ column`` is exact area pooling)."""
    edges = torch.linspace(0.0, float(pixels), cells + 1, dtype=torch.float64, device=device)
    start = torch.arange(pixels, dtype=torch.float64, device=device)
    overlap = (torch.minimum(edges[1:, None], start[None, :] + 1.0)
               - torch.maximum(edges[:-1, None], start[None, :])).clamp(min=0.0)
    return (overlap / (float(pixels) / cells)).to(dtype)


def cell_visibility(masks: torch.Tensor, grid_size) -> torch.Tensor:
    """Visibility masks ``[N, H, W]`` (or ``[N, 1, H, W]``) → visible fraction of every map cell ``[N, h, w]``."""
    if masks.dim() == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if masks.dim() != 3:
        raise ValueError(f"visibility masks must be [N, H, W] or [N, 1, H, W], got {tuple(masks.shape)}")
    rows, cols = (int(v) for v in grid_size)
    masks = masks.float()
    pool_y = area_pool_matrix(masks.shape[1], rows, device=masks.device)
    pool_x = area_pool_matrix(masks.shape[2], cols, device=masks.device)
    return torch.einsum("ih,nhw,jw->nij", pool_y, masks, pool_x)


def region_visibility_targets(masks: torch.Tensor, region_weights: torch.Tensor) -> torch.Tensor:
    """Per-branch visible fractions ``[N, branches]`` of masks ``[N, (1,) H, W]`` for normalised region weights
    ``[branches, h, w]`` (each sums to 1)."""
    cells = cell_visibility(masks, region_weights.shape[1:])
    return torch.einsum("nij,bij->nb", cells, region_weights.float()).clamp(0.0, 1.0)


def soft_bce(predicted: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Mean binary cross-entropy of probabilities ``predicted`` against soft targets in [0, 1] minus the targets'
    own entropy, i.e. the Bernoulli ``KL(t ‖ p)``: same gradient as BCE, but 0 for a perfect prediction (plain BCE
    with fractional targets never reaches 0, so its logged value would hide how much is learnt). Float32, written
    out rather than ``F.binary_cross_entropy``, which autocast refuses."""
    p = predicted.float().clamp(eps, 1.0 - eps)
    t = target.float()
    t_safe = t.clamp(eps, 1.0 - eps)
    entropy = -(t * t_safe.log() + (1.0 - t) * (1.0 - t_safe).log())
    return (-(t * p.log() + (1.0 - t) * (1.0 - p).log()) - entropy).mean()


@LOSSES.register()
class RegionVisibilityLoss(nn.Module):
    """``forward(predicted [N, branches], masks [N, (1,) H, W], region_weights [branches, h, w])`` → BCE scalar."""

    def forward(self, predicted: torch.Tensor, masks: torch.Tensor, region_weights: torch.Tensor) -> torch.Tensor:
        return soft_bce(predicted, region_visibility_targets(masks, region_weights))
