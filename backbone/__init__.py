"""Backbone registry. Every module in this package registers its models on import: adding a model is adding a file."""
import importlib
import pkgutil

from utils.registry import Registry

BACKBONES = Registry("backbone")


def build_backbone(cfg: dict):
    return BACKBONES.build(cfg, where="backbone")


for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
