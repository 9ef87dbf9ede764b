"""Training modes: ``nn.Module``s whose forward is ``compute_loss(batch)``; one Trainer runs them all."""
import importlib
import pkgutil

from utils.registry import Registry

TRAINING_MODES = Registry("training_mode")

for _module in pkgutil.iter_modules(__path__):
    if not _module.ispkg and not _module.name.startswith("_") and _module.name != "trainer":
        importlib.import_module(f"{__name__}.{_module.name}")
