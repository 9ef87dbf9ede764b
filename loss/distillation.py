"""Embedding distillation from a frozen teacher: ``1 − cos`` or squared distance of normalised embeddings."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from loss import LOSSES

DISTILLATION_FORMS = ("cosine", "mse")


@LOSSES.register()
class CosineDistillationLoss(nn.Module):
    """Batch mean of ``1 − cos(s, t)`` (``form="cosine"``) or of ``‖ŝ − t̂‖²`` (``form="mse"``).

    ``mse`` sums over the embedding dimensions (``‖ŝ − t̂‖² = 2·(1 − cos)``), so a weight means the same for any
    embedding size; the GFRO release's element-wise mean is this divided by the dimension (hence its weight 100).
    The teacher side is used as given (pass it detached). Computed in float32.
    """

    def __init__(self, form: str = "cosine") -> None:
        super().__init__()
        if form not in DISTILLATION_FORMS:
            raise ValueError(f"distillation form must be one of {DISTILLATION_FORMS}, got {form!r}")
        self.form = form

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        if student.shape != teacher.shape:
            raise ValueError(f"student embeddings {tuple(student.shape)} and teacher embeddings "
                             f"{tuple(teacher.shape)} must have the same shape")
        with torch.autocast(student.device.type, enabled=False):
            s = F.normalize(student.float(), dim=1)
            t = F.normalize(teacher.float(), dim=1)
            if self.form == "cosine":
                return (1.0 - (s * t).sum(dim=1)).mean()
            return (s - t).pow(2).sum(dim=1).mean()
