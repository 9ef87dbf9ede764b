"""GFRO training (GFRO.md §3): identity loss on clean and noisy views + clean–noisy contrastive + optional KD.

    L = w_c·CE(head(z_c)) + w_n·CE(head(z_n)) + λ_con·L_con(z_n → positives) + λ_kd·L_kd(z_c, t_c) + backbone aux
        [+ λ_vis·BCE(predicted region visibility, visible fraction of the batch's masks)]

``z_c`` / ``z_n`` are the student embeddings of the clean image and of its noisy view, computed in ONE forward of
the concatenated batch (the trunk's BatchNorm statistics over both views; a backbone with ``accepts_stats_rows``,
such as ``GFROEmbedding``, gets ``stats_rows`` = the number of clean images, so its own BatchNorm layers normalise
with and keep running statistics of the clean images only). Positives and negatives of the contrastive term
are the teacher's ``t_c`` when a teacher exists, else the stop-grad ``z_c`` (teacher-free mode). The teacher sees
the clean images converted with ITS OWN preprocessing spec. Works with any backbone: with a plain one and
``contrastive_weight = kd_weight = 0`` it is "ArcFace on clean + partial views"; with ``GFROEmbedding`` the MoE
balance term and the per-occlusion-type gate weights come from ``forward_train``.

``terms`` hold each weighted contribution (their sum is the loss); ``stats`` hold scalars for TensorBoard: the
unweighted values (``raw/<term>``), clean–noisy cosine similarities and ``gate/<occlusion type>/<branch>`` (with a
visibility head also ``visibility/<occlusion type>/<branch>``, the mean predicted visible fraction).
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from data_processor.preprocess import PreprocessSpec, preprocess
from head.margin_base import cross_entropy_rows
from loss.contrastive import CleanNoisyContrastiveLoss
from loss.distillation import CosineDistillationLoss
from loss.visibility import region_visibility_targets, soft_bce
from training_mode import TRAINING_MODES
from training_mode.base import TrainingMode
from utils.registry import ConfigError

logger = logging.getLogger(__name__)


def occlusion_type_names() -> Dict[int, str]:
    """``{type id: name}`` of the batch's ``occlusion_type`` (``data_processor.train_dataset.OCCLUSION_TYPES``)."""
    from data_processor.train_dataset import OCCLUSION_TYPES  # lazy: the data pipeline is not needed to build

    return dict(enumerate(OCCLUSION_TYPES))


