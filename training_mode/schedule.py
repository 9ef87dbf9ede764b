"""Optimisers and per-step learning-rate schedules (warmup + multistep / cosine) built from config."""
from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List, Mapping

import torch
from torch import nn

from utils.registry import ConfigError, check_kwargs

OPTIMIZERS = {"SGD": torch.optim.SGD, "AdamW": torch.optim.AdamW, "Adam": torch.optim.Adam}


def build_optimizer(cfg: Mapping[str, Any], modules: Iterable[nn.Module]) -> torch.optim.Optimizer:
    """``optim: {type: SGD|AdamW, lr, ..., no_decay_bn_bias: false}``; frozen parameters are left out."""
    cfg = dict(cfg)
    name = cfg.pop("type", "SGD")
    if name not in OPTIMIZERS:
        raise ConfigError(f"optim.type '{name}' unknown; choose from {sorted(OPTIMIZERS)}")
    no_decay_bn_bias = bool(cfg.pop("no_decay_bn_bias", False))
    cfg.pop("grad_clip", None)
    check_kwargs(OPTIMIZERS[name], cfg, f"optim (type {name})")
    decay: List[nn.Parameter] = []
    no_decay: List[nn.Parameter] = []
    seen = set()
    for module in modules:
        for param in module.parameters():
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            (no_decay if no_decay_bn_bias and param.ndim <= 1 else decay).append(param)
    groups: List[Dict[str, Any]] = [{"params": decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return OPTIMIZERS[name](groups, **cfg)


def lr_factor(step: int, steps_per_epoch: int, cfg: Mapping[str, Any]) -> float:
    """Multiplier of the base lr at optimiser step ``step`` (0-based)."""
    epochs = float(cfg["epochs"])
    warmup_steps = int(float(cfg.get("warmup_epochs", 0)) * steps_per_epoch)
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    kind = cfg.get("type", "multistep")
    epoch_progress = step / steps_per_epoch
    if kind == "multistep":
        passed = sum(1 for milestone in cfg.get("milestones", []) if epoch_progress >= milestone)
        return float(cfg.get("gamma", 0.1)) ** passed
    if kind == "cosine":
        total = max(1, int(epochs * steps_per_epoch) - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / total)
        floor = float(cfg.get("min_lr_ratio", 0.0))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    if kind == "constant":
        return 1.0
    raise ConfigError(f"schedule.type '{kind}' unknown; choose multistep, cosine or constant")


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Mapping[str, Any],
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    known = {"type", "epochs", "milestones", "gamma", "warmup_epochs", "min_lr_ratio"}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ConfigError(f"schedule: unknown key(s) {unknown}; accepted: {sorted(known)}")
    lr_factor(0, steps_per_epoch, cfg)  # validates the type early
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, steps_per_epoch, cfg))
