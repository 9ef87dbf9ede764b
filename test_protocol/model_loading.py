"""Models to evaluate: an export folder, its ONNX graph, a training checkpoint, or the newest run under ``work_dirs/``.

- export folder: ``backbone.pt`` (prefix-free state_dict) + ``model_meta.json`` (``face_sdk.model_meta``);
- ONNX: ``model.onnx`` of an export folder (``python -m utils.export_onnx``), run by onnxruntime, fed per the
  ``model_meta.json`` beside it;
- training checkpoint (``checkpoints/last.pt``): ``config`` (resolved) + ``model`` (``backbone.*``, ``head.*``);
  the backbone is built from ``config["backbone"]`` and fed per ``config["data"]["preprocess"]``.
Checkpoint selection rule (printed by the caller): the *last* checkpoint of a run, never the best on a test set.

The occluder families the model trained on (``LoadedModel.trained_families``, what rows are tagged seen / held_out
against): an export's ``model_meta.json`` key ``trained_families``; a checkpoint's ``trained_families`` entry, else
``trained_families(config["data"]["occlusion"])`` of its resolved config; ``None`` (unknown) otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Mapping, Optional

import torch

from backbone import build_backbone
from data_processor.preprocess import PreprocessSpec
from face_sdk.recognizer import load_exported_recognizer
from utils.checkpoint import load_backbone_weights, load_checkpoint, strip_prefix

SELECTION_RULE = "last checkpoint of the run (export/ when present, else checkpoints/last.pt); no test-set selection"


@dataclass
class LoadedModel:
    model: torch.nn.Module
    spec: PreprocessSpec
    source: str  # the file the weights came from (named in every result row)
    trained_families: Optional[List[str]] = None  # occluder families seen in training; None = unknown


def meta_trained_families(provenance: Mapping[str, Any]) -> Optional[List[str]]:
    """``trained_families`` of a model_meta's provenance (a list of family names), or None when absent."""
    value = provenance.get("trained_families")
    return [str(name) for name in value] if isinstance(value, (list, tuple)) else None


def checkpoint_trained_families(state: Mapping[str, Any]) -> Optional[List[str]]:
    """A training checkpoint's ``trained_families`` (recorded by the Trainer), else derived from its config's
    ``data.occlusion``; None when neither is readable."""
    recorded = state.get("trained_families")
    if isinstance(recorded, (list, tuple)):
        return [str(name) for name in recorded]
    data = (state.get("config") or {}).get("data") if isinstance(state.get("config"), Mapping) else None
    if not isinstance(data, Mapping):
        return None
    from data_processor.train_dataset import trained_families

    try:
        return trained_families(data.get("occlusion"))
    except Exception:  # noqa: BLE001 - a config from another code version: unknown rather than a crash
        return None


def load_export(export_dir: str | Path) -> LoadedModel:
    """An export folder (``backbone.pt`` + ``model_meta.json``) → backbone in eval mode + its preprocessing."""
    model, meta = load_exported_recognizer(export_dir)
    return LoadedModel(model, meta.preprocess, str(Path(export_dir) / meta.weights),
                       meta_trained_families(meta.provenance))


def load_onnx_export(path: str | Path) -> LoadedModel:
    """``model.onnx`` (or a folder holding it) + its ``model_meta.json`` → onnxruntime model + preprocessing."""
    from face_sdk.model_meta import read_model_meta
    from utils.export_onnx import OnnxEmbeddingModel

    path = Path(path)
    onnx_path = path / "model.onnx" if path.is_dir() else path
    meta_path = onnx_path.parent / "model_meta.json"
    for needed in (onnx_path, meta_path):
        if not needed.is_file():
            raise FileNotFoundError(f"--onnx {path}: {needed} is missing (write both with python -m utils.export_onnx)")
    meta = read_model_meta(meta_path)
    return LoadedModel(OnnxEmbeddingModel(onnx_path), meta.preprocess, str(onnx_path),
                       meta_trained_families(meta.provenance))


def load_training_checkpoint(path: str | Path) -> LoadedModel:
    """A Trainer checkpoint → its backbone (``backbone.``-prefixed keys) in eval mode + its preprocessing."""
    state = load_checkpoint(path)
    for key in ("config", "model"):
        if key not in state:
            raise KeyError(f"{path}: not a training checkpoint (no {key!r} entry; keys: {sorted(state)})")
    config = state["config"]
    try:
        backbone_cfg, preprocess_cfg = dict(config["backbone"]), config["data"]["preprocess"]
    except (KeyError, TypeError):
        raise KeyError(f"{path}: config lacks 'backbone' or 'data.preprocess'") from None
    model = build_backbone(backbone_cfg)
    weights = strip_prefix(state["model"], "backbone.")
    if not weights:
        raise KeyError(f"{path}: no 'backbone.*' weights in the checkpoint's model state")
    load_backbone_weights(model, weights, str(path))
    return LoadedModel(model.eval(), PreprocessSpec.from_dict(preprocess_cfg), str(path),
                       checkpoint_trained_families(state))


def newest_run_model(work_dirs: str | Path) -> Path:
    """The export folder (or ``checkpoints/last.pt``) of the most recently written run under ``work_dirs``."""
    work_dirs = Path(work_dirs)
    candidates: List[Path] = []
    for run in sorted(p for p in work_dirs.glob("*") if p.is_dir()) if work_dirs.is_dir() else []:
        export, last = run / "export", run / "checkpoints" / "last.pt"
        if (export / "model_meta.json").is_file():
            candidates.append(export)
        elif last.is_file():
            candidates.append(last)
    if not candidates:
        raise FileNotFoundError(f"no trained run under {work_dirs}/ (expected <run>/export/ or "
                                f"<run>/checkpoints/last.pt): train one with `bash run.sh`, or pass "
                                f"--checkpoint PATH / --export DIR")
    return max(candidates, key=_written_at)


def _written_at(candidate: Path) -> float:
    return (candidate / "model_meta.json").stat().st_mtime if candidate.is_dir() else candidate.stat().st_mtime


def load_for_evaluation(checkpoint: Optional[str] = None, export: Optional[str] = None,
                        work_dirs: str = "work_dirs", onnx: Optional[str] = None) -> LoadedModel:
    """``--export``, ``--onnx`` or ``--checkpoint`` if given, else the newest run under ``work_dirs``."""
    if sum(bool(source) for source in (checkpoint, export, onnx)) > 1:
        raise ValueError("pass one of --checkpoint, --export, --onnx")
    if export:
        return load_export(export)
    if onnx:
        return load_onnx_export(onnx)
    if checkpoint:
        return load_training_checkpoint(checkpoint)
    chosen = newest_run_model(work_dirs)
    return load_export(chosen) if chosen.is_dir() else load_training_checkpoint(chosen)
