"""MSML training (methods.md §5.2): L = L_cls + λ·L_seg.

    L_cls = CE(margin head(embedding))      over the trained views
    L_seg = consensus loss (α, β) of the OSB's segmentation logits [B, 2, H, W] against the binary visibility mask
            (class 1 = visible / clean, 0 = occluded; the mask resized to the logits' size, > 0.5 = visible)

Views *(our protocol choice)*: the occluded view ``noisy`` with its ``visibility`` mask from ``data.occlusion``
always trains; with ``train_views: both`` (default) the clean ``image`` trains too, with an all-visible mask, in the
same forward ([clean; noisy], as the GFRO rows of the comparison see them). The public code instead draws ONE view
per sample (a 3D-rendered surgical mask with p 0.2, else one of its online occluders or none) — ``train_views:
noisy`` with ``data.occlusion`` including ``clean`` is that sampling. The backbone must return ``segmentation``
logits from ``forward_train`` (``backbone/msml.py`` ``MSML``).

The post-paper peer-guided KD of the public code is not implemented: it is added to the classification logits, which
cross-entropy is invariant to, so in the release it changes nothing.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from data_processor.preprocess import PreprocessSpec
from loss.consensus_segmentation import ConsensusSegmentationLoss
from training_mode import TRAINING_MODES
from training_mode.base import TrainingMode
from utils.registry import ConfigError

TRAIN_VIEWS = ("both", "noisy")


def segmentation_labels(visibility: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """Visibility masks [N, 1, H, W] (or [N, H, W]; 1 = visible) → integer labels [N, *size] (1 = visible)."""
    masks = visibility.float()
    if masks.dim() == 3:
        masks = masks[:, None]
    if tuple(masks.shape[-2:]) != tuple(size):
        masks = F.interpolate(masks, size=tuple(size), mode="area")
    return (masks[:, 0] > 0.5).long()


@TRAINING_MODES.register()
class MSMLTraining(TrainingMode):
    """MSML's loss around a backbone with a segmentation output. Needs ``noisy``, ``visibility`` and ``label``.

    Args:
        seg_weight: λ of the segmentation term (paper: 1).
        alpha / beta: consensus-loss weights (paper: 10 / 5).
        train_views: ``both`` (clean + noisy views) or ``noisy`` (module docstring).
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, preprocess_spec: PreprocessSpec,
                 teacher: Optional[nn.Module] = None, seg_weight: float = 1.0, alpha: float = 10.0,
                 beta: float = 5.0, train_views: str = "both") -> None:
        super().__init__(backbone, head, preprocess_spec, teacher)
        if train_views not in TRAIN_VIEWS:
            raise ConfigError(f"training_mode.train_views: expected one of {TRAIN_VIEWS}, got {train_views!r}")
        for key, value in (("seg_weight", seg_weight), ("alpha", alpha), ("beta", beta)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"training_mode.{key}: expected a number >= 0, got {value!r}")
        if not hasattr(backbone, "segment"):
            raise ConfigError(f"training_mode.type MSMLTraining needs a backbone with an occlusion segmentation "
                              f"branch (backbone.type: MSML), got {type(backbone).__name__}")
        self.seg_weight = float(seg_weight)
        self.train_views = train_views
        self.segmentation_loss = ConsensusSegmentationLoss(alpha, beta)

    def compute_loss(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        self.require(batch, ("noisy", "visibility", "label"))
        noisy, visibility, labels = batch["noisy"], batch["visibility"], batch["label"]
        if noisy.dim() == 5:   # data.occlusion.num_views > 1: every view trains
            views = noisy.shape[1]
            noisy, visibility = noisy.flatten(0, 1), visibility.flatten(0, 1)
            labels = labels.repeat_interleave(views)
        images = noisy
        if self.train_views == "both":
            images = torch.cat([batch["image"], noisy])
            visibility = torch.cat([torch.ones_like(visibility), visibility])
            labels = torch.cat([batch["label"], labels])
        out = self.backbone.forward_train(self.inputs(images))
        if "segmentation" not in out:
            raise ConfigError("MSMLTraining: backbone.forward_train returned no 'segmentation' logits "
                              "(backbone.type must be MSML)")
        logits = out["segmentation"]
        seg_labels = segmentation_labels(visibility.to(logits.device), logits.shape[-2:])
        head_out = self.head(out["embedding"], labels)
        raw: Dict[str, torch.Tensor] = {
            "ce": F.cross_entropy(head_out["logits"].float(), labels),
            "seg": self.segmentation_loss(logits, seg_labels),
        }
        terms: Dict[str, torch.Tensor] = {"ce": raw["ce"], "seg": self.seg_weight * raw["seg"]}
        if "aux_loss" in head_out:
            terms["head_aux"] = head_out["aux_loss"]
        terms.update(out["aux_losses"])
        with torch.no_grad():
            predicted = logits.detach().argmax(dim=1)
            stats = {**out["stats"], "raw/seg": raw["seg"].detach(),
                     "osb/pixel_accuracy": (predicted == seg_labels).float().mean(),
                     "osb/true_visible": seg_labels.float().mean()}
        return self.loss_output(terms, stats)
