"""``model_meta.json``: everything needed to rebuild and feed an exported or released recogniser.

Schema (version 1; the Trainer's ``export/model_meta.json`` is a valid instance)::

    {
      "format_version": 1,                                   # optional, default 1
      "name": "foamliu_mobilefacenet_ms1m",                  # optional
      "arch": "MobileFaceNetReLU6",                          # a registered backbone
      "kwargs": {"feat_dim": 128, "input_size": [112, 112]}, # its constructor arguments
      "embedding_dim": 128,
      "preprocess": {"channel_order": "RGB", "mean": [...], "std": [...], "input_size": [112, 112],
                     "template": "arcface_112x112"},
      "template": "arcface_112x112",                         # optional; must equal preprocess.template
      "weights": "backbone.pt",                              # state_dict next to the json (no key prefixes)
      "source": "...", "notes": "...",                       # optional provenance text
      "training_data": ..., "num_train_classes": ..., "training_mode": ..., "git_rev": ..., "config": ...,
      "results": ..., "extra": {...},                        # optional provenance, kept as given
      "trained_families": ["partial"]                        # optional: occluder families seen in training
                                                             # (data_processor/occlusion/families.py)
    }

``preprocess`` is a ``data_processor.preprocess.PreprocessSpec`` — the one normalisation contract. Any other key
is an error naming the file and the key.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping

from data_processor.landmarks import TEMPLATES
from data_processor.preprocess import PreprocessSpec
from utils.checkpoint import atomic_write_text

FORMAT_VERSION = 1
REQUIRED_KEYS = ("arch", "embedding_dim", "preprocess")
TEXT_KEYS = ("name", "weights", "source", "notes")
PROVENANCE_KEYS = ("training_data", "num_train_classes", "training_mode", "git_rev", "config", "results", "extra",
                   "trained_families")
OTHER_KEYS = ("format_version", "kwargs", "template")
ALLOWED_KEYS = REQUIRED_KEYS + TEXT_KEYS + PROVENANCE_KEYS + OTHER_KEYS


@dataclass(frozen=True)
class ModelMeta:
    """Architecture (registered backbone + kwargs), embedding size and input contract of one recogniser."""

    arch: str
    embedding_dim: int
    preprocess: PreprocessSpec
    kwargs: Dict[str, Any] = field(default_factory=dict)
    name: str = ""
    weights: str = "backbone.pt"
    source: str = ""
    notes: str = ""
    provenance: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"model meta '{self.name or self.arch}'"
        if not self.arch or not isinstance(self.arch, str):
            raise ValueError(f"{where}: 'arch' must name a registered backbone, got {self.arch!r}")
        if not isinstance(self.kwargs, Mapping):
            raise ValueError(f"{where}: 'kwargs' must be a mapping, got {self.kwargs!r}")
        if self.preprocess.template not in TEMPLATES:
            raise ValueError(f"{where}: unknown template {self.preprocess.template!r}; known: {sorted(TEMPLATES)}")
        if int(self.embedding_dim) <= 0:
            raise ValueError(f"{where}: embedding_dim must be positive, got {self.embedding_dim}")
        unknown = sorted(set(self.provenance) - set(PROVENANCE_KEYS))
        if unknown:
            raise ValueError(f"{where}: unknown provenance key(s) {unknown}; allowed: {list(PROVENANCE_KEYS)}")

    @property
    def backbone_config(self) -> Dict[str, Any]:
        """``{"type": arch, **kwargs}`` for ``backbone.build_backbone``."""
        return {"type": self.arch, **self.kwargs}

    @property
    def template(self) -> str:
        return self.preprocess.template

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "arch": self.arch,
            "kwargs": dict(self.kwargs),
            "embedding_dim": int(self.embedding_dim),
            "preprocess": self.preprocess.to_dict(),
            "template": self.preprocess.template,
            "weights": self.weights,
            "source": self.source,
            "notes": self.notes,
        }
        out.update(self.provenance)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "model_meta") -> "ModelMeta":
        """Validate keys and build; errors name ``where`` (usually the json path) and the offending key."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{where}: expected a JSON object, got {type(data).__name__}")
        missing = [k for k in REQUIRED_KEYS if k not in data]
        if missing:
            raise ValueError(f"{where}: missing key(s) {missing}; required: {list(REQUIRED_KEYS)}")
        unknown = sorted(set(data) - set(ALLOWED_KEYS))
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {list(ALLOWED_KEYS)}")
        version = data.get("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise ValueError(f"{where}: key 'format_version' is {version!r}, expected {FORMAT_VERSION}")
        try:
            spec = PreprocessSpec.from_dict(data["preprocess"])
        except (TypeError, ValueError) as error:
            raise ValueError(f"{where}: key 'preprocess': {error}") from None
        if "template" in data and data["template"] != spec.template:
            raise ValueError(f"{where}: key 'template' is {data['template']!r} but preprocess.template is "
                             f"{spec.template!r}")
        try:
            return cls(
                arch=data["arch"],
                embedding_dim=int(data["embedding_dim"]),
                preprocess=spec,
                kwargs=dict(data.get("kwargs") or {}),
                provenance={k: data[k] for k in PROVENANCE_KEYS if k in data},
                **{k: str(data[k]) for k in TEXT_KEYS if k in data},
            )
        except (TypeError, ValueError) as error:
            raise ValueError(f"{where}: {error}") from None


def read_model_meta(path: str | Path) -> ModelMeta:
    """Read and validate a ``model_meta.json``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model meta not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}:{error.lineno}: invalid JSON: {error.msg}") from None
    return ModelMeta.from_dict(data, where=str(path))


def write_model_meta(path: str | Path, meta: ModelMeta) -> None:
    """Write ``meta`` as pretty JSON, atomically."""
    atomic_write_text(path, json.dumps(meta.to_dict(), indent=2) + "\n")
