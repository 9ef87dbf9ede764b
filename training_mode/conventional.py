"""Conventional training: backbone → margin head → cross-entropy (+ the head's / backbone's auxiliary terms)."""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch import nn

from data_processor.preprocess import PreprocessSpec
from head.margin_base import cross_entropy_rows
from training_mode import TRAINING_MODES
from training_mode.base import TrainingMode


@TRAINING_MODES.register()
class ConventionalTraining(TrainingMode):
    """``input_key`` picks the view to train on: ``image`` (clean) or ``noisy`` (occlusion-augmented)."""

    def __init__(self, backbone: nn.Module, head: nn.Module, preprocess_spec: PreprocessSpec,
                 teacher: Optional[nn.Module] = None, input_key: str = "image") -> None:
        super().__init__(backbone, head, preprocess_spec, teacher)
        self.input_key = input_key

    def compute_loss(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        if self.input_key not in batch:
            raise KeyError(f"training_mode.input_key '{self.input_key}' not in the batch (keys: {sorted(batch)}); "
                           f"'noisy' needs data.occlusion")
        out = self.backbone.forward_train(self.inputs(batch[self.input_key]))
        head_out = self.head(out["embedding"], batch["label"])
        terms: Dict[str, torch.Tensor] = {"ce": cross_entropy_rows(head_out, batch["label"]).mean()}
        if "aux_loss" in head_out:
            terms["head_aux"] = head_out["aux_loss"]
        terms.update(out["aux_losses"])
        return self.loss_output(terms, out["stats"])
