"""Seeding and RNG state capture (for bit-exact resume), per rank.

A checkpoint holds every rank's RNG state (``"rng"``: a list indexed by rank, gathered by ``gather_rng_states``);
on resume rank ``r`` restores entry ``r`` (``restore_rank_rng_state``). Resuming on more ranks than saved them: a
rank without an entry is reseeded with ``base seed + rank`` (the seed a fresh run gives it), and says so; resuming
on fewer ranks leaves the extra entries unused. A checkpoint of format 1 (one state, rank 0's) counts as a list of
one entry.
"""
from __future__ import annotations

import random
from typing import Any, Dict, List, Mapping, Sequence, Tuple, Union

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def capture_rng_state() -> Dict[str, Any]:
    """RNG states as tensors / plain lists so the checkpoint loads with ``weights_only=True``."""
    np_state = np.random.get_state()
    state: Dict[str, Any] = {
        "python": list(random.getstate()[1]) + [random.getstate()[2]],
        "python_version": random.getstate()[0],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Dict[str, Any]) -> None:
    python = state["python"]
    random.setstate((state["python_version"], tuple(python[:-1]), python[-1]))
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np_state[1].numpy().astype(np.uint32), *np_state[2:]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def gather_rng_states(dist_info: Any) -> List[Dict[str, Any]]:
    """Every rank's RNG state, indexed by rank (a collective: every rank must call it; one process: its own)."""
    from utils.distributed import all_gather_object

    return all_gather_object(capture_rng_state(), dist_info)


def restore_rank_rng_state(saved: Union[Mapping[str, Any], Sequence[Mapping[str, Any]]], rank: int,
                           base_seed: int) -> Tuple[bool, str]:
    """Restore ``rank``'s own state from a checkpoint's ``"rng"`` entry (see the module doc). Returns whether a
    saved state was restored (False: reseeded) and a sentence for the log."""
    states = [saved] if isinstance(saved, Mapping) else list(saved)
    if rank < len(states):
        restore_rng_state(dict(states[rank]))
        return True, f"rank {rank} restored its own RNG state (the checkpoint holds {len(states)} rank(s))"
    seed_everything(base_seed + rank)
    return False, (f"the checkpoint holds the RNG states of {len(states)} rank(s), none for rank {rank}: "
                   f"reseeded with base seed + rank = {base_seed + rank}")
