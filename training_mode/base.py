"""The contract between the Trainer and a training mode."""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

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

    def require(self, batch: Dict[str, Any], keys: Sequence[str],
                hint: str = "the noisy view and its visibility mask come from data.occlusion") -> None:
        """A KeyError naming this mode, the first missing key, the batch's keys and where the key comes from."""
        for key in keys:
            if key not in batch:
                raise KeyError(f"{type(self).__name__} needs batch['{key}'] (keys: {sorted(batch)}); {hint}")

    def clean_and_noisy(self, batch: Dict[str, Any]) -> Tuple[torch.Tensor, torch.Tensor, int, int]:
        """(normalised [clean images; every noisy view] stacked in one batch, their labels, batch size B, views per
        image V): the noisy rows follow image by image (``data.occlusion.num_views`` > 1 adds a view dimension)."""
        clean, noisy, labels = batch["image"], batch["noisy"], batch["label"]
        views = 1 if noisy.dim() == 4 else noisy.shape[1]
        stacked = torch.cat([self.inputs(clean), self.inputs(noisy.flatten(0, -4))])
        return stacked, torch.cat([labels, labels.repeat_interleave(views)]), clean.shape[0], views

    def compute_loss(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        raise NotImplementedError

    @staticmethod
    def loss_output(terms: Dict[str, torch.Tensor], stats: Dict[str, Any]) -> Dict[str, Any]:
        """``compute_loss``'s return value: the loss = the sum of ``terms`` (weights applied by the mode), the terms
        detached for logging, ``stats``. The detaching runs outside a compiled graph (``runtime.compile``): inductor
        folds a detached output into its differentiable alias and the loss would lose its gradient (pytorch#195357:
        a single-term loss is exactly that alias)."""
        return {"loss": sum(terms.values()), "terms": detached(terms), "stats": stats}

    def forward(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        return self.compute_loss(batch)

    def embedding_model(self) -> nn.Module:
        """The network that is evaluated and exported (normalised input → embedding)."""
        return self.backbone


@torch.compiler.disable
def detached(terms: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """``terms`` detached, always in eager mode (see ``TrainingMode.loss_output``)."""
    return {name: value.detach() for name, value in terms.items()}
