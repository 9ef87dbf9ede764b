"""Loss registry (contrastive, distillation, MoE balance, ...)."""
import importlib
import pkgutil

from utils.registry import Registry

LOSSES = Registry("loss")

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
