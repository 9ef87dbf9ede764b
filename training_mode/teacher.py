"""The frozen teacher of GFRO (GFRO.md §4): any registered backbone + weights, with its own input contract.

``teacher`` config section::

    teacher:
      backbone: {type: IResNet100}          # needed for a plain state_dict; our checkpoints/exports carry it
      weights: path/to/295672backbone.pth   # see below
      preprocess: {channel_order: RGB, mean: [127.5]*3, std: [127.5]*3}   # default: ElasticFace-Arc's
      strict: true                          # default whenever weights are named

``weights`` may be: an insightface-format state_dict (the ElasticFace-Arc IResNet-100; loads unchanged into our
IResNet) or any plain state_dict of ``backbone``; one of our training checkpoints (``model`` with ``backbone.``
keys, architecture and preprocessing from its stored config); an export folder (``backbone.pt`` +
``model_meta.json``); a released recogniser's file or name (``foamliu_mobilefacenet_ms1m``, …) through
``face_sdk.released``. Architecture and preprocessing come from the section first, then from the weights'
metadata, then (preprocessing only) the ElasticFace-Arc default — RGB, ``(x/255 − 0.5)/0.5``. Every load uses
``weights_only=True`` and strict key matching.

Named weights that are not on disk stop the run at build time with an error naming the path (``strict: true``, the
default whenever ``weights`` is set): a typo must not silently train a different method. The teacher-free fallback
(positives = stop-grad clean student embeddings, GFRO.md §4) happens only when asked for: no ``teacher`` section,
no ``weights``, or ``strict: false`` (then a missing file is a logged warning).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from backbone import build_backbone
from data_processor.preprocess import INSIGHTFACE_SPEC, PreprocessSpec
from utils.checkpoint import load_backbone_weights, load_checkpoint, strip_prefix
from utils.registry import ConfigError

logger = logging.getLogger(__name__)

TEACHER_KEYS = ("backbone", "weights", "preprocess", "strict")
ELASTICFACE_SPEC = INSIGHTFACE_SPEC


class FrozenTeacher(nn.Module):
    """A frozen embedding model: always in eval mode, no gradients, L2-normalised float32 output.

    ``preprocess_spec`` is the teacher's own input contract; callers convert the uint8 RGB batch with it.
    """

    def __init__(self, model: nn.Module, preprocess_spec: PreprocessSpec, source: str = "") -> None:
        super().__init__()
        self.model = model
        self.preprocess_spec = preprocess_spec
        self.source = source
        self.feat_dim = int(getattr(model, "feat_dim", 0)) or None
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "FrozenTeacher":
        """Stays in eval mode whatever the parent asks (its BN statistics and dropout are frozen)."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model(x).float(), dim=1)


