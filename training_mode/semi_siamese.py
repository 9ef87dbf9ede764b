"""Semi-siamese training (SST, Du et al. ECCV 2020; FaceX-Zoo ``training_mode/semi-siamese_training``)."""
from __future__ import annotations

import copy
from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from data_processor.preprocess import PreprocessSpec
from training_mode import TRAINING_MODES
from training_mode.base import TrainingMode
from utils.registry import ConfigError


def is_batchnorm(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm)


@torch.no_grad()
def momentum_update(gallery: nn.Module, probe: nn.Module, momentum: float) -> None:
    """gallery ← momentum · gallery + (1 − momentum) · probe, for every parameter (buffers untouched)."""
    for gallery_param, probe_param in zip(gallery.parameters(), probe.parameters()):
        gallery_param.mul_(momentum).add_(probe_param.detach().to(gallery_param.dtype), alpha=1.0 - momentum)


def shuffled_forward(network: nn.Module, images: torch.Tensor, bn_groups: int = 1) -> torch.Tensor:
    """``network`` on ``images`` in a random order (split into ``bn_groups`` chunks, each with its own BatchNorm
    statistics, as on ``bn_groups`` devices), returned in the original order."""
    order = torch.randperm(images.shape[0], device=images.device)
    shuffled = images[order]
    outputs = torch.cat([network(chunk) for chunk in shuffled.chunk(bn_groups)]) if bn_groups > 1 \
        else network(shuffled)
    return outputs[torch.argsort(order)]


@TRAINING_MODES.register()
class SemiSiameseTraining(TrainingMode):
    """SST: probe network (``backbone``, trained) and gallery network (``gallery``, its momentum average) on the two
    views of each identity, scored by the ``SSTPrototype`` head's queue; loss ``(CE1 + CE2) / 2``.

    Per step: probe features p1, p2 of views 1 and 2 (two forwards, train mode); gallery features g1, g2 without
    gradient, the gallery in eval mode except its BatchNorm layers (train mode, batch statistics), each view's batch
    shuffled before and unshuffled after the gallery forward (MoCo shuffle-BN); logits1 = p1 vs the queue holding
    g2, logits2 = p2 vs g1 (see head/sst_prototype.py). After each optimiser step the Trainer calls
    ``after_optimizer_step``: gallery ← ``momentum`` · gallery + (1 − momentum) · probe (parameters only, as the
    public code; the gallery's BatchNorm running statistics are its own). The gallery's parameters never require
    gradients, so the optimiser neither updates nor decays them. ``embedding_model()`` is the probe network.

    Departures from the public code:

    - the gallery starts as a copy of the probe taken at the first step (``gallery_initialised`` buffer), so
      ``runtime.init_weights`` loaded after construction reaches both; parameters and buffers are copied (the
      public code copies parameters only, into a fresh network);
    - shuffle-BN on one process: with ``bn_groups`` 1 (default) the whole shuffled batch shares one set of BatchNorm
      statistics, so the shuffle changes nothing; ``bn_groups`` k splits the shuffled batch in k chunks, as
      DataParallel over k GPUs does in the public code (the paper's 4 GPUs: ``bn_groups: 4``);
    - backbone auxiliary losses (composite backbones) of both probe forwards are averaged and added.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, preprocess_spec: PreprocessSpec,
                 teacher: Optional[nn.Module] = None, momentum: float = 0.999, bn_groups: int = 1,
                 second_view_key: str = "image2") -> None:
        super().__init__(backbone, head, preprocess_spec, teacher)
        if not hasattr(head, "pair_logits"):
            raise ConfigError(f"training_mode SemiSiameseTraining needs head.type SSTPrototype (a head with "
                              f"pair_logits), got {type(head).__name__}")
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0.0 <= momentum <= 1.0:
            raise ConfigError(f"training_mode.momentum: expected a number in [0, 1], got {momentum!r}")
        if isinstance(bn_groups, bool) or not isinstance(bn_groups, int) or bn_groups < 1:
            raise ConfigError(f"training_mode.bn_groups: expected an integer >= 1, got {bn_groups!r}")
        self.momentum = float(momentum)
        self.bn_groups = bn_groups
        self.second_view_key = second_view_key
        self.gallery = copy.deepcopy(backbone)
        self.gallery.requires_grad_(False)
        self.register_buffer("gallery_initialised", torch.zeros((), dtype=torch.bool))

    def train(self, mode: bool = True) -> "SemiSiameseTraining":
        """Train mode everywhere except the gallery: eval mode, its BatchNorm layers in ``mode``."""
        super().train(mode)
        self.gallery.eval()
        for module in self.gallery.modules():
            if is_batchnorm(module):
                module.train(mode)
        return self

    @torch.no_grad()
    def initialise_gallery(self) -> None:
        """Gallery := probe (parameters and buffers)."""
        self.gallery.load_state_dict(self.backbone.state_dict())
        self.gallery_initialised.fill_(True)

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        """Called by the Trainer after every optimiser step: the gallery's momentum update."""
        momentum_update(self.gallery, self.backbone, self.momentum)

    @torch.no_grad()
    def gallery_features(self, images: torch.Tensor) -> torch.Tensor:
        return shuffled_forward(self.gallery, images, self.bn_groups)

    def compute_loss(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        if self.second_view_key not in batch:
            raise KeyError(f"SemiSiameseTraining: batch has no second view '{self.second_view_key}' (keys: "
                           f"{sorted(batch)}); use data.train.type SemiSiamesePairs")
        if not bool(self.gallery_initialised):
            self.initialise_gallery()
        if self.training:
            self.train(True)  # the gallery's eval / BatchNorm-train split, whatever called .train() last
        view1, view2 = self.inputs(batch["image"]), self.inputs(batch[self.second_view_key])
        labels = batch["label"]
        probe1, probe2 = self.backbone.forward_train(view1), self.backbone.forward_train(view2)
        gallery1, gallery2 = self.gallery_features(view1), self.gallery_features(view2)
        out = self.head.pair_logits(probe1["embedding"], gallery1, probe2["embedding"], gallery2, labels)
        ce1 = F.cross_entropy(out["logits1"].float(), out["targets"])
        ce2 = F.cross_entropy(out["logits2"].float(), out["targets"])
        terms: Dict[str, torch.Tensor] = {"sst_ce": (ce1 + ce2) / 2}
        for name in probe1["aux_losses"]:
            terms[name] = (probe1["aux_losses"][name] + probe2["aux_losses"][name]) / 2
        with torch.no_grad():
            positive = F.cosine_similarity(probe1["embedding"].float(), gallery2.float(), dim=1).mean()
        stats = {**probe1["stats"], "probe_gallery_cosine": positive}
        return self.loss_output(terms, stats)