@TRAINING_MODES.register()
class GFROTraining(TrainingMode):
    """GFRO's loss around any backbone/head. Needs batches with ``image``, ``noisy`` and ``label``.

    ``noisy`` may hold V views per image (``[B, V, 3, H, W]``, ``data.occlusion.num_views``): every view is
    identity-supervised and is a contrastive anchor with its image's clean target as the positive.

    Args:
        contrastive_weight: λ_con of the clean–noisy InfoNCE term (0 disables it).
        temperature: its τ.
        queue_size: extra negatives kept from earlier batches (0 = in-batch negatives only).
        kd_weight: λ_kd of the distillation term (needs a teacher; ignored with a warning otherwise).
        kd_form: ``cosine`` (1 − cos) or ``mse`` (squared distance of normalised embeddings).
        clean_ce_weight / noisy_ce_weight: weights of the identity loss on the clean and the noisy view.
        exclude_same_identity: drop other images of the anchor's identity from the contrastive negatives.
        visibility_weight: λ_vis of the visibility term (needs ``backbone.visibility_head: true``): BCE between
            the backbone's predicted per-branch visibility and the visible fraction of each branch's region in
            ``batch["visibility"]`` (noisy views; the clean images' target is 1), ``loss/visibility.py``.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, preprocess_spec: PreprocessSpec,
                 teacher: Optional[nn.Module] = None, contrastive_weight: float = 1.0, temperature: float = 0.07,
                 kd_weight: float = 0.0, noisy_ce_weight: float = 1.0, clean_ce_weight: float = 1.0,
                 kd_form: str = "cosine", queue_size: int = 0, exclude_same_identity: bool = True,
                 visibility_weight: float = 0.0) -> None:
        super().__init__(backbone, head, preprocess_spec, teacher)
        for name, value in (("contrastive_weight", contrastive_weight), ("kd_weight", kd_weight),
                            ("noisy_ce_weight", noisy_ce_weight), ("clean_ce_weight", clean_ce_weight),
                            ("visibility_weight", visibility_weight)):
            if value < 0:
                raise ValueError(f"training_mode.{name} must be >= 0, got {value}")
        self.visibility_weight = float(visibility_weight)
        has_head = getattr(backbone, "visibility_head", None) is not None
        if self.visibility_weight > 0 and not has_head:
            raise ConfigError(f"training_mode.visibility_weight={visibility_weight} needs a backbone with a "
                              f"visibility head (backbone.type: GFROEmbedding with backbone.visibility_head: true)")
        if has_head and self.visibility_weight == 0:
            logger.warning("backbone.visibility_head is on but training_mode.visibility_weight is 0: the head is not "
                           "trained and every branch keeps the same visibility (no effect on the gate)")
        self.contrastive_weight = float(contrastive_weight)
        self.kd_weight = float(kd_weight)
        self.noisy_ce_weight = float(noisy_ce_weight)
        self.clean_ce_weight = float(clean_ce_weight)
        self.contrastive = CleanNoisyContrastiveLoss(temperature, queue_size, exclude_same_identity)
        self.distillation = CosineDistillationLoss(kd_form)
        self._type_names: Optional[Dict[int, str]] = None
        if teacher is None:
            logger.info("teacher-free mode: positives are stop-grad clean student embeddings")
            if self.kd_weight > 0:
                logger.warning("training_mode.kd_weight=%s but no teacher: the kd term is 0", self.kd_weight)
        else:
            teacher_dim, student_dim = getattr(teacher, "feat_dim", None), getattr(backbone, "feat_dim", None)
            if teacher_dim and student_dim and teacher_dim != student_dim:
                raise ValueError(f"teacher embeddings are {teacher_dim}-d but the student's are {student_dim}-d; "
                                 f"contrastive positives and kd need the same size")
            if not hasattr(teacher, "preprocess_spec"):
                raise ValueError("the teacher needs a 'preprocess_spec' (build it with training_mode.teacher)")

    def teacher_inputs(self, images: torch.Tensor) -> torch.Tensor:
        """The clean uint8 RGB batch normalised with the teacher's own spec (channel order, mean/std, size)."""
        return preprocess(images, self.teacher.preprocess_spec)

    def compute_loss(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        self.require(batch, ("image", "noisy", "label"), "the noisy view comes from data.occlusion")
        clean, labels = batch["image"], batch["label"]
        stacked, all_labels, size, views = self.clean_and_noisy(batch)
        if getattr(self.backbone, "accepts_stats_rows", False):
            out = self.backbone.forward_train(stacked, stats_rows=size)  # its BNs: clean-image statistics only
        else:
            out = self.backbone.forward_train(stacked)
        embeddings = out["embedding"]
        z_clean, z_noisy = embeddings[:size], embeddings[size:]
        head_out = self.head(embeddings, all_labels)  # one call for both views (Partial FC: one sharded softmax)
        ce_rows = cross_entropy_rows(head_out, all_labels)

        raw: Dict[str, torch.Tensor] = {"ce_clean": ce_rows[:size].mean(), "ce_noisy": ce_rows[size:].mean()}
        use_teacher = self.teacher is not None and (self.contrastive_weight > 0 or self.kd_weight > 0)
        teacher_clean = self.teacher(self.teacher_inputs(clean)) if use_teacher else None
        targets = teacher_clean if teacher_clean is not None else z_clean.detach()
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.contrastive_weight > 0):
            raw["contrastive"] = self.contrastive(z_noisy.reshape(size, views, -1), targets.detach(), labels)
        if teacher_clean is not None:
            with torch.set_grad_enabled(torch.is_grad_enabled() and self.kd_weight > 0):
                raw["kd"] = self.distillation(z_clean, teacher_clean)
        else:
            raw["kd"] = embeddings.new_zeros((), dtype=torch.float32)
        if self.visibility_weight > 0:
            if "visibility" not in batch:
                raise KeyError("GFROTraining: training_mode.visibility_weight > 0 needs batch['visibility'] (the "
                               "noisy views' masks, from data.occlusion)")
            masks = batch["visibility"].to(clean.device).reshape(size * views, *batch["visibility"].shape[-2:])
            noisy_target = region_visibility_targets(masks, self.backbone.visibility_weights)
            target = torch.cat([noisy_target.new_ones(size, noisy_target.shape[1]), noisy_target])
            raw["visibility"] = soft_bce(out["visibility"], target)

        weights = {"ce_clean": self.clean_ce_weight, "ce_noisy": self.noisy_ce_weight,
                   "contrastive": self.contrastive_weight, "kd": self.kd_weight if teacher_clean is not None else 0.0,
                   "visibility": self.visibility_weight}
        terms = {name: weights[name] * value for name, value in raw.items()}
        if "aux_loss" in head_out:
            terms["head_aux"] = head_out["aux_loss"]
        terms.update(out["aux_losses"])
        stats = self._stats(raw, z_clean, z_noisy, targets, out.get("stats", {}), batch)
        return self.loss_output(terms, stats)

    @torch.no_grad()
    def _stats(self, raw: Dict[str, torch.Tensor], z_clean: torch.Tensor, z_noisy: torch.Tensor,
               targets: torch.Tensor, backbone_stats: Mapping[str, Any], batch: Mapping[str, Any]) -> Dict[str, Any]:
        stats: Dict[str, Any] = {f"raw/{name}": value.detach() for name, value in raw.items()}
        size = z_clean.shape[0]
        noisy = F.normalize(z_noisy.float(), dim=1).reshape(size, -1, z_noisy.shape[1])  # [B, V, D]
        stats["cos/clean_noisy"] = (F.normalize(z_clean.float(), dim=1).unsqueeze(1) * noisy).sum(-1).mean()
        stats["cos/noisy_target"] = (F.normalize(targets.float(), dim=1).unsqueeze(1) * noisy).sum(-1).mean()
        gates = backbone_stats.get("integrate_weights")
        branch_names = getattr(self.backbone, "branch_names", None)
        if torch.is_tensor(gates) and branch_names is not None:
            noisy_types = batch.get("occlusion_type")
            if noisy_types is None:
                raise KeyError("GFROTraining: a GFRO backbone needs batch['occlusion_type'] to log gate weights")
            types = torch.cat([torch.zeros(size, dtype=torch.long, device=gates.device),
                               noisy_types.to(gates.device).long().reshape(-1)])
            stats.update(self.gate_stats(gates, types, branch_names))
            visibility = backbone_stats.get("visibility")
            if torch.is_tensor(visibility):
                stats.update(self.gate_stats(visibility, types, branch_names, prefix="visibility"))
        return stats

    def gate_stats(self, gates: torch.Tensor, types: torch.Tensor, branch_names: Sequence[str],
                   prefix: str = "gate") -> Dict[str, torch.Tensor]:
        """Mean integrate-gate weight (or other per-branch value) per occlusion type present in the batch and
        branch: ``<prefix>/<type>/<branch>``."""
        if self._type_names is None:
            self._type_names = occlusion_type_names()
        counts = torch.bincount(types, minlength=1)
        sums = torch.zeros(counts.numel(), gates.shape[1], device=gates.device).index_add_(0, types, gates.float())
        means = sums / counts.clamp(min=1).unsqueeze(1).to(sums.dtype)
        stats: Dict[str, torch.Tensor] = {}
        for type_id in torch.nonzero(counts).flatten().tolist():  # one host sync per step
            type_name = self._type_names.get(type_id, f"type{type_id}")
            for branch, name in enumerate(branch_names):
                stats[f"{prefix}/{type_name}/{name}"] = means[type_id, branch]
        return stats
