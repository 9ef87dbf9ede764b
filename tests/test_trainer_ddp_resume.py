"""Resume on several ranks: every rank gets its own RNG state back (not rank 0's copied everywhere)."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import torch
import yaml

from tests.test_trainer import tiny_config
from utils.checkpoint import atomic_torch_save, load_checkpoint
from utils.seed import capture_rng_state, restore_rank_rng_state, seed_everything

REPO = Path(__file__).resolve().parents[1]

# Runs under torchrun: "first" trains until runtime.max_steps (its checkpoint holds the state at that step) and then
# draws from every RNG, as the uninterrupted run would at that step; "resume" rebuilds the Trainer from that
# checkpoint and draws right away. Each rank writes its draws to <out>.rank<r>.json.
WORKER = textwrap.dedent("""
    import json, random, sys

    import numpy as np
    import torch
    import yaml

    from training_mode.trainer import Trainer

    mode, config, work_dir, out = sys.argv[1:5]
    cfg = yaml.safe_load(open(config))
    trainer = Trainer(cfg, work_dir, resume="auto" if mode == "resume" else None)
    try:
        if mode == "first":
            trainer.fit()
        draws = {"torch": torch.rand(6).tolist(), "numpy": np.random.rand(3).tolist(), "python": random.random(),
                 "global_step": trainer.global_step}
        with open(f"{out}.rank{trainer.dist.rank}.json", "w") as handle:
            json.dump(draws, handle)
    finally:
        trainer.close()
""")


def draws() -> dict:
    return {"torch": torch.rand(6).tolist(), "numpy": np.random.rand(3).tolist(), "python": random.random()}


def test_each_rank_restores_its_own_state_else_reseeds(tmp_path):
    seed_everything(100)
    rank0 = capture_rng_state()
    expected0 = draws()
    seed_everything(101)
    rank1 = capture_rng_state()
    expected1 = draws()
    atomic_torch_save({"rng": [rank0, rank1]}, tmp_path / "two.pt")
    saved = load_checkpoint(tmp_path / "two.pt")["rng"]  # a list of per-rank states loads with weights_only=True
    for rank, expected in ((1, expected1), (0, expected0)):
        restored, _ = restore_rank_rng_state(saved, rank, base_seed=7)
        assert restored and draws() == expected
    # resuming on more ranks than saved the checkpoint (or a format-1 checkpoint: one dict, rank 0's state):
    # the rank without a state is reseeded with base seed + rank, and says so
    for checkpoint_rng in (saved[:1], saved[0]):
        restored, how = restore_rank_rng_state(checkpoint_rng, 1, base_seed=7)
        assert not restored and "base seed + rank = 8" in how
        after = draws()
        seed_everything(8)
        assert after == draws()
        restored, _ = restore_rank_rng_state(checkpoint_rng, 0, base_seed=7)
        assert restored and draws() == expected0


def torchrun(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "LOCAL_RANK"))}
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_two_process_gloo_resume_restores_every_ranks_rng(random_faces, tmp_path):
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    config = tmp_path / "ddp.yaml"
    config.write_text(yaml.safe_dump(tiny_config(random_faces, max_steps=2)))
    run = tmp_path / "run"
    torchrun(str(worker), "first", str(config), str(run), str(tmp_path / "uninterrupted"))
    checkpoint = load_checkpoint(run / "checkpoints" / "last.pt")
    assert checkpoint["global_step"] == 2 and isinstance(checkpoint["rng"], list) and len(checkpoint["rng"]) == 2

    torchrun(str(worker), "resume", str(config), str(run), str(tmp_path / "resumed"))
    ranks = []
    for rank in (0, 1):
        uninterrupted = json.loads((tmp_path / f"uninterrupted.rank{rank}.json").read_text())
        resumed = json.loads((tmp_path / f"resumed.rank{rank}.json").read_text())
        assert resumed["global_step"] == uninterrupted["global_step"] == 2
        assert resumed == uninterrupted, f"rank {rank}: resumed draws differ from the uninterrupted run's"
        ranks.append(resumed)
    assert ranks[0]["torch"] != ranks[1]["torch"] and ranks[0]["numpy"] != ranks[1]["numpy"]
