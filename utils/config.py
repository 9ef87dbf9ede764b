"""YAML configs with one ``_base_`` level, ``a.b=c`` overrides and a resolved dump."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional

import yaml

from utils.registry import ConfigError

TOP_LEVEL_SECTIONS = (
    "data", "backbone", "head", "loss", "training_mode", "teacher", "optim", "schedule", "eval", "runtime",
)


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


def load_config(path: str | Path, overrides: Optional[Iterable[str]] = None) -> Dict[str, Any]:
    """Read ``path``, merge it over its ``_base_`` file (one level), validate sections, apply overrides."""
    path = Path(path)
    cfg = load_yaml(path)
    base_name = cfg.pop("_base_", None)
    if base_name is not None:
        base_path = (path.parent / base_name).resolve()
        base = load_yaml(base_path)
        if "_base_" in base:
            raise ConfigError(f"{base_path}: a base config may not have its own _base_ (one level only)")
        cfg = merge(base, cfg)
    unknown = sorted(set(cfg) - set(TOP_LEVEL_SECTIONS))
    if unknown:
        raise ConfigError(f"{path}: unknown top-level section(s) {unknown}; "
                          f"expected a subset of {list(TOP_LEVEL_SECTIONS)}")
    for override in overrides or ():
        apply_override(cfg, override)
    return cfg


def apply_override(cfg: Dict[str, Any], override: str) -> None:
    """Apply ``a.b=c`` (value parsed as YAML). The key must exist unless written ``+a.b=c``."""
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
    node[parts[-1]] = value


def dump_config(cfg: Mapping[str, Any], path: str | Path) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(dict(cfg), handle, sort_keys=False)
