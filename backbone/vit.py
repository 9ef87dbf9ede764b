"""FaceT (Zhu et al., "Joint Holistic and Masked Face Recognition", IEEE TIFS 2023): a face ViT whose deep prompts
and prompt-pooling queries are chosen by a binary occlusion flag y (0 = holistic, 1 = occluded/masked).

Data flow for a 112×112 input (defaults = FaceT-B; methods.md §4.1)::

    image [B,3,112,112] → 8×8 patches → 196 tokens × 192 values (p1·p2·c) → Linear(192→D) + learned pos [1,196,D]
      ├─ occlusion classifier (ours) on the patch tokens → logit → y = logit > 0      (flag_source: classifier)
      │  or y set from outside with ``set_oracle_flag``                                (flag_source: oracle)
      ├─ blocks 0..depth−1; before block i < prompt_layers the 32 prompts of y are prepended and dropped after it
      └─ prompt pooling: queries [2, heads, 32, D/heads] of y attend over Linear(D→D) keys, values = the tokens,
         softmax scale D^−1/2 → [B,32,D] → mean → Linear(D→512) → BatchNorm1d(affine=False) → embedding [B,512]

``norm: deepnorm`` is post-LN with residual scaling x ← LN(α·x + F(x)), α = (2N)^{1/4}, and Xavier-normal init
with gain β = (8N)^{−1/4} (N = depth); ``prenorm`` is x ← x + F(LN(x)) with a final LN.

``forward(x)`` (what is evaluated and exported) finds y itself; ``forward_train(x, flag)`` takes y from the batch.
The ONNX graph holds the whole flag path (classifier → threshold → y·(occluded − holistic) + holistic prompts).

Departures from the paper / public code (``zyainfal/Joint-Holistic-and-Masked-Face-Recognition``):
    - The occlusion classifier is ours (the released evaluation reads y from file names: an oracle). It is a
      per-token MLP over the DETACHED patch tokens, mean- and max-pooled, → one logit; its BCE (the training mode's
      ``flag_weight``) therefore trains only the classifier, never the recognition network. When ``forward``
      infers y itself in training (no batch flag), y is straight-through (0/1 value, sigmoid gradient).
    - Prompt selection is arithmetic, holistic + y·(occluded − holistic), equal to indexing up to float rounding.
    - ``forward_features`` returns the final token grid as a map ``[B, D+1, H/8, W/8]`` whose last channel holds y
      (constant over the map): the neck's prompt pool is indexed by y, and this keeps the split stateless.
    - Readout: only the paper's default "mean" pool (no "cls" / "adj" options); ``prompt_layers: 0`` means no prompts,
      no pool and no classifier (mean over the patch tokens).
    - Deepnorm has no final LayerNorm (the post-LN blocks already end in one); the learned pos_embed, the prompts and
      the pool queries start from N(0, 0.02²) (public init unknown); the readout Linear and our classifier use
      Xavier with gain 1 (the "classifier" exception of the public init).
    - ``width`` (ours, for the shared comparison budget) scales D (a multiple of 8, at least 16); the heads become
      the largest count ≤ ``heads`` that divides the new D with a head size of at least 16.
    - ``flag_source: oracle`` is an evaluation setting: its y is not a graph input, so an ONNX export of an oracle
      model bakes in the flag it holds at export time (export the classifier variant for deployment).
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Mapping, Optional, Sequence, Set, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from backbone import BACKBONES
from backbone.base import FaceBackbone
from utils.registry import ConfigError

logger = logging.getLogger(__name__)

NORMS = ("deepnorm", "prenorm")
FLAG_SOURCES = ("classifier", "oracle")
ENCODER_PREFIXES = ("patch_embed.", "pos_embed", "blocks.", "norm.")
"""State-dict keys of the encoder (what MAE pre-training trains and fine-tuning starts from)."""


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """``[B, C, H, W]`` → ``[B, (H/p)·(W/p), p·p·C]`` row-major over the grid, values ordered (p1, p2, c)."""
    batch, channels, height, width = images.shape
    rows, cols = height // patch, width // patch
    grid = images.reshape(batch, channels, rows, patch, cols, patch)
    return grid.permute(0, 2, 4, 3, 5, 1).reshape(batch, rows * cols, patch * patch * channels)


def sincos_2d_positions(dim: int, grid: Tuple[int, int]) -> torch.Tensor:
    """Fixed 2D sine-cosine positions ``[1, rows·cols, dim]`` (MAE): half the channels encode the row, half the
    column; ``dim`` is padded up to a multiple of 4 and cut back."""
    padded = (dim + 3) // 4 * 4
    quarter = padded // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    rows, cols = torch.meshgrid(torch.arange(grid[0], dtype=torch.float64), torch.arange(grid[1], dtype=torch.float64),
                                indexing="ij")
    parts = []
    for coordinate in (rows.reshape(-1), cols.reshape(-1)):
        angles = coordinate[:, None] * omega[None, :]
        parts += [angles.sin(), angles.cos()]
    return torch.cat(parts, dim=1)[:, :dim].float().unsqueeze(0)


def scaled_dim_and_heads(dim: int, heads: int, width: float) -> Tuple[int, int]:
    """``width`` × ``dim`` rounded to a multiple of 8 (≥ 16) and the largest head count ≤ ``heads`` dividing it with
    a head size ≥ 16 (1 if none)."""
    if width == 1.0:
        return dim, heads
    new_dim = max(16, int(round(dim * width / 8.0)) * 8)
    for count in range(min(heads, new_dim // 16), 0, -1):
        if new_dim % count == 0:
            return new_dim, count
    return new_dim, 1


def select_by_flag(flag: torch.Tensor, holistic: torch.Tensor, occluded: torch.Tensor) -> torch.Tensor:
    """``holistic + flag·(occluded − holistic)`` with a float flag of 0/1 values (broadcast): selection up to float
    rounding, differentiable for the straight-through flag, and plain Mul/Add in ONNX."""
    return holistic + flag * (occluded - holistic)


class DropPath(nn.Module):
    """Stochastic depth: zero a sample's residual branch with probability ``rate`` (rescaling the rest)."""

    def __init__(self, rate: float = 0.0) -> None:
        super().__init__()
        self.rate = float(rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (bias) and an output projection."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % heads:
            raise ConfigError(f"backbone: dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """One transformer block; ``norm``: ``deepnorm`` (LN(α·x + F(x))) or ``prenorm`` (x + F(LN(x)))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, norm: str, alpha: float = 1.0,
                 drop_path: float = 0.0, qkv_bias: bool = True) -> None:
        super().__init__()
        self.norm_kind = norm
        self.alpha = float(alpha)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm_kind == "deepnorm":
            x = self.norm1(self.alpha * x + self.drop_path(self.attn(x)))
            return self.norm2(self.alpha * x + self.drop_path(self.mlp(x)))
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PromptPool(nn.Module):
    """Prompt pooling: flag-selected learned queries ``[2, heads, P, D/heads]`` attend over the tokens.

    keys = Linear(D→D)(tokens) split into heads; values = the tokens split into heads (no projection); softmax
    scale D^−1/2 (the full width, as the public code); output ``[B, P, D]``.
    """

    def __init__(self, dim: int, heads: int, num_prompts: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = dim ** -0.5
        self.queries = nn.Parameter(torch.empty(2, heads, num_prompts, dim // heads))
        self.key = nn.Linear(dim, dim)
        nn.init.normal_(self.queries, std=0.02)

    def forward(self, tokens: torch.Tensor, flag: torch.Tensor) -> torch.Tensor:
        batch, count, dim = tokens.shape
        queries = select_by_flag(flag.reshape(-1, 1, 1, 1), self.queries[0], self.queries[1])  # [B, h, P, d]
        keys = self.key(tokens).reshape(batch, count, self.heads, -1).transpose(1, 2)        # [B, h, N, d]
        values = tokens.reshape(batch, count, self.heads, -1).transpose(1, 2)
        weights = torch.softmax(queries @ keys.transpose(-2, -1) * self.scale, dim=-1)       # [B, h, P, N]
        return (weights @ values).transpose(1, 2).reshape(batch, -1, dim)


class OcclusionClassifier(nn.Module):
    """Ours: per-token MLP on the detached patch tokens, mean ‖ max pooled, → one logit (y = logit > 0)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.token_mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(),
                                       nn.Linear(hidden, hidden), nn.GELU())
        self.out = nn.Linear(2 * hidden, 1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        features = self.token_mlp(tokens.detach())
        return self.out(torch.cat([features.mean(dim=1), features.amax(dim=1)], dim=1)).squeeze(1)


@BACKBONES.register()
class FaceT(FaceBackbone):
    """FaceT ViT with deep prompts and prompt pooling indexed by an occlusion flag (see the module docstring).

    Args:
        feat_dim: embedding size (512).
        dim / depth / heads / mlp_ratio: encoder width, blocks, attention heads, MLP expansion (FaceT-B: 768/12/12/4).
        patch: patch side in pixels (8 → 196 tokens at 112×112).
        norm: ``deepnorm`` (paper's README) or ``prenorm``.
        prompt_layers: L_p, the blocks that get deep prompts (≤ depth); 0 = plain ViT with a mean readout.
        num_prompts: prompts per layer and pooled tokens (32).
        flag_source: ``classifier`` (y from the occlusion classifier) or ``oracle`` (y from ``set_oracle_flag``).
        classifier_hidden: width of the occlusion classifier's MLP.
        drop_path: stochastic-depth rate of the last block (linear from 0).
        width: multiplier of ``dim`` (the comparison budget); input_size: (height, width), multiples of ``patch``.
    """

    def __init__(self, feat_dim: int = 512, dim: int = 768, depth: int = 12, heads: int = 12, mlp_ratio: float = 4.0,
                 patch: int = 8, norm: str = "deepnorm", prompt_layers: int = 12, num_prompts: int = 32,
                 flag_source: str = "classifier", classifier_hidden: int = 128, drop_path: float = 0.0,
                 qkv_bias: bool = True, width: float = 1.0, input_size: Sequence[int] = (112, 112)) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ConfigError(f"backbone.norm: expected one of {NORMS}, got {norm!r}")
        if flag_source not in FLAG_SOURCES:
            raise ConfigError(f"backbone.flag_source: expected one of {FLAG_SOURCES}, got {flag_source!r}")
        if not 0 <= prompt_layers <= depth:
            raise ConfigError(f"backbone.prompt_layers: expected 0..depth ({depth}), got {prompt_layers}")
        if width <= 0:
            raise ConfigError(f"backbone.width: expected > 0, got {width}")
        if len(input_size) != 2 or any(int(side) % patch or int(side) < patch for side in input_size):
            raise ConfigError(f"backbone.input_size: expected (height, width), multiples of patch {patch}, "
                              f"got {input_size!r}")
        if num_prompts < 1:
            raise ConfigError(f"backbone.num_prompts: expected >= 1, got {num_prompts}")
        dim, heads = scaled_dim_and_heads(int(dim), int(heads), float(width))
        self.feat_dim = int(feat_dim)
        self.dim, self.depth, self.heads, self.patch = dim, int(depth), heads, int(patch)
        self.norm_kind = norm
        self.prompt_layers = int(prompt_layers)
        self.num_prompts = int(num_prompts)
        self.flag_source = flag_source
        self.grid = (int(input_size[0]) // patch, int(input_size[1]) // patch)
        self.num_tokens = self.grid[0] * self.grid[1]
        self.feature_size = self.grid
        self.feature_channels = dim + 1  # + the flag channel
        self.alpha = (2.0 * depth) ** 0.25 if norm == "deepnorm" else 1.0
        self.beta = (8.0 * depth) ** -0.25 if norm == "deepnorm" else 1.0
        self._oracle_flag: Optional[int] = None

        self.patch_embed = nn.Linear(patch * patch * 3, dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_tokens, dim))
        rates = [drop_path * index / max(1, depth - 1) for index in range(depth)]
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, norm, self.alpha, rate, qkv_bias) for rate in rates)
        self.norm = nn.LayerNorm(dim) if norm == "prenorm" else nn.Identity()
        if self.prompt_layers:
            self.prompts = nn.Parameter(torch.empty(self.prompt_layers, 2, num_prompts, dim))
            self.pool = PromptPool(dim, heads, num_prompts)
            self.classifier = OcclusionClassifier(dim, int(classifier_hidden))
        self.readout = nn.Linear(dim, feat_dim)
        self.bn_embedding = nn.BatchNorm1d(feat_dim, affine=False)
        self._init_weights()

    def _init_weights(self) -> None:
        """Encoder Linears: Xavier normal with gain β (deepnorm) or Xavier uniform (prenorm), zero bias;
        readout and classifier: Xavier gain 1; LayerNorm 1/0; pos_embed, prompts, queries: N(0, 0.02²)."""
        for module in [self.patch_embed, *self.blocks.modules()]:
            if isinstance(module, nn.Linear):
                if self.norm_kind == "deepnorm":
                    nn.init.xavier_normal_(module.weight, gain=self.beta)
                else:
                    nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        extra = [self.readout] + ([self.pool.key, *self.classifier.modules()] if self.prompt_layers else [])
        for module in extra:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.pos_embed, std=0.02)
        if self.prompt_layers:
            nn.init.normal_(self.prompts, std=0.02)

    # ------------------------------------------------------------------ pieces (also used by MAE pre-training)
    def embed_patches(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images → patch tokens with positions ``[B, N, D]``."""
        if tuple(x.shape[-2:]) != (self.grid[0] * self.patch, self.grid[1] * self.patch):
            raise ValueError(f"FaceT: input {tuple(x.shape[-2:])} differs from input_size "
                             f"{(self.grid[0] * self.patch, self.grid[1] * self.patch)}")
        return self.patch_embed(patchify(x, self.patch)) + self.pos_embed

    def encode(self, tokens: torch.Tensor, flag: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The blocks (+ final norm); with ``flag`` (float ``[B]`` of 0/1) the first ``prompt_layers`` blocks get the
        flag's prompts prepended (dropped after each block). MAE calls it without a flag on visible tokens."""
        for index, block in enumerate(self.blocks):
            if flag is not None and index < self.prompt_layers:
                prompts = select_by_flag(flag.reshape(-1, 1, 1), self.prompts[index, 0], self.prompts[index, 1])
                tokens = block(torch.cat([prompts, tokens], dim=1))[:, self.num_prompts:]
            else:
                tokens = block(tokens)
        return self.norm(tokens)

    def set_oracle_flag(self, flag: Optional[int]) -> None:
        """``flag_source: oracle``: the y every following ``forward`` uses (1 occluded, 0 clean; None = unset)."""
        if flag is not None and int(flag) not in (0, 1):
            raise ValueError(f"FaceT.set_oracle_flag: expected 0, 1 or None, got {flag!r}")
        self._oracle_flag = None if flag is None else int(flag)

    def flag_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """The occlusion classifier's logit per image ``[B]`` (from the patch tokens)."""
        return self.classifier(tokens)

    def inferred_flag(self, tokens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(y, classifier logits)`` for ``forward``: y is float ``[B]`` of 0/1, the classifier's ``logit > 0`` or
        the oracle flag. Training with grad enabled, the classifier's y is straight-through (value 0/1, gradient of
        its sigmoid), so a flag the backbone infers itself also learns from the loss."""
        logits = self.flag_logits(tokens)
        if self.flag_source == "oracle":
            if self._oracle_flag is None:
                raise RuntimeError("FaceT with flag_source=oracle needs set_oracle_flag(0 or 1) before forward (the "
                                   "evaluation sets it per image set); use flag_source=classifier otherwise")
            return torch.full_like(logits, float(self._oracle_flag)), logits
        hard = (logits > 0).to(tokens.dtype)
        if self.training and torch.is_grad_enabled():
            soft = torch.sigmoid(logits)
            return hard + soft - soft.detach(), logits
        return hard, logits

    # ------------------------------------------------------------------ FaceBackbone interface
    def _features(self, x: torch.Tensor, flag: Optional[torch.Tensor]) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        tokens = self.embed_patches(x)
        batch = tokens.shape[0]
        logits = None
        if self.prompt_layers:
            if flag is None:
                flag, logits = self.inferred_flag(tokens)
            else:
                logits = self.flag_logits(tokens)
                flag = flag.reshape(-1).to(tokens.dtype)
        tokens = self.encode(tokens, flag if self.prompt_layers else None)
        flag_channel = flag if self.prompt_layers else tokens.new_zeros(batch)
        grid = tokens.transpose(1, 2).reshape(batch, self.dim, *self.grid)
        flag_map = flag_channel.reshape(batch, 1, 1, 1).expand(batch, 1, *self.grid)
        return torch.cat([grid, flag_map], dim=1), logits

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Final tokens as a map ``[B, D+1, H/p, W/p]``; the last channel is y (constant over the map)."""
        return self._features(x, None)[0]

    def forward_neck(self, feature_map: torch.Tensor) -> torch.Tensor:
        tokens = feature_map[:, :self.dim].flatten(2).transpose(1, 2)
        if self.prompt_layers:
            flag = feature_map[:, self.dim, 0, 0]
            pooled = self.pool(tokens, flag).mean(dim=1)
        else:
            pooled = tokens.mean(dim=1)
        return self.bn_embedding(self.readout(pooled))

    def forward_train(self, x: torch.Tensor, flag: Optional[torch.Tensor] = None) -> Dict[str, Any]:
        """``flag`` (``[B]`` 0/1, from the batch) picks the prompts; ``flag_logits`` (the classifier's, to be
        trained against it) are returned too (None without prompts)."""
        feature_map, logits = self._features(x, flag)
        return {"embedding": self.forward_neck(feature_map), "flag_logits": logits, "aux_losses": {}, "stats": {}}

    # ------------------------------------------------------------------ optimiser and initialisation hooks
    def layer_id(self, name: str) -> int:
        """Layer-decay depth of a parameter: patch_embed / pos_embed 0, block i → i+1, everything else depth+1."""
        if name.startswith(("patch_embed.", "pos_embed")):
            return 0
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        return self.depth + 1

    def no_weight_decay(self) -> Set[str]:
        """Parameter names kept out of weight decay besides 1-D ones (paper: pos_embed)."""
        return {"pos_embed"}

    def load_pretrained(self, state_dict: Mapping[str, torch.Tensor], source: str = "") -> None:
        """Fine-tuning start (``runtime.init_weights``): every encoder key (patch_embed, pos_embed, blocks, norm)
        must be in ``state_dict`` with this model's shape (e.g. an MAE run's backbone); the other keys (prompts,
        pool, classifier, readout) are taken where the source has them with the same shape, else kept fresh."""
        own = self.state_dict()
        encoder = [key for key in own if key.startswith(ENCODER_PREFIXES)]
        missing = [key for key in encoder if key not in state_dict]
        mismatched = [f"{key} {tuple(state_dict[key].shape)} vs {tuple(own[key].shape)}" for key in encoder
                      if key in state_dict and state_dict[key].shape != own[key].shape]
        if missing or mismatched:
            raise RuntimeError(f"{source or 'state_dict'} cannot start this FaceT: missing encoder keys {missing[:6]}"
                               f" ({len(missing)}), shape mismatches {mismatched[:4]} ({len(mismatched)})")
        taken = {key: value for key, value in state_dict.items() if key in own and value.shape == own[key].shape}
        self.load_state_dict(taken, strict=False)
        fresh = sorted(key for key in own if key not in taken)
        logger.info("FaceT: %d encoder tensors and %d others from %s; fresh: %s", len(encoder),
                    len(taken) - len(encoder), source or "state_dict", ", ".join(fresh) or "none")


@BACKBONES.register()
class FaceTTiny(FaceT):
    """A CPU-sized FaceT (ours, for the embedded preset and the registry tests): dim 192, depth 4, 3 heads, prompts
    in all 4 blocks, 16 prompts, prenorm (better than deepnorm at this size on the val split); every other argument
    as ``FaceT``."""

    def __init__(self, feat_dim: int = 512, dim: int = 192, depth: int = 4, heads: int = 3, mlp_ratio: float = 4.0,
                 patch: int = 8, norm: str = "prenorm", prompt_layers: int = 4, num_prompts: int = 16,
                 flag_source: str = "classifier", classifier_hidden: int = 64, drop_path: float = 0.0,
                 qkv_bias: bool = True, width: float = 1.0, input_size: Sequence[int] = (112, 112)) -> None:
        super().__init__(feat_dim, dim, depth, heads, mlp_ratio, patch, norm, prompt_layers, num_prompts, flag_source,
                         classifier_hidden, drop_path, qkv_bias, width, input_size)
