"""torchrun-style distributed helpers: ranks come from the environment, nothing happens at import."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, List, Tuple

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_type: str) -> DistInfo:
    """Initialise the process group when launched by torchrun (WORLD_SIZE > 1); NCCL on CUDA, gloo on CPU."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return DistInfo(rank, local_rank, world_size)


def process_group() -> Tuple[int, int]:
    """(rank, world size) of the initialised default process group; (0, 1) outside one (a single process)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard_range(total: int, rank: int, world: int) -> Tuple[int, int]:
    """Rows ``[start, stop)`` of rank ``rank`` when ``total`` rows are split into contiguous blocks, the first
    ``total % world`` blocks one row larger (Partial FC's class centres)."""
    base, extra = divmod(total, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def all_gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``[B, ...]`` tensor (the same B on each) concatenated in rank order; a collective, without
    gradient. One process: the tensor itself."""
    world = process_group()[1]
    if world == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if not info.enabled:
        return value
    value = value.detach().clone()
    dist.all_reduce(value)
    return value / info.world_size


def all_gather_object(obj: Any, info: DistInfo) -> List[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (pickled; tensors in it come back on the CPU when they
    were there). A collective: every rank must call it. One process: ``[obj]``."""
    if not info.enabled:
        return [obj]
    gathered: List[Any] = [None] * info.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
