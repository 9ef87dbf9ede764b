"""Partial FC: the class centres of any registered margin head sharded across ranks (model parallel), with optional
negative-class sampling.

    head: {type: PartialFC, head: {type: ArcFace, margin: 0.5, scale: 64}, sample_rate: 0.1}

Reference: insightface ``recognition/arcface_torch/partial_fc_v2.py`` (An et al., "Partial FC", ICCVW 2021 / CVPR
2022). Rank r holds rows ``[start_r, stop_r)`` of the ``[num_class, D]`` centres as the wrapped head's own weight
(so every margin head works unchanged). A step:

1. the embeddings and labels of every rank are all-gathered (``B_g = W·B`` rows); the gather's backward sums the
   gradients of all ranks for this rank's rows and multiplies them by W, because DDP divides the backbone's
   gradients by W while the shard's gradient must not be;
2. with ``sample_rate`` < 1 each rank keeps the centres of the positive classes it holds plus uniformly drawn
   negatives, ``max(⌈rate·C_r⌉, #positives)`` rows in all (positives always kept); 1.0 = every centre. Choosing
   the rate: the classes a step sees are the batch's positives plus rate·C; insightface reports no accuracy loss at
   0.1 for 1M+ classes (and uses 0.2–0.3 for ~100k); below ~5 000 classes keep 1.0;
3. each row's target cosine is gathered from the rank that holds its class and appended as an extra column, so
   the wrapped head sees every row's target: margins, CurricularFace's hard-negative modulation and AdaFace's norm
   statistics are computed exactly as on one GPU; the extra column is dropped afterwards (the owner's real column
   carries the target logit);
4. the softmax is combined across ranks (max, Σexp and the target logit all-reduced) in ``ShardedCrossEntropy``:
   its forward gives every row's cross-entropy over all ``num_class`` logits; its backward sums the rows' upstream
   gradients over ranks and returns ``(softmax − onehot)·g / W`` for the shard.

The head returns ``ce_per_row`` (this rank's rows, ``[B]``) instead of logits; training modes take the CE from it
(``head.cross_entropy_rows``), so ``GFROTraining``'s clean and noisy views are two row groups of one call. A head's
auxiliary loss (MagFace's g) is computed on the gathered rows by every rank; its gradient is scaled by 1/W so the
result equals one process's. With one process Partial FC with ``sample_rate: 1`` is the plain head.

The initial centres are N(0, 0.01²) drawn block-wise from ``init_seed`` (``initial_rows``): the same matrix on any
number of ranks. Checkpoints hold the full ``[num_class, D]`` centres and their optimiser state
(``model_parallel_rows``: the Trainer gathers the shards on save and slices them on load), so a run resumes on any
number of ranks. Departures
from insightface: no fp16 logits (the margin and softmax run in fp32, as every head here); the sampled centres'
momentum is kept for all rows by plain SGD (insightface swaps the optimiser state of the sampled rows in its AdamW
variant only).
"""
from __future__ import annotations

import logging
import math
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
import torch.distributed as dist
from torch import nn

from head import HEADS
from head.margin_base import MarginHead, check_labels
from utils.distributed import all_gather_rows, process_group, shard_range

logger = logging.getLogger(__name__)


INIT_BLOCK = 4096  # class rows drawn per seeded generator: the initial centres do not depend on the world size


