"""Semi-siamese training's prototype head: a queue of gallery features used as the classes of a softmax.

Reference: FaceX-Zoo ``head/SST_Prototype.py`` and ``training_mode/semi-siamese_training/train.py`` (Du et al.,
"Semi-Siamese Training for Shallow Face Learning", ECCV 2020). Defaults: queue 16384, AM-Softmax margin 0.35 on the
positive, scale 32.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from head import HEADS
from head.margin_base import check_labels

MASKED_LOGIT = -1.0e4  # logit of a queue entry of the sample's own identity (excluded from the softmax)


@HEADS.register()
class SSTPrototype(nn.Module):
    """Dynamic prototype bank of ``queue_size`` L2-normalised gallery features (buffers, so checkpointed).

    For a batch of B pairs with probe features p1, p2 (trained network, views 1 and 2) and gallery features g1, g2
    (momentum network), the B queue slots starting at ``pointer`` are the batch's classes:

    - ``logits1 = s · p1 · [queue with g2 written at slots pointer … pointer+B−1]ᵀ`` and symmetrically ``logits2``
      with g1; sample i's target is its own slot ``pointer + i``, whose cosine gets the AM margin (cos − m);
    - the loss is ``(CE(logits1) + CE(logits2)) / 2`` (the training mode computes it);
    - afterwards (training only) g1 or g2, chosen at random, is written to those slots with the batch's labels and
      ``pointer`` advances by B.

    Departures from the public code:

    - the public dataset drops, for the next epoch, the identities whose features are still in the queue (so that
      no stale feature of a sample's own identity acts as a negative). Here every epoch keeps all identities (the
      Trainer's sampler has a fixed length) and, with ``mask_same_identity`` (default), the queue entries holding
      the sample's own label (other than its target slot) are left out of its softmax instead; the queue stores
      labels for that (label −1 = never written);
    - slots wrap modulo ``queue_size`` (the public code needs ``queue_size`` to be a multiple of the batch size);
      a batch larger than the queue is an error;
    - the cosine is computed in fp32 (fp64 for fp64 inputs) under autocast, like the toolbox's margin heads;
    - the queue is per process: under DDP each rank keeps its own (no all-gather of gallery features).

    ``forward(embeddings, labels)`` (the common head interface) scores embeddings against the queue with their own
    detached embeddings as the gallery features (no queue update): ``{"logits": [B, queue_size], "targets": [B]}``;
    without labels it returns plain ``scale · cos`` against the queue. The training mode calls ``pair_logits``.
    """

    def __init__(self, feat_dim: int, num_class: int, queue_size: int = 16384, margin: float = 0.35,
                 scale: float = 32.0, mask_same_identity: bool = True) -> None:
        super().__init__()
        if feat_dim <= 0 or num_class <= 0:
            raise ValueError(f"SSTPrototype: feat_dim and num_class must be positive, got feat_dim={feat_dim}, "
                             f"num_class={num_class}")
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size <= 0:
            raise ValueError(f"SSTPrototype: queue_size must be a positive integer, got {queue_size!r}")
        if scale <= 0:
            raise ValueError(f"SSTPrototype: scale must be positive, got {scale}")
        self.feat_dim = int(feat_dim)
        self.num_class = int(num_class)  # labels are checked against it; the softmax runs over the queue
        self.queue_size = queue_size
        self.margin = float(margin)
        self.scale = float(scale)
        self.mask_same_identity = bool(mask_same_identity)
        # like the public code: random directions, uniform(-1, 1) then normalised
        self.register_buffer("queue", F.normalize(torch.empty(queue_size, feat_dim).uniform_(-1.0, 1.0), dim=1))
        self.register_buffer("queue_labels", torch.full((queue_size,), -1, dtype=torch.long))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    def extra_repr(self) -> str:
        return (f"feat_dim={self.feat_dim}, queue_size={self.queue_size}, margin={self.margin}, scale={self.scale}, "
                f"mask_same_identity={self.mask_same_identity}")

    def slots(self, batch_size: int) -> torch.Tensor:
        """Queue slots of the current batch: ``(pointer + arange(B)) % queue_size``."""
        if batch_size > self.queue_size:
            raise ValueError(f"SSTPrototype: batch of {batch_size} pairs is larger than queue_size "
                             f"{self.queue_size}; raise head.queue_size")
        return (self.pointer + torch.arange(batch_size, device=self.queue.device)) % self.queue_size

    def _check(self, features: torch.Tensor, labels: torch.Tensor, name: str) -> None:
        if features.dim() != 2 or features.shape[1] != self.feat_dim or features.shape[0] != labels.shape[0]:
            raise ValueError(f"SSTPrototype: {name} must have shape [{labels.shape[0]}, {self.feat_dim}], "
                             f"got {list(features.shape)}")

    def prototype_logits(self, probe: torch.Tensor, gallery: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``s ·`` cosine of ``probe`` [B, D] with the queue where the batch's slots hold ``gallery`` [B, D] (no
        gradient through it), AM margin on each sample's own slot, own-identity entries masked: [B, queue_size]."""
        dtype = torch.float64 if probe.dtype == torch.float64 else torch.float32
        slots = self.slots(probe.shape[0])
        with torch.autocast(device_type=probe.device.type, enabled=False):
            bank = self.queue.to(dtype).index_copy(0, slots, F.normalize(gallery.detach().to(dtype), dim=1))
            cosine = (F.normalize(probe.to(dtype), dim=1) @ bank.T).clamp(-1.0, 1.0)
            positive = torch.zeros_like(cosine, dtype=torch.bool).scatter_(1, slots[:, None], True)
            logits = self.scale * torch.where(positive, cosine - self.margin, cosine)
            if self.mask_same_identity:
                bank_labels = self.queue_labels.index_copy(0, slots, labels.long())
                same = (bank_labels[None, :] == labels.long()[:, None]) & ~positive
                logits = logits.masked_fill(same, MASKED_LOGIT)
        return logits

    @torch.no_grad()
    def update_queue(self, gallery: torch.Tensor, labels: torch.Tensor) -> None:
        """Write normalised ``gallery`` features and ``labels`` at the batch's slots; advance the pointer."""
        slots = self.slots(gallery.shape[0])
        self.queue.index_copy_(0, slots, F.normalize(gallery.detach().to(self.queue.dtype), dim=1))
        self.queue_labels.index_copy_(0, slots, labels.long())
        self.pointer.copy_((self.pointer + gallery.shape[0]) % self.queue_size)

    def pair_logits(self, probe1: torch.Tensor, gallery1: torch.Tensor, probe2: torch.Tensor,
                    gallery2: torch.Tensor, labels: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``{"logits1", "logits2", "targets"}`` for one batch of pairs; in training mode the queue is then updated
        with gallery1 or gallery2 (one coin flip from torch's global RNG, so seeded runs repeat)."""
        check_labels(labels, probe1.shape[0], self.num_class)
        for name, features in (("probe1", probe1), ("gallery1", gallery1), ("probe2", probe2),
                               ("gallery2", gallery2)):
            self._check(features, labels, name)
        targets = self.slots(probe1.shape[0])
        out = {"logits1": self.prototype_logits(probe1, gallery2, labels),
               "logits2": self.prototype_logits(probe2, gallery1, labels), "targets": targets}
        if self.training:
            use_first = bool(torch.rand(()) < 0.5)
            self.update_queue(gallery1 if use_first else gallery2, labels)
        return out

    def forward(self, embeddings: torch.Tensor, labels: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        if embeddings.dim() != 2 or embeddings.shape[1] != self.feat_dim:
            raise ValueError(f"SSTPrototype: embeddings must have shape [B, {self.feat_dim}], "
                             f"got {list(embeddings.shape)}")
        if labels is None:
            dtype = torch.float64 if embeddings.dtype == torch.float64 else torch.float32
            with torch.autocast(device_type=embeddings.device.type, enabled=False):
                cosine = F.normalize(embeddings.to(dtype), dim=1) @ self.queue.to(dtype).T
            return {"logits": self.scale * cosine.clamp(-1.0, 1.0)}
        check_labels(labels, embeddings.shape[0], self.num_class)
        return {"logits": self.prototype_logits(embeddings, embeddings, labels),
                "targets": self.slots(embeddings.shape[0])}
