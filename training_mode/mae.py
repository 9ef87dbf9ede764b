"""MAE pre-training of the FaceT encoder (methods.md §4.2 "MAE pre-training"; He et al. 2022).

    patch tokens (+ learned positions) → keep a random 25 % per image → encoder blocks (no prompts) →
    Linear(D → decoder dim) → + learned mask token at the hidden places, un-shuffled → + fixed 2D sin-cos positions →
    light prenorm decoder → LN → Linear(→ p·p·3) → MSE against the raw normalised pixels of the MASKED patches.

The run's checkpoint (or export) starts FaceT fine-tuning through ``runtime.init_weights: {weights: <run>/
checkpoints/last.pt, module: backbone}``: ``FaceT.load_pretrained`` takes the encoder keys (patch_embed, pos_embed,
blocks, norm), the prompts / pool / classifier / readout start fresh unless the source has them with the same shape.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from backbone.vit import Block, patchify, sincos_2d_positions
from data_processor.preprocess import PreprocessSpec
from training_mode import TRAINING_MODES
from training_mode.base import TrainingMode
from utils.registry import ConfigError

logger = logging.getLogger(__name__)


class MAEDecoder(nn.Module):
    """The light decoder: embed → mask tokens + un-shuffle → fixed sin-cos positions → prenorm blocks → LN → pixels."""

    def __init__(self, encoder_dim: int, dim: int, depth: int, heads: int, mlp_ratio: float, grid: Tuple[int, int],
                 patch_values: int) -> None:
        super().__init__()
        self.embed = nn.Linear(encoder_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("positions", sincos_2d_positions(dim, grid), persistent=False)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, "prenorm") for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.pred = nn.Linear(dim, patch_values)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, encoded: torch.Tensor, restore: torch.Tensor) -> torch.Tensor:
        """``encoded`` [B, kept, D_enc] of the kept tokens (shuffled order); ``restore`` [B, N] puts them back."""
        tokens = self.embed(encoded)
        batch, kept, dim = tokens.shape
        hidden = self.mask_token.expand(batch, restore.shape[1] - kept, dim)
        tokens = torch.gather(torch.cat([tokens, hidden], dim=1), 1, restore.unsqueeze(-1).expand(-1, -1, dim))
        tokens = tokens + self.positions
        for block in self.blocks:
            tokens = block(tokens)
        return self.pred(self.norm(tokens))


def random_masking(batch: int, count: int, mask_ratio: float,
                   device: torch.device) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(kept indices [B, k], restore indices [B, N], mask [B, N] with 1 = hidden)``, k = int(N·(1 − ratio))."""
    kept = int(count * (1.0 - mask_ratio))
    shuffle = torch.argsort(torch.rand(batch, count, device=device), dim=1)
    restore = torch.argsort(shuffle, dim=1)
    mask = torch.ones(batch, count, device=device)
    mask[:, :kept] = 0.0
    return shuffle[:, :kept], restore, torch.gather(mask, 1, restore)


@TRAINING_MODES.register()
class MAEPretraining(TrainingMode):
    """Masked-autoencoder pre-training of a FaceT encoder on the clean images (``input_key``).

    Paper decoder (public ``MAE`` class): dim 516, depth 8, 12 heads, MLP ratio 3. The config's ``head`` is built by
    the Trainer but not used: this mode drops it (no class weights are trained or saved).

    Departures: the encoder's learned positions are kept for the visible tokens (as the FaceT encoder); whether the
    public code's encoder norm differs for MAE is unknown (we run the same blocks and final norm).

    Args:
        mask_ratio: hidden fraction of the patches (0.75 → 147 of 196).
        decoder_dim / decoder_depth / decoder_heads / decoder_mlp_ratio: the light decoder.
        input_key: the batch view to reconstruct (``image`` = clean).
    """

    def __init__(self, backbone: nn.Module, head: Optional[nn.Module], preprocess_spec: PreprocessSpec,
                 teacher: Optional[nn.Module] = None, mask_ratio: float = 0.75, decoder_dim: int = 516,
                 decoder_depth: int = 8, decoder_heads: int = 12, decoder_mlp_ratio: float = 3.0,
                 input_key: str = "image") -> None:
        super().__init__(backbone, None, preprocess_spec, teacher)
        if not hasattr(backbone, "embed_patches") or not hasattr(backbone, "encode"):
            raise ConfigError(f"MAEPretraining needs a ViT backbone with embed_patches/encode (FaceT, FaceTTiny), "
                              f"got {type(backbone).__name__}")
        if not 0.0 < float(mask_ratio) < 1.0:
            raise ConfigError(f"training_mode.mask_ratio: expected a value in (0, 1), got {mask_ratio}")
        if decoder_dim % decoder_heads:
            raise ConfigError(f"training_mode.decoder_dim {decoder_dim} is not divisible by decoder_heads "
                              f"{decoder_heads}")
        if head is not None:
            logger.info("MAEPretraining: the configured head (%s) is not used and not trained", type(head).__name__)
        self.mask_ratio = float(mask_ratio)
        self.input_key = input_key
        self.decoder = MAEDecoder(backbone.dim, int(decoder_dim), int(decoder_depth), int(decoder_heads),
                                  float(decoder_mlp_ratio), backbone.grid, backbone.patch ** 2 * 3)

    def reconstruct(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``{"pred", "target"}`` ``[B, N, p·p·3]`` and ``mask`` ``[B, N]`` (1 = hidden) for normalised images."""
        tokens = self.backbone.embed_patches(x)
        batch, count, dim = tokens.shape
        kept, restore, mask = random_masking(batch, count, self.mask_ratio, x.device)
        visible = torch.gather(tokens, 1, kept.unsqueeze(-1).expand(-1, -1, dim))
        pred = self.decoder(self.backbone.encode(visible), restore)
        return {"pred": pred, "target": patchify(x, self.backbone.patch), "mask": mask}

    def compute_loss(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        if self.input_key not in batch:
            raise KeyError(f"training_mode.input_key '{self.input_key}' not in the batch (keys: {sorted(batch)})")
        out = self.reconstruct(self.inputs(batch[self.input_key]))
        per_patch = (out["pred"].float() - out["target"].float()).square().mean(dim=-1)
        loss = (per_patch * out["mask"]).sum() / out["mask"].sum()
        with torch.no_grad():
            visible = (per_patch * (1 - out["mask"])).sum() / (1 - out["mask"]).sum().clamp(min=1)
        return self.loss_output({"mae_mse": loss}, {"mse_visible": visible, "masked_fraction": out["mask"].mean()})
