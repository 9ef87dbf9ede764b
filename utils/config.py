"""YAML configs: ``_base_`` inheritance (a file or a list, merged in order; bases may have bases), sections named
by fragment (``backbone: iresnet50`` = ``configs/backbone/iresnet50.yaml``), ``a.b=c`` overrides, a resolved dump.

Composition order of one file: its ``_base_`` files (each composed the same way, merged left to right), then the
file's own sections, whose string values in ``FRAGMENT_SECTIONS`` are first replaced by the named fragment. A
``type`` change replaces a section instead of merging into it. Overrides apply last.
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import yaml

from utils.registry import ConfigError

logger = logging.getLogger(__name__)

TOP_LEVEL_SECTIONS = (
    "data", "backbone", "head", "loss", "training_mode", "teacher", "optim", "schedule", "eval", "runtime",
)
CONFIG_ROOT = Path(__file__).resolve().parents[1] / "configs"
FRAGMENT_SECTIONS: Dict[str, str] = {  # section path -> folder of configs/ whose NAME.yaml a string value names
    "data.train": "data",
    "backbone": "backbone",
    "backbone.trunk": "backbone",
    "teacher.backbone": "backbone",
    "head": "head",
}
TYPED_SECTIONS: Dict[str, Tuple[str, str]] = {  # section path -> (module, registry) that builds its ``type``
    "data.train": ("data_processor", "DATASETS"),
    "backbone": ("backbone", "BACKBONES"),
    "backbone.trunk": ("backbone", "BACKBONES"),
    "teacher.backbone": ("backbone", "BACKBONES"),
    "head": ("head", "HEADS"),
    "training_mode": ("training_mode", "TRAINING_MODES"),
}


def load_yaml(path: Path) -> Dict[str, Any]:
    try:
        with open(path, "r", encoding="utf-8") as handle:
            content = yaml.safe_load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(content).__name__}")
    return content


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> Dict[str, Any]:
    """Deep-merge ``update`` into a copy of ``base``; a ``type`` change replaces the whole section."""
    merged = copy.deepcopy(dict(base))
    for key, value in update.items():
        old = merged.get(key)
        replace_section = isinstance(value, Mapping) and isinstance(old, Mapping) and (
            "type" in value and value.get("type") != old.get("type"))
        if isinstance(value, Mapping) and isinstance(old, Mapping) and not replace_section:
            merged[key] = merge(old, value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def available_fragments(folder: str) -> List[str]:
    """Names usable as ``<section>: NAME`` for ``configs/<folder>/NAME.yaml``."""
    return sorted(p.stem for p in (CONFIG_ROOT / folder).glob("*.yaml"))


def load_fragment(section: str, name: str, relative_to: Optional[Path] = None) -> Dict[str, Any]:
    """The mapping a string ``name`` stands for in ``section``: ``configs/<folder>/<name>.yaml``, or a ``.yaml``
    path (relative to ``relative_to``, the folder of the file that names it)."""
    folder = FRAGMENT_SECTIONS[section]
    if name.endswith((".yaml", ".yml")):
        path = Path(name) if relative_to is None else relative_to / name
    else:
        path = CONFIG_ROOT / folder / f"{name}.yaml"
        if not path.is_file():
            raise ConfigError(f"{section}: unknown fragment {name!r}; available in configs/{folder}/: "
                              f"{', '.join(available_fragments(folder)) or 'none'}")
    content = load_yaml(path)
    if "_base_" in content:
        raise ConfigError(f"{path}: a section fragment may not have a _base_")
    return content


def _get(cfg: Mapping[str, Any], dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def resolve_fragments(cfg: Dict[str, Any], relative_to: Optional[Path] = None) -> Dict[str, Any]:
    """Replace every string at a ``FRAGMENT_SECTIONS`` path of ``cfg`` (in place) by the fragment it names."""
    for dotted in sorted(FRAGMENT_SECTIONS, key=lambda d: d.count(".")):  # outer sections first
        value = _get(cfg, dotted)
        if isinstance(value, str):
            *parents, last = dotted.split(".")
            node = cfg
            for part in parents:
                node = node[part]
            node[last] = resolve_fragments_in(dotted, load_fragment(dotted, value, relative_to))
    return cfg


def resolve_fragments_in(section: str, fragment: Dict[str, Any]) -> Dict[str, Any]:
    """Strings inside a loaded fragment (``trunk: iresnet50`` in a backbone fragment) resolve too."""
    for dotted in FRAGMENT_SECTIONS:
        if dotted.startswith(section + "."):
            rest = dotted[len(section) + 1:]
            value = _get(fragment, rest)
            if isinstance(value, str):
                *parents, last = rest.split(".")
                node = fragment
                for part in parents:
                    node = node[part]
                node[last] = resolve_fragments_in(dotted, load_fragment(dotted, value))
    return fragment


def _base_list(value: Any, path: Path) -> List[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ConfigError(f"{path}: _base_ must be a file name or a list of file names, got {value!r}")


def compose(path: Path, chain: Tuple[Path, ...] = ()) -> Dict[str, Any]:
    """``path`` merged over its bases (recursively, cycles are errors naming the chain), fragments resolved."""
    resolved = path.resolve()
    if resolved in chain:
        names = " -> ".join(str(p) for p in (*chain[chain.index(resolved):], resolved))
        raise ConfigError(f"_base_ cycle: {names}")
    cfg = load_yaml(path)
    cfg_bases = _base_list(cfg.pop("_base_", None), path)
    merged: Dict[str, Any] = {}
    for base_name in cfg_bases:
        base_path = path.parent / base_name
        if not base_path.is_file():
            raise ConfigError(f"{path}: _base_ {base_name!r} not found (looked for {base_path})")
        merged = merge(merged, compose(base_path, (*chain, resolved)))
    return merge(merged, resolve_fragments(cfg, path.parent))


def load_config(path: str | Path, overrides: Optional[Iterable[str]] = None) -> Dict[str, Any]:
    """Compose ``path`` (bases, fragments), validate its sections, apply ``a.b=c`` overrides."""
    path = Path(path)
    cfg = compose(path)
    unknown = sorted(set(cfg) - set(TOP_LEVEL_SECTIONS))
    if unknown:
        raise ConfigError(f"{path}: unknown top-level section(s) {unknown}; "
                          f"expected a subset of {list(TOP_LEVEL_SECTIONS)}")
    for override in overrides or ():
        apply_override(cfg, override)
    return cfg


def accepted_keys(section: str, type_name: str) -> Optional[set]:
    """Constructor keys of ``type_name`` in the registry building ``section``; None when anything goes."""
    import importlib
    import inspect

    module_name, registry_name = TYPED_SECTIONS[section]
    if module_name == "data_processor":
        from data_processor.train_dataset import register_dataset_modules
        register_dataset_modules()
    registry = getattr(importlib.import_module(module_name), registry_name)
    params = inspect.signature(registry.get(type_name)).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def apply_override(cfg: Dict[str, Any], override: str) -> None:
    """Apply ``a.b=c`` (value parsed as YAML). The key must exist unless written ``+a.b=c``.

    ``backbone=iresnet18`` (a fragment name for a ``FRAGMENT_SECTIONS`` path) merges that fragment into the
    section; ``data.train.type=RecordIODataset`` (a type change of a ``TYPED_SECTIONS`` section) drops the keys the
    new type does not accept (logged), so the remaining ones (``root``) can then be overridden.
    """
    if "=" not in override:
        raise ConfigError(f"override '{override}': expected the form a.b=value")
    key, raw_value = override.split("=", 1)
    allow_new = key.startswith("+")
    key = key.lstrip("+")
    try:
        value = yaml.safe_load(raw_value) if raw_value != "" else ""
    except yaml.YAMLError:
        value = raw_value
    parts = key.split(".")
    node: Any = cfg
    for depth, part in enumerate(parts[:-1]):
        if not isinstance(node, dict):
            raise ConfigError(f"override '{override}': '{'.'.join(parts[:depth])}' is not a section")
        if part not in node:
            if not allow_new:
                raise ConfigError(f"override '{override}': unknown key '{'.'.join(parts[:depth + 1])}' "
                                  f"(use +{key}=... to add it)")
            node[part] = {}
        node = node[part]
    if not isinstance(node, dict):
        raise ConfigError(f"override '{override}': '{'.'.join(parts[:-1])}' is not a section")
    if parts[-1] not in node and not allow_new:
        raise ConfigError(f"override '{override}': unknown key '{key}' (use +{key}=... to add it)")
    if key in FRAGMENT_SECTIONS and isinstance(value, str):
        fragment = resolve_fragments_in(key, load_fragment(key, value))
        old = node.get(parts[-1])
        node[parts[-1]] = merge({"section": old}, {"section": fragment})["section"]  # type change: replaced
        return
    if isinstance(value, dict):  # 'teacher={backbone: iresnet100, ...}': fragment names inside resolve too
        value = resolve_fragments_in(key, value)
    section = ".".join(parts[:-1])
    if parts[-1] == "type" and section in TYPED_SECTIONS and node.get("type") != value and isinstance(value, str):
        accepted = accepted_keys(section, value)
        if accepted is not None:
            dropped = sorted(k for k in node if k != "type" and k not in accepted)
            for name in dropped:
                del node[name]
            if dropped:
                logger.info("override %s: dropped %s.%s (not accepted by %s)", override, section,
                            "/".join(dropped), value)
    node[parts[-1]] = value


def dump_config(cfg: Mapping[str, Any], path: str | Path) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(dict(cfg), handle, sort_keys=False)
