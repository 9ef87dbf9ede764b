"""Learning-rate schedules and optimiser construction."""
import pytest
import torch

from training_mode.schedule import build_optimizer, build_scheduler, lr_factor
from utils.registry import ConfigError


def test_multistep_with_warmup():
    cfg = {"type": "multistep", "epochs": 4, "milestones": [2, 3], "gamma": 0.1, "warmup_epochs": 1}
    steps = 10
    assert lr_factor(0, steps, cfg) == pytest.approx(0.1)
    assert lr_factor(9, steps, cfg) == pytest.approx(1.0)
    assert lr_factor(15, steps, cfg) == pytest.approx(1.0)
    assert lr_factor(20, steps, cfg) == pytest.approx(0.1)
    assert lr_factor(35, steps, cfg) == pytest.approx(0.01)


def test_cosine_reaches_floor():
    cfg = {"type": "cosine", "epochs": 2, "min_lr_ratio": 0.01}
    assert lr_factor(0, 10, cfg) == pytest.approx(1.0)
    assert lr_factor(20, 10, cfg) == pytest.approx(0.01)
    assert 0.01 < lr_factor(10, 10, cfg) < 1.0


def test_optimizer_skips_frozen_and_rejects_unknown_keys():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    model[1].weight.requires_grad_(False)
    opt = build_optimizer({"type": "SGD", "lr": 0.1, "momentum": 0.9, "no_decay_bn_bias": True}, [model])
    params = [p for g in opt.param_groups for p in g["params"]]
    assert len(params) == 3
    assert opt.param_groups[1]["weight_decay"] == 0.0
    with pytest.raises(ConfigError, match="unknown config key"):
        build_optimizer({"type": "SGD", "lr": 0.1, "momentumm": 0.9}, [model])
    with pytest.raises(ConfigError, match="unknown key"):
        build_scheduler(opt, {"type": "cosine", "epochs": 1, "milestone": [1]}, 10)
