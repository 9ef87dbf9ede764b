"""GFRO's clean–noisy contrastive loss (InfoNCE with same-identity exclusion), GFRO.md §3.

For sample i: anchor ``a_i`` = the normalised embedding of its noisy (partial / occluded) view; positive
``k_i`` = the clean target of the same image (the teacher's ``t_c`` or the student's stop-grad ``z_c``);
negatives = the clean targets of the other samples in the batch plus, optionally, a FIFO queue of targets from
earlier batches. Targets whose label equals ``label_i`` (other images of the same identity) are removed from the
denominator, so the loss never pushes a view away from its own identity:

    L_i = −log( exp(a_i·k_i/τ) / (exp(a_i·k_i/τ) + Σ_{j ∈ neg(i)} exp(a_i·k_j/τ)) )

Under torchrun (an initialised process group) the targets and labels of every rank are all-gathered (they are
detached, so a plain all-gather loses no gradient): each rank's anchors meet the W·B targets of the global batch,
its positives sit at ``rank·B + i``, same-identity exclusion runs over the gathered labels and the queue receives the
gathered targets in rank order, so it is identical on every rank. The mean of the ranks' losses (what DDP's gradient
average optimises) then equals the single-process loss on the joined batch of W·B images, whatever the GPU count.

Unlike the release's SupCon call (one view, no labels → identically zero), this has a real gradient wrt the
anchors only: the targets are detached here (the teacher is frozen; the student target is stop-grad), so no
gradient reaches them even when the caller passes a tensor that requires grad.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from loss import LOSSES
from utils.distributed import all_gather_rows, process_group

NO_LABEL = -1


def gather_keys(keys: torch.Tensor, labels: torch.Tensor) -> tuple:
    """(keys, labels, offset): the detached ``keys`` [B,D] and ``labels`` [B] of every rank concatenated in rank
    order, and this rank's offset in them (``rank · B``); unchanged with offset 0 outside a process group."""
    return all_gather_rows(keys), all_gather_rows(labels), process_group()[0] * keys.shape[0]


@LOSSES.register()
class CleanNoisyContrastiveLoss(nn.Module):
    """``forward(anchors [B,D] or [B,V,D], targets [B,D], labels [B] or None) -> scalar``; computed in float32.

    With V noisy views per image (``[B, V, D]`` anchors) every view is an anchor whose positive is its image's
    target; the loss is the mean over all B·V anchors.

    ``queue_size`` > 0 keeps that many past targets (and labels) as extra negatives; the queue is filled in
    training mode only (with the gathered targets under torchrun, so every rank holds the same queue) and is not
    saved in checkpoints (a MoCo-style cache).
    """

    def __init__(self, temperature: float = 0.07, queue_size: int = 0, exclude_same_identity: bool = True) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"contrastive temperature must be > 0, got {temperature}")
        if queue_size < 0:
            raise ValueError(f"contrastive queue_size must be >= 0, got {queue_size}")
        self.temperature = float(temperature)
        self.queue_size = int(queue_size)
        self.exclude_same_identity = bool(exclude_same_identity)
        self.register_buffer("queue", torch.zeros(0, 0), persistent=False)
        self.register_buffer("queue_labels", torch.zeros(0, dtype=torch.long), persistent=False)
        self.queue_filled = 0
        self.queue_position = 0

    def forward(self, anchors: torch.Tensor, targets: torch.Tensor,
                labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        if targets.dim() != 2 or anchors.dim() not in (2, 3) or anchors.shape[0] != targets.shape[0] \
                or anchors.shape[-1] != targets.shape[-1]:
            raise ValueError(f"anchors must be [B, D] or [B, V, D] and targets [B, D]; got {tuple(anchors.shape)} "
                             f"and {tuple(targets.shape)}")
        batch = targets.shape[0]
        if labels is not None and labels.shape != (batch,):
            raise ValueError(f"labels must be [B] = [{batch}], got {tuple(labels.shape)}")
        views = 1 if anchors.dim() == 2 else anchors.shape[1]
        with torch.autocast(anchors.device.type, enabled=False):
            anchor = F.normalize(anchors.float().reshape(batch * views, -1), dim=1)
            keys = F.normalize(targets.detach().float(), dim=1)  # stop-grad positives/negatives, always
            key_labels = labels if labels is not None else torch.full((batch,), NO_LABEL, device=anchors.device)
            keys, key_labels, offset = gather_keys(keys, key_labels.long())
            fresh_keys, fresh_labels = keys, key_labels
            if self.queue_filled:
                keys = torch.cat([keys, self.queue[:self.queue_filled].to(keys.dtype)])
                key_labels = torch.cat([key_labels, self.queue_labels[:self.queue_filled]])
            logits = anchor @ keys.t() / self.temperature  # [B·V, B + Q]; column i is image i's positive
            positive = offset + torch.arange(batch, device=anchors.device).repeat_interleave(views)
            if labels is not None and self.exclude_same_identity:
                same_identity = key_labels[positive].view(-1, 1) == key_labels.view(1, -1)
                same_identity[torch.arange(positive.numel(), device=anchors.device), positive] = False  # keep it
                logits = logits.masked_fill(same_identity, float("-inf"))
            loss = F.cross_entropy(logits, positive)
        if self.training and self.queue_size:
            self._enqueue(fresh_keys, fresh_labels.detach())
        return loss

    @torch.no_grad()
    def _enqueue(self, keys: torch.Tensor, labels: torch.Tensor) -> None:
        if self.queue.shape != (self.queue_size, keys.shape[1]) or self.queue.device != keys.device:
            self.queue = torch.zeros(self.queue_size, keys.shape[1], device=keys.device)
            self.queue_labels = torch.full((self.queue_size,), NO_LABEL, dtype=torch.long, device=keys.device)
            self.queue_filled = self.queue_position = 0
        keys, labels = keys[-self.queue_size:], labels[-self.queue_size:]
        slots = (self.queue_position + torch.arange(keys.shape[0], device=keys.device)) % self.queue_size
        self.queue[slots] = keys
        self.queue_labels[slots] = labels.long()
        self.queue_position = (self.queue_position + keys.shape[0]) % self.queue_size
        self.queue_filled = min(self.queue_size, self.queue_filled + keys.shape[0])

    def reset_queue(self) -> None:
        self.queue_filled = self.queue_position = 0
