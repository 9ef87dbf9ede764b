"""FaceT fine-tuning (methods.md §4.2–4.3): per sample, the occluded view replaces the clean image with probability
``masked_probability`` and sets the flag y; the backbone's prompts follow y; MagFace (or any head) on the embedding
plus λ·BCE of the backbone's occlusion classifier against y.

    L = CE(head(FaceT(x, y))) + head aux (MagFace λ_g·g) + flag_weight · BCE(classifier logit, y)
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from data_processor.preprocess import PreprocessSpec
from training_mode import TRAINING_MODES
from training_mode.base import TrainingMode
from utils.registry import ConfigError


@TRAINING_MODES.register()
class FaceTTraining(TrainingMode):
    """FaceT's training step around a ``FaceT`` backbone. Needs ``image``, ``label`` and (with
    ``masked_probability`` > 0) ``noisy`` + ``occlusion_type`` (``data.occlusion``).

    Per sample, with probability ``masked_probability`` the noisy view is trained instead of the clean image and
    y = (its ``occlusion_type`` != 0), else the clean image with y = 0. The public code's ``MaskedImageFolder`` does
    the same with pre-rendered FMA-3D masked twins (y = 1 whenever a twin exists, p = 0.1).

    Departures: the occluded view comes from the toolbox's occlusion pipeline (any ``data.occlusion.mode``) rather
    than FMA-3D masks; a drawn "clean" noisy view gives y = 0. The flag BCE is ours (the paper has no classifier).

    Args:
        masked_probability: p of training a sample's occluded view (paper 0.1).
        flag_weight: λ of the classifier's BCE (it sees detached tokens: the weight only scales its own updates).
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, preprocess_spec: PreprocessSpec,
                 teacher: Optional[nn.Module] = None, masked_probability: float = 0.1,
                 flag_weight: float = 1.0) -> None:
        super().__init__(backbone, head, preprocess_spec, teacher)
        if not 0.0 <= float(masked_probability) <= 1.0:
            raise ConfigError(f"training_mode.masked_probability: expected a value in [0, 1], got {masked_probability}")
        if float(flag_weight) < 0:
            raise ConfigError(f"training_mode.flag_weight: expected >= 0, got {flag_weight}")
        if not hasattr(backbone, "flag_logits"):
            raise ConfigError(f"FaceTTraining needs a FaceT backbone (backbone.type: FaceT or FaceTTiny), got "
                              f"{type(backbone).__name__}")
        self.masked_probability = float(masked_probability)
        self.flag_weight = float(flag_weight)

    def choose_views(self, batch: Dict[str, Any]) -> tuple:
        """``(uint8 images, flag float [B])``: the noisy view with probability p (y = its type != 0), else clean."""
        clean = batch["image"]
        size = clean.shape[0]
        if self.masked_probability == 0.0:
            return clean, torch.zeros(size, device=clean.device)
        for key in ("noisy", "occlusion_type"):
            if key not in batch:
                raise KeyError(f"FaceTTraining: training_mode.masked_probability > 0 needs batch['{key}'] (keys: "
                               f"{sorted(batch)}); set data.occlusion")
        noisy, types = batch["noisy"], batch["occlusion_type"]
        if noisy.dim() != 4:
            raise ValueError("FaceTTraining uses one noisy view per image; set data.occlusion.num_views to 1")
        use_noisy = torch.rand(size, device=clean.device) < self.masked_probability
        images = torch.where(use_noisy.reshape(-1, 1, 1, 1), noisy.to(clean.device), clean)
        flag = (use_noisy & (types.to(clean.device).reshape(-1) != 0)).float()
        return images, flag

    def compute_loss(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        images, flag = self.choose_views(batch)
        out = self.backbone.forward_train(self.inputs(images), flag=flag)
        head_out = self.head(out["embedding"], batch["label"])
        terms: Dict[str, torch.Tensor] = {"ce": F.cross_entropy(head_out["logits"].float(), batch["label"])}
        if "aux_loss" in head_out:
            terms["head_aux"] = head_out["aux_loss"]
        stats: Dict[str, Any] = {"flag_rate": flag.mean()}
        logits = out.get("flag_logits")
        if logits is not None and self.flag_weight > 0:
            raw = F.binary_cross_entropy_with_logits(logits.float(), flag)
            terms["flag_bce"] = self.flag_weight * raw
            with torch.no_grad():
                stats["flag_accuracy"] = ((logits > 0).float() == flag).float().mean()
        terms.update(out["aux_losses"])
        stats.update(out.get("stats", {}))
        return self.loss_output(terms, stats)
