"""The evaluation sets of ``data_conf.yaml``, with their paths resolved.

Paths: a bare relative path is under ``$FACE_DATA_ROOT`` (default: the repository's ``data_cache/``); a path
starting with ``${SHARED_ROOT}`` is under ``$SHARED_ROOT`` (default: ``../shared`` next to the repository) and
``${FACE_DATA_ROOT}`` may be written explicitly; an absolute path (or ``~/...``) is used as it is — a user's own
``data_conf.yaml`` may point at data wherever it lives (the shipped file uses none, so it works on any machine).
Every entry holds the keyword arguments of a protocol in ``PROTOCOLS`` (``type`` defaults to ``PairVerification``)
plus an optional ``builder``: the routine that creates an embedded synthetic set when its pairs file is missing
(``synthetic_faces``, ``synthetic_occluded[:KIND]`` from the synthetic test faces, ``synthetic_occluded_val:KIND``
from the synthetic val faces; an occluded set without its ``hidden_fraction.txt``, written by an older builder, is
rebuilt too), and an optional ``split``: ``test`` (default) or ``val`` — the validation sets, identities disjoint from
train and test, the only place settings are chosen. Every evaluation row carries its set's split.

``protocol_config("SYNTH")`` is what a protocol list (``eval.protocols`` or ``test_lfw_adapt``) uses: the entry,
resolved, built if needed, ready for ``PROTOCOLS.build``. In a config, ``{set: SYNTH-MASK, variant: both}`` names it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from utils.config import load_yaml
from utils.registry import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("test", "val")
DEFAULT_SPLIT = "test"
DATA_CONF = Path(__file__).with_name("data_conf.yaml")
PATH_KEYS = ("root", "pairs_file", "lists_dir")


def data_roots() -> Dict[str, Path]:
    """``{"FACE_DATA_ROOT": ..., "SHARED_ROOT": ...}`` from the environment or their defaults."""
    return {
        "FACE_DATA_ROOT": Path(os.environ.get("FACE_DATA_ROOT") or REPO_ROOT / "data_cache"),
        "SHARED_ROOT": Path(os.environ.get("SHARED_ROOT") or REPO_ROOT.parent / "shared"),
    }


def resolve_path(value: str, roots: Dict[str, Path], where: str) -> str:
    """``${VAR}/rest`` → roots[VAR]/rest; absolute (or ``~/``) → itself; bare relative → FACE_DATA_ROOT/value.
    Any other ``$`` (``$HOME/x``, ``a/${X}``) is an error: only the two roots above are variables here."""
    if value.startswith("${"):
        variable, _, rest = value[2:].partition("}")
        if variable not in roots:
            raise ConfigError(f"{where}: unknown variable ${{{variable}}}; known: {sorted(roots)}")
        return str(roots[variable] / rest.lstrip("/"))
    if "$" in value:
        raise ConfigError(f"{where}: a path is absolute, relative to $FACE_DATA_ROOT, or starts with ${{SHARED_ROOT}} "
                          f"or ${{FACE_DATA_ROOT}}; got {value!r}")
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else roots["FACE_DATA_ROOT"] / value)


def build_embedded_set(builder: str) -> None:
    """Create an embedded synthetic set under ``$FACE_DATA_ROOT`` (``builder`` of a data_conf entry)."""
    face_data_root = data_roots()["FACE_DATA_ROOT"]
    if builder == "synthetic_faces":
        from data_processor.synthetic_faces import ensure_synthetic_faces

        ensure_synthetic_faces(face_data_root / "synthetic_faces")
    elif builder.partition(":")[0] in ("synthetic_occluded", "synthetic_occluded_val"):
        # "synthetic_occluded" builds the default kinds (mask, sunglasses, crop); "synthetic_occluded:KIND" one kind;
        # "synthetic_occluded_val:KIND" one kind from the val split (into synthetic_occluded_val/KIND)
        from test_protocol.lfw.occluded_set_builder import SYNTHETIC_KINDS, ensure_synthetic_occluded

        source, kind = builder.partition(":")[::2]
        split, out = ("val", "synthetic_occluded_val") if source == "synthetic_occluded_val" else ("test", source)
        if split == "val" and not kind:
            raise ConfigError(f"data_conf.yaml: builder {builder!r} needs a kind (synthetic_occluded_val:KIND)")
        if not (face_data_root / "synthetic_faces" / split / "pairs.txt").is_file():
            build_embedded_set("synthetic_faces")
        ensure_synthetic_occluded(face_data_root / "synthetic_faces" / split, face_data_root / out,
                                  kinds=(kind,) if kind else SYNTHETIC_KINDS)
    else:
        raise ConfigError(f"data_conf.yaml: unknown builder {builder!r}; known: synthetic_faces, synthetic_occluded, "
                          f"synthetic_occluded:KIND, synthetic_occluded_val:KIND")


def needs_build(builder: str, pairs_file: Path) -> bool:
    """Does an embedded set have to be (re)built: its pairs file is missing, or it is an occluded set written
    before ``hidden_fraction.txt`` existed."""
    if not pairs_file.is_file():
        return True
    return builder.startswith("synthetic_occluded") and not (pairs_file.parent / "hidden_fraction.txt").is_file()


def protocol_config(entry: Dict[str, Any]) -> Dict[str, Any]:
    """A resolved data_conf entry → protocol config: its builder runs first when the set must be built
    (``needs_build``). ``split`` stays in the config (``evaluate.build_protocols`` takes it off and tags rows)."""
    entry = dict(entry)
    builder = entry.pop("builder", None)
    if builder and needs_build(builder, Path(entry.get("pairs_file", ""))):
        build_embedded_set(builder)
    return entry


def load_data_conf(path: Optional[Path] = None, sets: Optional[Sequence[str]] = None) -> List[Dict[str, Any]]:
    """The entries of ``path`` (default ``test_protocol/data_conf.yaml``) named in ``sets`` (default: all).

    Each returned dict has ``name`` plus the resolved protocol keys (and ``builder`` if the entry names one).
    """
    path = Path(path or DATA_CONF)
    content = load_yaml(path)
    entries = content.get("sets")
    if not isinstance(entries, dict) or not entries:
        raise ConfigError(f"{path}: expected a non-empty 'sets' mapping of name -> protocol keys")
    wanted = list(entries) if sets is None else list(sets)
    unknown = [name for name in wanted if name not in entries]
    if unknown:
        raise ConfigError(f"{path}: unknown set(s) {unknown}; defined: {', '.join(entries)}")
    roots = data_roots()
    resolved = []
    for name in wanted:
        entry = dict(entries[name] or {})
        if entry.get("split", DEFAULT_SPLIT) not in SPLITS:
            raise ConfigError(f"{path}: sets.{name}.split: expected one of {SPLITS}, got {entry['split']!r}")
        for key in PATH_KEYS:
            if key in entry:
                entry[key] = resolve_path(str(entry[key]), roots, f"{path}: sets.{name}.{key}")
        resolved.append({"name": name, **entry})
    return resolved


def set_config(name: str, conf: Optional[Path] = None) -> Dict[str, Any]:
    """The protocol config of data_conf set ``name`` (built first if it is an embedded set that is missing)."""
    return protocol_config(load_data_conf(conf, [name])[0])
