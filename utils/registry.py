"""A small registry: classes register under a name and are built from ``{"type": name, **kwargs}`` dicts."""
from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, Iterable, Mapping, Optional


class ConfigError(ValueError):
    """A configuration names an unknown type or passes keys its constructor does not accept."""


class Registry:
    """Maps names to classes or factory functions of one kind (backbones, heads, losses, ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: Dict[str, Callable[..., Any]] = {}

    def register(self, name: Optional[str] = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: ``@BACKBONES.register()`` registers under the class name, or under ``name``."""

        def decorator(obj: Callable[..., Any]) -> Callable[..., Any]:
            key = name or obj.__name__
            if key in self._entries and self._entries[key] is not obj:
                raise KeyError(f"{self.kind} '{key}' is registered twice ({self._entries[key]} and {obj})")
            self._entries[key] = obj
            return obj

        return decorator

    def get(self, name: str) -> Callable[..., Any]:
        if name not in self._entries:
            raise ConfigError(f"unknown {self.kind} type '{name}'; registered: {', '.join(sorted(self._entries))}")
        return self._entries[name]

    def names(self) -> list:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterable[str]:
        return iter(self.names())

    def build(self, cfg: Mapping[str, Any], where: str = "", **extra: Any) -> Any:
        """Build ``cfg["type"]`` with the remaining keys (plus ``extra``) as keyword arguments.

        ``where`` names the config section (e.g. ``"head"``) so errors point at the right place.
        """
        if not isinstance(cfg, Mapping) or "type" not in cfg:
            raise ConfigError(f"{where or self.kind}: expected a mapping with a 'type' key, got {cfg!r}")
        kwargs = {k: v for k, v in cfg.items() if k != "type"}
        kwargs.update(extra)
        target = self.get(cfg["type"])
        check_kwargs(target, kwargs, f"{where or self.kind} (type {cfg['type']})")
        return target(**kwargs)


def check_kwargs(target: Callable[..., Any], kwargs: Mapping[str, Any], where: str) -> None:
    """Raise a ConfigError naming every key ``target`` does not accept."""
    signature = inspect.signature(target)
    params = signature.parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return
    accepted = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise ConfigError(f"{where}: unknown config key(s) {unknown}; accepted: {sorted(accepted)}")
