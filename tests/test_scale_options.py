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
