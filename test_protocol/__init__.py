"""Evaluation protocols (objects with ``image_paths`` / ``process`` / ``compute``) and pairs-file parsers.

``PROTOCOLS`` holds the protocol classes (``PairVerification``, ``MeGlassProtocol``, ...), ``PAIRS_PARSERS`` the
functions that turn an official pairs file into a ``PairList`` (``lfw``, ``rfw``, ``calfw``, ``cplfw``,
``agedb_mat``, ``bin``). Every module of this package registers itself on import; command-line scripts
(``test_*``) and sub-packages (the occluded-test-set builders in ``lfw/``) are not imported here.
"""
import importlib
import pkgutil

from utils.registry import Registry

PROTOCOLS = Registry("protocol")
PAIRS_PARSERS = Registry("pairs parser")

for _module in pkgutil.iter_modules(__path__):
    if not (_module.ispkg or _module.name.startswith(("_", "test_"))):
        importlib.import_module(f"{__name__}.{_module.name}")
for _package in ("megaface", "ijb"):  # protocol sub-packages (MegaFaceProtocol, IJBProtocol) register on import too
    importlib.import_module(f"{__name__}.{_package}")
