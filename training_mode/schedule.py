"""Optimisers and per-step learning-rate schedules (warmup + multistep / cosine) built from config."""
from __future__ import annotations

import math
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Tuple

import torch
from torch import nn

from utils.registry import ConfigError, check_kwargs

OPTIMIZERS = {"SGD": torch.optim.SGD, "AdamW": torch.optim.AdamW, "Adam": torch.optim.Adam}


def build_optimizer(cfg: Mapping[str, Any], modules: Iterable[nn.Module]) -> torch.optim.Optimizer:
    """``optim: {type: SGD|AdamW, lr, ..., no_decay_bn_bias: false, layer_decay: null}``; frozen parameters are
    left out. ``no_decay_bn_bias`` also exempts the names a module lists in ``no_weight_decay()`` (e.g. a ViT's
    pos_embed); ``layer_decay`` (see ``layer_decay_groups``) needs modules with ``layer_id(name)``."""
    cfg = dict(cfg)
    name = cfg.pop("type", "SGD")
    if name not in OPTIMIZERS:
        raise ConfigError(f"optim.type '{name}' unknown; choose from {sorted(OPTIMIZERS)}")
    no_decay_bn_bias = bool(cfg.pop("no_decay_bn_bias", False))
    layer_decay = cfg.pop("layer_decay", None)
    cfg.pop("grad_clip", None)
    check_kwargs(OPTIMIZERS[name], cfg, f"optim (type {name})")
    if layer_decay is not None:
        return OPTIMIZERS[name](layer_decay_groups(list(modules), layer_decay, no_decay_bn_bias, cfg.get("lr")), **cfg)
    decay: List[nn.Parameter] = []
    no_decay: List[nn.Parameter] = []
    for _, _, param, skip_decay in trainable_parameters(modules, no_decay_bn_bias):
        (no_decay if skip_decay else decay).append(param)
    groups: List[Dict[str, Any]] = [{"params": decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return OPTIMIZERS[name](groups, **cfg)


def trainable_parameters(modules: Iterable[nn.Module], no_decay_bn_bias: bool
                         ) -> Iterator[Tuple[nn.Module, str, nn.Parameter, bool]]:
    """(module, name, parameter, exempt from weight decay) of every trainable parameter, each once; exempt with
    ``no_decay_bn_bias``: 1-D parameters (BN, biases) and the names the module lists in ``no_weight_decay()``."""
    seen = set()
    for module in modules:
        exempt = set(module.no_weight_decay()) if no_decay_bn_bias and hasattr(module, "no_weight_decay") else set()
        for name, param in module.named_parameters():
            if param.requires_grad and id(param) not in seen:
                seen.add(id(param))
                yield module, name, param, no_decay_bn_bias and (param.ndim <= 1 or name in exempt)


def layer_decay_groups(modules: List[nn.Module], layer_decay: Any, no_decay_bn_bias: bool,
                       lr: Any) -> List[Dict[str, Any]]:
    """``optim.layer_decay`` (e.g. 0.75, BEiT/MAE fine-tuning): parameter groups whose lr is
    ``lr · layer_decay^(top − layer_id)``. A module with ``layer_id(param_name) -> int`` places its parameters; every
    other parameter is at the top (the largest id any module returns, scale 1). Groups also split on weight decay
    (``no_decay_bn_bias``: 1-D parameters and the module's ``no_weight_decay()`` names get 0); each group records
    its ``lr_scale`` and ``layer_id``."""
    if isinstance(layer_decay, bool) or not isinstance(layer_decay, (int, float)) or not 0 < layer_decay <= 1:
        raise ConfigError(f"optim.layer_decay: expected a number in (0, 1], got {layer_decay!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)):
        raise ConfigError(f"optim.layer_decay needs optim.lr as a number, got {lr!r}")
    if not any(hasattr(module, "layer_id") for module in modules):
        raise ConfigError("optim.layer_decay: no trained module defines layer_id(param_name) (a ViT backbone does)")
    placed = [(param, int(module.layer_id(name)) if hasattr(module, "layer_id") else None, skip_decay)
              for module, name, param, skip_decay in trainable_parameters(modules, no_decay_bn_bias)]
    top = max(layer for _, layer, _ in placed if layer is not None)
    groups: Dict[tuple, Dict[str, Any]] = {}
    for param, layer, skip_decay in placed:
        layer = top if layer is None else layer
        scale = float(layer_decay) ** (top - layer)
        group = groups.setdefault((layer, skip_decay), {"params": [], "lr": float(lr) * scale, "lr_scale": scale,
                                                        "layer_id": layer})
        if skip_decay:
            group["weight_decay"] = 0.0
        group["params"].append(param)
    return [groups[key] for key in sorted(groups)]


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
