"""The contract between the Trainer and a training mode."""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch import nn

from data_processor.preprocess import PreprocessSpec, preprocess


class TrainingMode(nn.Module):
    """Holds the trainable modules and defines ``compute_loss``; the Trainer owns everything else.

    ``forward(batch)`` returns ``{"loss": scalar tensor, "terms": {name: detached scalar}, "stats": {...}}``.
    Batches are the dataset dicts with uint8 RGB images; ``self.inputs`` normalises them with the model's
    preprocessing spec (the one function used everywhere).
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, preprocess_spec: PreprocessSpec,
                 teacher: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.preprocess_spec = preprocess_spec
        self.teacher = teacher
        self.channels_last = False  # set by the Trainer (runtime.channels_last)

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        x = preprocess(images, self.preprocess_spec)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def compute_loss(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        raise NotImplementedError

    def forward(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        return self.compute_loss(batch)

    def embedding_model(self) -> nn.Module:
        """The network that is evaluated and exported (normalised input → embedding)."""
        return self.backbone
