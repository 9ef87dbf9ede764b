"""OAML training (methods.md §6.2) around ``backbone.type: OAMLNet``:

    L = λ_ada · AdaFace-CE + λ_qa · (L_pair + 0.5 · L_triplet) + λ_occ · MSE(o, m)        (0.1 / 0.9 / 0.1)

One forward of the stacked batch [clean images; their noisy views] (``data.occlusion``): the AdaFace head is
trained on all global embeddings; QAConv scores the stacked batch against itself (``QAConvMatcher.all_pairs``,
occlusion-weighted with the predicted visibility maps, detached as in the public code) and ``loss/qaconv.py``
turns the scores into L_pair and L_triplet; the occlusion head predicts a visibility map o at the map's resolution,
trained by MSE against the data's visibility mask area-pooled to the map (clean images: all ones).

Positives *(ours)*: every noisy view is a guaranteed positive of its clean image (and other images of the same
identity in the batch are positives too), instead of the public code's PK sampler (K = 4 images per identity), so
the Trainer's sampler is unchanged. The positives the pair loss sees are therefore mostly "same image, occluded",
where the public code's are other images of the identity (with the medical-mask augmentation on half of them).

Gradient paths: ``qaconv_to_backbone: false`` (default) reproduces the public code, which detaches the QAConv
feature maps so the trunk learns from AdaFace alone (QAConv trains its own BN/FC); ``true`` lets the QAConv losses
train the trunk, as the README and tech report describe ("QAConv losses → Backbone + QAConv"). The default was chosen
on the val split (configs/methods/oaml.yaml): detached gave better clean and held-out-proxy (user art) accuracy,
attached better partial-view and block accuracy. ``occlusion_to_backbone: false`` (default, as the
public code) detaches the map for the occlusion loss, so L_occ trains the occlusion head only. The public code
computes L_occ on a separate batch (32 niqab images + 6 clean faces); here it is the stacked batch's noisy views
(the data's occluders, ``data.occlusion``) and clean images (all-ones masks), about 50/50.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from backbone.oaml import OAMLNet
from data_processor.preprocess import PreprocessSpec
from loss.qaconv import QAConvPairLoss
from loss.visibility import cell_visibility
from training_mode import TRAINING_MODES
from training_mode.base import TrainingMode
from utils.registry import ConfigError


@TRAINING_MODES.register()
class OAMLTraining(TrainingMode):
    """OAML's loss (module docstring). Needs batches with ``image``, ``noisy``, ``visibility`` and ``label``.

    Args:
        adaface_weight: λ_ada (0.1 = 1 − λ_qa in the public code).
        qaconv_weight: λ_qa of L_pair + triplet_weight · L_triplet.
        triplet_weight: weight of L_triplet inside L_QAConv (0.5).
        triplet_margin: margin of the hardest-positive / hardest-negative ranking loss (1.0).
        occlusion_weight: λ_occ of the visibility-map MSE (0.1, ``--occlusion_loss_weight``).
        qaconv_to_backbone: let the QAConv losses reach the trunk (report) or not (public code, default).
        occlusion_to_backbone: let the occlusion loss reach the trunk (public code: no).
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, preprocess_spec: PreprocessSpec,
                 teacher: Optional[nn.Module] = None, adaface_weight: float = 0.1, qaconv_weight: float = 0.9,
                 triplet_weight: float = 0.5, triplet_margin: float = 1.0, occlusion_weight: float = 0.1,
                 qaconv_to_backbone: bool = False, occlusion_to_backbone: bool = False) -> None:
        super().__init__(backbone, head, preprocess_spec, teacher)
        if not isinstance(backbone, OAMLNet):
            raise ConfigError(f"training_mode.type OAMLTraining needs backbone.type: OAMLNet (trunk + occlusion head "
                              f"+ QAConv matcher), got {type(backbone).__name__}")
        for name, value in (("adaface_weight", adaface_weight), ("qaconv_weight", qaconv_weight),
                            ("triplet_weight", triplet_weight), ("triplet_margin", triplet_margin),
                            ("occlusion_weight", occlusion_weight)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"training_mode.{name} must be a number >= 0, got {value!r}")
        self.weights = {"adaface": float(adaface_weight), "qaconv": float(qaconv_weight),
                        "occlusion": float(occlusion_weight)}
        self.qaconv_loss = QAConvPairLoss(float(triplet_weight), float(triplet_margin))
        self.qaconv_to_backbone = bool(qaconv_to_backbone)
        self.occlusion_to_backbone = bool(occlusion_to_backbone)

    def compute_loss(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        self.require(batch, ("image", "noisy", "visibility", "label"))
        stacked, all_labels, size, views = self.clean_and_noisy(batch)
        out = self.backbone.forward_train(stacked)
        embeddings, feature_map = out["embedding"], out["feature_map"]

        raw: Dict[str, torch.Tensor] = {}
        raw["adaface"] = F.cross_entropy(self.head(embeddings, all_labels)["logits"].float(), all_labels)

        occlusion_input = feature_map if self.occlusion_to_backbone else feature_map.detach()
        visibility = self.backbone.occlusion_head(occlusion_input).float()  # [2B, 1, h, w]
        masks = batch["visibility"].to(feature_map.device).reshape(size * views, *batch["visibility"].shape[-2:])
        noisy_target = cell_visibility(masks, visibility.shape[-2:]).clamp(0.0, 1.0)
        target = torch.cat([noisy_target.new_ones(size, *noisy_target.shape[1:]), noisy_target])
        raw["occlusion"] = F.mse_loss(visibility[:, 0], target)

        local_map = feature_map if self.qaconv_to_backbone else feature_map.detach()
        local = F.normalize(local_map.float(), dim=1).flatten(2)  # [2B, C, hw]
        weights = visibility.detach().flatten(1)  # [2B, hw]
        scores = self.backbone.pair_scorer.matcher.all_pairs(local, local, weights, weights)
        qaconv = self.qaconv_loss(scores, all_labels)
        raw["qaconv"] = qaconv["total"]

        terms = {name: self.weights[name] * value for name, value in raw.items()}
        terms.update(out["aux_losses"])
        stats = {f"raw/{name}": value.detach() for name, value in raw.items()}
        stats.update({"raw/pair": qaconv["pair"].detach(), "raw/triplet": qaconv["triplet"].detach(),
                      "qaconv/hardest_accuracy": qaconv["accuracy"],
                      "occlusion/mae": (visibility[:, 0].detach() - target).abs().mean()})
        return self.loss_output(terms, stats)

    def embedding_model(self) -> nn.Module:
        """The descriptor twin of the backbone (packed descriptors + ``pair_scorer``), evaluated and exported."""
        return self.backbone.descriptor_model()