def initial_rows(start: int, stop: int, feat_dim: int, seed: int, std: float = 0.01) -> torch.Tensor:
    """Rows ``[start, stop)`` of the ``[num_class, feat_dim]`` N(0, std²) initial centres; row r comes from the
    generator seeded ``seed · 1_000_003 + r // INIT_BLOCK``, so every sharding (and one process) starts from the same
    full matrix without materialising it."""
    blocks = []
    for block in range(start // INIT_BLOCK, (stop - 1) // INIT_BLOCK + 1):
        generator = torch.Generator().manual_seed(seed * 1_000_003 + block)
        rows = torch.randn(INIT_BLOCK, feat_dim, generator=generator) * std
        low, high = max(start, block * INIT_BLOCK), min(stop, (block + 1) * INIT_BLOCK)
        blocks.append(rows[low - block * INIT_BLOCK:high - block * INIT_BLOCK])
    return torch.cat(blocks)


class GatherRows(torch.autograd.Function):
    """All-gather ``[B, ...]`` from every rank (equal B) in rank order; backward: the summed gradients of all ranks
    for this rank's rows, times ``grad_scale``."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, grad_scale: float) -> torch.Tensor:
        ctx.rank, ctx.rows, ctx.grad_scale = process_group()[0], tensor.shape[0], grad_scale
        gathered = all_gather_rows(tensor)
        return gathered.clone() if gathered is tensor else gathered  # one process: a new tensor, as autograd wants

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Tuple[torch.Tensor, None]:
        grad = grad.contiguous()
        if process_group()[1] > 1:
            dist.all_reduce(grad)
        mine = grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]
        return mine * ctx.grad_scale, None


class ShardedCrossEntropy(torch.autograd.Function):
    """Per-row cross-entropy over logits split by class across ranks.

    ``logits`` [B_g, S] this rank's (sampled) classes; ``target`` [B_g] the column of the row's class here, or −1
    when another rank holds it. Forward → ``[B_g]`` CE (the same on every rank). Backward: the upstream gradients of
    all ranks are summed (each rank differentiates only its own rows) and divided by the world size (the ranks'
    losses are averaged, as DDP averages the replicated parameters' gradients)."""

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        world = process_group()[1]
        logits = logits.float()
        row_max = logits.max(dim=1).values
        if world > 1:
            dist.all_reduce(row_max, op=dist.ReduceOp.MAX)
        exp = torch.exp(logits - row_max[:, None])
        sum_exp = exp.sum(dim=1)
        here = target >= 0
        target_logit = torch.zeros_like(row_max)
        target_logit[here] = logits[here, target[here]]
        if world > 1:
            dist.all_reduce(sum_exp)
            dist.all_reduce(target_logit)
        ctx.save_for_backward(exp / sum_exp[:, None], target)
        ctx.world = world
        return torch.log(sum_exp) + row_max - target_logit

    @staticmethod
    def backward(ctx: Any, grad_rows: torch.Tensor) -> Tuple[torch.Tensor, None]:
        probabilities, target = ctx.saved_tensors
        grad_rows = grad_rows.contiguous().float()
        if ctx.world > 1:
            dist.all_reduce(grad_rows)
        grad = probabilities.clone()
        here = torch.nonzero(target >= 0).squeeze(1)
        grad[here, target[here]] -= 1.0
        return grad * (grad_rows / ctx.world)[:, None], None


def scale_gradient(value: torch.Tensor, factor: float) -> torch.Tensor:
    """``value`` unchanged, its gradient multiplied by ``factor``."""
    return value.detach() + (value - value.detach()) * factor


@HEADS.register()
class PartialFC(nn.Module):
    """Model-parallel wrapper of a margin head; see the module docstring. ``forward(embeddings [B, D], labels [B])``
    → ``{"ce_per_row": [B], "logits": this rank's [B, S] shard logits, optional "aux_loss"}``."""

    def __init__(self, feat_dim: int, num_class: int, head: Optional[Mapping[str, Any]] = None,
                 sample_rate: float = 1.0, init_seed: int = 0) -> None:
        super().__init__()
        if not 0.0 < float(sample_rate) <= 1.0:
            raise ValueError(f"head.sample_rate: expected a number in (0, 1], got {sample_rate!r}")
        inner_cfg = dict(head or {"type": "ArcFace"})
        if inner_cfg.get("type") == "PartialFC":
            raise ValueError("head.head: Partial FC wraps a margin head, not another PartialFC")
        for key in ("num_class", "feat_dim"):
            if key in inner_cfg:
                raise ValueError(f"head.head.{key} is set by the toolbox; remove it from the config")
        self.rank, self.world = process_group()
        self.num_class, self.feat_dim, self.sample_rate = int(num_class), int(feat_dim), float(sample_rate)
        if self.num_class < self.world:
            raise ValueError(f"Partial FC: {self.num_class} classes cannot be split over {self.world} ranks")
        self.start, self.stop = shard_range(self.num_class, self.rank, self.world)
        self.head = HEADS.build(inner_cfg, where="head.head", feat_dim=feat_dim, num_class=self.stop - self.start)
        if not isinstance(self.head, MarginHead):
            raise ValueError(f"head.head: Partial FC needs a margin head (class-centre weight), got "
                             f"{inner_cfg['type']}")
        with torch.no_grad():  # the same full matrix for every world size (initial_rows)
            self.head.weight.copy_(initial_rows(self.start, self.stop, self.feat_dim, int(init_seed)))
        self.head.weight.model_parallel_rows = (self.start, self.stop, self.num_class)  # read by the Trainer
        self.head.batch_is_global = True  # statistics over the gathered rows are already global
        local = self.stop - self.start
        weight_mb = local * self.feat_dim * 4 / 2 ** 20
        logger.info("Partial FC (%s): %d classes, rows [%d, %d) on rank %d of %d = %.1f MiB fp32 centres (+ the "
                    "same again per optimiser state buffer, e.g. SGD momentum); sample rate %.2f → %d logits per row",
                    inner_cfg["type"], self.num_class, self.start, self.stop, self.rank, self.world, weight_mb,
                    self.sample_rate, self.sampled_count(local))

    @property
    def weight(self) -> nn.Parameter:
        """This rank's rows of the class centres (``model_parallel_rows`` says which), e.g. for weight imprinting."""
        return self.head.weight

    def sampled_count(self, local: int) -> int:
        return local if self.sample_rate >= 1.0 else max(1, math.ceil(self.sample_rate * local))

    def extra_repr(self) -> str:
        return (f"num_class={self.num_class}, rows=[{self.start}, {self.stop}), world={self.world}, "
                f"sample_rate={self.sample_rate}")

    def _sample(self, local_labels: torch.Tensor) -> Tuple[Optional[torch.Tensor], torch.Tensor]:
        """(kept centre indices or None for all, the rows' target column among them or −1)."""
        local = self.stop - self.start
        keep = self.sampled_count(local)
        if keep >= local:
            return None, local_labels
        positives = torch.unique(local_labels[local_labels >= 0])
        scores = torch.rand(local, device=local_labels.device)
        scores[positives] = 2.0  # always kept
        index = torch.sort(torch.topk(scores, max(keep, positives.numel())).indices).values
        remap = torch.full((local,), -1, dtype=torch.long, device=local_labels.device)
        remap[index] = torch.arange(index.numel(), device=local_labels.device)
        column = torch.where(local_labels >= 0, remap[local_labels.clamp_min(0)], local_labels)
        return index, column

    def forward(self, embeddings: torch.Tensor, labels: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        if labels is None:
            return {"logits": self.head(embeddings)["logits"]}  # this rank's classes (inference)
        check_labels(labels, embeddings.shape[0], self.num_class)
        rows = embeddings.shape[0]
        gathered = GatherRows.apply(embeddings, float(self.world))
        all_labels = all_gather_rows(labels.long())
        in_shard = (all_labels >= self.start) & (all_labels < self.stop)
        local_labels = torch.where(in_shard, all_labels - self.start, torch.full_like(all_labels, -1))
        index, column = self._sample(local_labels)
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            cosine = self.head.cosine(gathered)
            if index is not None:
                cosine = cosine[:, index]
            here = column >= 0
            target_cos = torch.zeros(cosine.shape[0], dtype=cosine.dtype, device=cosine.device)
            target_cos = target_cos.masked_scatter(here, cosine[here, column[here]])
            target_cos = GatheredTarget.apply(target_cos)
            extended = torch.cat([cosine, target_cos[:, None]], dim=1)
            extended_labels = torch.where(here, column, torch.full_like(column, cosine.shape[1]))
            out = self.head.logits_from_cosine(extended, extended_labels, gathered.to(cosine.dtype))
            logits = out["logits"][:, :-1]
            ce = ShardedCrossEntropy.apply(logits, column)
        result = {"ce_per_row": ce[self.rank * rows:(self.rank + 1) * rows], "logits": logits}
        if "aux_loss" in out:
            result["aux_loss"] = scale_gradient(out["aux_loss"], 1.0 / self.world)
        return result


class GatheredTarget(torch.autograd.Function):
    """Each row's target cosine from the rank holding its class (all-reduce of the per-rank values, zero
    elsewhere). Every rank uses the result in its extra column; only the owner's real column reaches the loss, so
    the backward passes the local gradient through unchanged."""

    @staticmethod
    def forward(ctx: Any, target_cos: torch.Tensor) -> torch.Tensor:
        target_cos = target_cos.clone()
        if process_group()[1] > 1:
            dist.all_reduce(target_cos)
        return target_cos

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad
