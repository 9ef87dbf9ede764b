"""Scale options of the Trainer: the linear lr-scaling rule from the config, and SyncBatchNorm refused where it
cannot run (CPU / one process) with an error naming the key."""
from __future__ import annotations

import pytest

from tests.test_trainer import tiny_config
from training_mode.trainer import Trainer, scaled_lr_config
from utils.registry import ConfigError


def test_linear_lr_scaling_rule():
    cfg = {"type": "SGD", "lr": 0.1, "lr_scaling": {"base_batch": 512}}
    assert scaled_lr_config(dict(cfg), 8 * 128)["lr"] == pytest.approx(0.2)   # 8 GPUs × 128 = 1024 images
    assert scaled_lr_config(dict(cfg), 64)["lr"] == pytest.approx(0.0125)
    assert "lr_scaling" not in scaled_lr_config(dict(cfg), 64)
    assert scaled_lr_config({"type": "SGD", "lr": 0.1}, 4096)["lr"] == 0.1   # no rule: as written
    for bad in ({"base": 512}, {"base_batch": 0}, 512):
        with pytest.raises(ConfigError, match="optim.lr_scaling"):
            scaled_lr_config({"lr": 0.1, "lr_scaling": bad}, 64)


def test_lr_scaling_reaches_the_optimizer(random_faces, tmp_path):
    cfg = tiny_config(random_faces)
    cfg["optim"] = {**cfg["optim"], "lr": 0.1, "lr_scaling": {"base_batch": 32}}
    trainer = Trainer(cfg, tmp_path)   # batch 8 × 1 rank
    try:
        assert trainer.optimizer.param_groups[0]["initial_lr"] == pytest.approx(0.025)
    finally:
        trainer.close()


def test_sync_bn_needs_cuda_ranks(random_faces, tmp_path):
    with pytest.raises(ConfigError, match="runtime.sync_bn"):
        Trainer(tiny_config(random_faces, sync_bn=True), tmp_path)


def test_gradient_accumulation_equals_the_large_batch(random_faces, tmp_path):
    """2 micro-batches of 4 per step = batches of 8 (BN statistics frozen: per-sample, batch-size-free), including
    the step count, the lr schedule and the resume position."""
    import torch

    from utils.checkpoint import load_checkpoint

    def run(batch_size: int, accumulation: int, name: str, **runtime) -> list:
        cfg = tiny_config(random_faces, freeze_bn_stats=True, **runtime)
        cfg["data"]["batch_size"] = batch_size
        cfg["optim"] = {**cfg["optim"], "accumulation_steps": accumulation}
        trainer = Trainer(cfg, tmp_path / name, resume="auto" if runtime.get("max_steps") is None
                          and (tmp_path / name).exists() else None)
        try:
            assert trainer.steps_per_epoch == 6
            return [row["loss"] for row in trainer.fit()["history"]]
        finally:
            trainer.close()

    large = run(8, 1, "large")
    accumulated = run(4, 2, "accumulated")
    assert len(accumulated) == len(large) == 12
    assert accumulated == pytest.approx(large, rel=2e-4)   # float32 summation order (a missing 1/N: ~2x)
    first = load_checkpoint(tmp_path / "large" / "checkpoints" / "last.pt")["model"]
    second = load_checkpoint(tmp_path / "accumulated" / "checkpoints" / "last.pt")["model"]
    for key, value in first.items():
        if value.is_floating_point():
            torch.testing.assert_close(second[key], value, atol=5e-4, rtol=1e-3, msg=key)  # float32 order
    # interrupted after 4 optimiser steps and resumed: the sampler skips 4 × 2 micro-batches
    head = run(4, 2, "resumed", max_steps=4)
    tail = run(4, 2, "resumed")
    assert head + tail == pytest.approx(large, rel=2e-4)
    with pytest.raises(ConfigError, match="optim.accumulation_steps"):
        cfg = tiny_config(random_faces)
        cfg["optim"] = {**cfg["optim"], "accumulation_steps": 0}
        Trainer(cfg, tmp_path / "bad")


def test_persistent_workers_draw_each_epochs_views(random_faces, tmp_path):
    """Loader workers that live across epochs still get each epoch's random occlusion views: the losses equal the
    main-process loader's (workers 0), epoch by epoch."""
    def losses(workers: int, name: str) -> list:
        cfg = tiny_config(random_faces)
        cfg["data"].update({"num_workers": workers, "persistent_workers": True,
                            "occlusion": {"mode": "partial", "fill": "random", "seed": 0}})
        cfg["training_mode"] = {"type": "ConventionalTraining", "input_key": "noisy"}
        trainer = Trainer(cfg, tmp_path / name)
        try:
            history = [row["loss"] for row in trainer.fit()["history"]]
            assert trainer.loader.persistent_workers == (workers > 0)
            return history
        finally:
            trainer.close()

    assert losses(1, "persistent") == pytest.approx(losses(0, "main"), rel=1e-6)