def read_checkpoint_backbone(content: Mapping[str, Any], path: Path) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Backbone state_dict of one of our training checkpoints, plus its stored backbone/preprocess config."""
    state = strip_prefix(content["model"], "backbone.")
    if not state:
        raise ValueError(f"{path}: checkpoint 'model' has no 'backbone.' keys")
    config = content.get("config") or {}
    meta: Dict[str, Any] = {}
    if isinstance(config.get("backbone"), Mapping):
        meta["backbone"] = dict(config["backbone"])
    preprocess = (config.get("data") or {}).get("preprocess")
    if isinstance(preprocess, Mapping):
        meta["preprocess"] = dict(preprocess)
    return state, meta


def is_training_checkpoint(content: Any) -> bool:
    return isinstance(content, Mapping) and isinstance(content.get("model"), Mapping)


def load_teacher_model(weights: str, backbone_cfg: Optional[Mapping[str, Any]]
                       ) -> Optional[Tuple[nn.Module, Optional[Dict[str, Any]], str]]:
    """``(model, preprocess dict from the weights or None, source)``, or None when the weights are not on disk."""
    path = Path(weights).expanduser()
    if path.is_dir():
        from face_sdk.recognizer import load_exported_recognizer

        model, meta = load_exported_recognizer(path)
        if backbone_cfg and dict(backbone_cfg) != meta.backbone_config:
            raise ConfigError(f"teacher.backbone {dict(backbone_cfg)} differs from the export's "
                              f"{meta.backbone_config} ({path}/model_meta.json); remove teacher.backbone")
        return model, meta.preprocess.to_dict(), str(path)
    if path.is_file():
        content = load_checkpoint(path)
        meta: Dict[str, Any] = {}
        if is_training_checkpoint(content):
            state, meta = read_checkpoint_backbone(content, path)
        elif backbone_cfg:
            if not isinstance(content, Mapping) or not all(torch.is_tensor(v) for v in content.values()):
                raise ValueError(f"{path}: expected a state_dict (name → tensor) or a training checkpoint with "
                                 f"'model', got {type(content).__name__}")
            state = dict(content)
        else:
            from face_sdk.weights import WeightConversionError

            try:
                return _released_teacher(path)
            except WeightConversionError as error:
                raise ConfigError(f"teacher.backbone is required: {path} is not one of our checkpoints or a "
                                  f"released recogniser ({error})") from None
        architecture = backbone_cfg or meta.get("backbone")
        if not architecture:
            raise ConfigError(f"teacher.backbone is required: {path} does not say which architecture it holds")
        model = build_backbone(dict(architecture))
        load_backbone_weights(model, state, source=f"teacher weights {path}")
        return model, meta.get("preprocess"), str(path)
    from face_sdk.released import RELEASED_RECOGNIZERS

    if str(weights) in RELEASED_RECOGNIZERS:
        try:
            return _released_teacher(str(weights))
        except FileNotFoundError as error:
            logger.warning("teacher weights not found (%s): teacher-free mode", error)
            return None
    logger.warning("teacher weights not found at %s: teacher-free mode (positives are stop-grad clean student "
                   "embeddings)", path)
    return None


def missing_teacher_weights(weights: str) -> Optional[str]:
    """Why ``weights`` cannot be found (a message naming the path), or None when it is on disk."""
    path = Path(weights).expanduser()
    if path.exists():
        return None
    from face_sdk.released import RELEASED_RECOGNIZERS, released_weights_path

    if str(weights) in RELEASED_RECOGNIZERS:
        resolved = released_weights_path(str(weights))
        return None if resolved.is_file() else (f"released recogniser {weights!r}: {resolved} not found (set "
                                                f"FACE_SDK_WEIGHTS_DIR)")
    return f"{path} not found"


def _released_teacher(name_or_path: str | Path) -> Tuple[nn.Module, Dict[str, Any], str]:
    """A released recogniser (by name or file) converted by face_sdk; errors if the file is not one of them."""
    from face_sdk.released import load_released_recognizer

    model, meta = load_released_recognizer(name_or_path)
    return model, meta.preprocess.to_dict(), f"released recogniser {name_or_path}"


def build_teacher(cfg: Optional[Mapping[str, Any]], device: torch.device | str) -> Optional[FrozenTeacher]:
    """Build the frozen teacher from the ``teacher`` section, or return None (teacher-free mode, logged)."""
    if not cfg:
        logger.info("no teacher configured: teacher-free mode: positives are stop-grad clean student embeddings")
        return None
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"teacher: expected a mapping, got {cfg!r}")
    unknown = sorted(set(cfg) - set(TEACHER_KEYS))
    if unknown:
        raise ConfigError(f"teacher: unknown key(s) {unknown}; accepted: {list(TEACHER_KEYS)}")
    strict = cfg.get("strict", True)
    if not isinstance(strict, bool):
        raise ConfigError(f"teacher.strict must be true or false, got {strict!r}")
    if not cfg.get("weights"):
        logger.info("teacher section has no weights: teacher-free mode: positives are stop-grad clean student "
                    "embeddings")
        return None
    if strict:
        missing = missing_teacher_weights(str(cfg["weights"]))
        if missing is not None:
            raise FileNotFoundError(f"teacher.weights: {missing} (teacher.strict is true, the default when weights "
                                    f"are named; set teacher.strict=false to train teacher-free instead)")
    loaded = load_teacher_model(str(cfg["weights"]), cfg.get("backbone"))
    if loaded is None:  # only reachable with strict: false (load_teacher_model logged the teacher-free fallback)
        return None
    model, weights_spec, source = loaded
    spec = teacher_spec(cfg.get("preprocess"), weights_spec)
    teacher = FrozenTeacher(model, spec, source).to(device)
    logger.info("teacher: %s from %s, input %s mean %s std %s, frozen (eval, no grad)", type(model).__name__,
                source, spec.channel_order, list(spec.mean), list(spec.std))
    return teacher


def teacher_spec(configured: Optional[Mapping[str, Any]], from_weights: Optional[Mapping[str, Any]]) -> PreprocessSpec:
    """``teacher.preprocess`` if set, else the weights' own spec, else ElasticFace-Arc's (RGB, 127.5/127.5)."""
    if configured:
        try:
            return PreprocessSpec.from_dict(configured)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"teacher.preprocess: {error}") from None
    if from_weights:
        return PreprocessSpec.from_dict(from_weights)
    return ELASTICFACE_SPEC
