"""Margin-head registry. Heads take (embeddings, labels) and return ``{"logits": ..., optional "aux_loss": ...}``."""
import importlib
import pkgutil

from utils.registry import Registry

HEADS = Registry("head")


def build_head(cfg: dict, feat_dim: int, num_class: int):
    """``num_class`` comes from the data and ``feat_dim`` from the backbone; the config may not set them."""
    for key in ("num_class", "feat_dim"):
        if key in cfg:
            raise ValueError(f"head.{key} is set by the toolbox (from the data / backbone); remove it from the config")
    return HEADS.build(cfg, where="head", feat_dim=feat_dim, num_class=num_class)


for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
