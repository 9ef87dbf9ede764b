"""Models to evaluate: an export folder, its ONNX graph, a training checkpoint, or the newest run under ``work_dirs/``.

- export folder: ``backbone.pt`` (prefix-free state_dict) + ``model_meta.json`` (``face_sdk.model_meta``);
- ONNX: ``model.onnx`` of an export folder (``python -m utils.export_onnx``), run by onnxruntime, fed per the
  ``model_meta.json`` beside it;
- training checkpoint (``checkpoints/last.pt``): ``config`` (resolved) + ``model`` (``backbone.*``, ``head.*``);
  the backbone is built from ``config["backbone"]`` and fed per ``config["data"]["preprocess"]``;
- foreign weights (``--weights X.pth --arch NAME --preprocess SPEC``, ``load_foreign_weights``): a state_dict (or a
  checkpoint dict holding one) from any release, a wrapper prefix (``module.``, ``backbone.``, ``features.``,
  ``_orig_mod.``) removed, loaded strictly into ``build_backbone({"type": NAME, ...})``; when the keys do not fit
  as they are, the converter rules of the released recognisers (``face_sdk.weights``) are tried. What did not load
  (missing / unexpected / shape-mismatched keys) is listed in ``LoadedModel.load_report``; any of it is an error
  unless ``strict=False``.
Checkpoint selection rule (printed by the caller): the *last* checkpoint of a run, never the best on a test set.

The occluder families the model trained on (``LoadedModel.trained_families``, what rows are tagged seen / held_out
against): an export's ``model_meta.json`` key ``trained_families``; a checkpoint's ``trained_families`` entry, else
``trained_families(config["data"]["occlusion"])`` of its resolved config; ``None`` (unknown) otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

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
    load_report: Optional[Dict[str, Any]] = None  # foreign weights: what was loaded, renamed and left out


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


WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.", "feat_net.", "backbone.", "features.")
STATE_DICT_ENTRIES = ("state_dict", "model_state_dict", "net_state_dict", "model", "backbone", "net")
LIST_LIMIT = 20  # keys listed per category in an error (the report holds them all)


class WeightsMismatchError(RuntimeError):
    """Foreign weights do not fit the named architecture (raised unless ``strict=False``)."""


def read_foreign_state_dict(path: str | Path) -> Tuple[Dict[str, torch.Tensor], str]:
    """``torch.load(weights_only=True)`` → ``(state_dict, where)``: the file itself when it maps names to tensors,
    else its first entry of ``STATE_DICT_ENTRIES`` that does (``where`` names it)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--weights {path}: no such file")
    state = torch.load(path, map_location="cpu", weights_only=True)

    def tensors(value: Any) -> bool:
        return isinstance(value, Mapping) and bool(value) and all(isinstance(v, torch.Tensor) for v in value.values())

    if tensors(state):
        return dict(state), "<file>"
    if isinstance(state, Mapping):
        for key in STATE_DICT_ENTRIES:
            if tensors(state.get(key)):
                return dict(state[key]), key
    keys = sorted(state)[:10] if isinstance(state, Mapping) else type(state).__name__
    raise ValueError(f"--weights {path}: no state_dict (name -> tensor) in the file, nor under any of "
                     f"{STATE_DICT_ENTRIES} (top level: {keys})")


def strip_wrapper_prefixes(state: Mapping[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], List[str], List[str]]:
    """Remove ``WRAPPER_PREFIXES`` shared by *every* key (repeatedly: ``module.backbone.``); a ``backbone.``
    prefix held by only some keys (a training checkpoint: ``backbone.*`` + ``head.*``) keeps those keys and drops
    the rest. → ``(state, prefixes removed, keys dropped)``."""
    state, removed, dropped = dict(state), [], []
    changed = True
    while changed and state:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                removed.append(prefix)
                changed = True
    if any(k.startswith("backbone.") for k in state):
        dropped = sorted(k for k in state if not k.startswith("backbone."))
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
        removed.append("backbone. (partial)")
    return state, removed, dropped


def compare_state_dict(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> Dict[str, List[str]]:
    """Missing / unexpected / shape-mismatched keys of ``state`` for ``model`` (``num_batches_tracked`` buffers,
    which old saves lack and evaluation never reads, are listed apart as ``missing_benign``)."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    return {
        "missing": [k for k in missing if not k.endswith("num_batches_tracked")],
        "missing_benign": [k for k in missing if k.endswith("num_batches_tracked")],
        "unexpected": sorted(set(state) - set(expected)),
        "shape_mismatch": sorted(f"{k} {tuple(v.shape)} != {tuple(expected[k].shape)}" for k, v in state.items()
                                 if k in expected and v.shape != expected[k].shape
                                 and not (k.endswith("num_batches_tracked") and v.numel() == 1)),
    }


def _try_release_rules(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str
                       ) -> Optional[Tuple[str, Dict[str, torch.Tensor]]]:
    """The first released recogniser whose converter rules map ``state`` one-to-one onto ``model``."""
    from face_sdk.released import RELEASED_RECOGNIZERS
    from face_sdk.weights import WeightConversionError, convert_state_dict

    for name, release in RELEASED_RECOGNIZERS.items():
        try:
            return name, dict(convert_state_dict(state, release.rules, model, source))
        except WeightConversionError:
            continue
    return None


def _listed(keys: List[str]) -> str:
    return f"{len(keys)}" + (f": {keys[:LIST_LIMIT]}{' …' if len(keys) > LIST_LIMIT else ''}" if keys else "")


def load_foreign_weights(path: str | Path, arch: str, spec: PreprocessSpec,
                         arch_kwargs: Optional[Mapping[str, Any]] = None, strict: bool = True) -> LoadedModel:
    """Weights from any release → ``build_backbone({"type": arch, **arch_kwargs})`` fed per ``spec``.

    Keys are used as they are after ``strip_wrapper_prefixes``; when they do not fit, the released recognisers'
    converter rules are tried. Anything missing, unexpected or shape-mismatched raises ``WeightsMismatchError``
    listing it, unless ``strict=False`` (then what fits is loaded and the rest is in ``load_report``)."""
    raw, entry = read_foreign_state_dict(path)
    state, removed, dropped = strip_wrapper_prefixes(raw)
    model = build_backbone({"type": arch, **dict(arch_kwargs or {})})
    report: Dict[str, Any] = {"weights": str(path), "arch": arch, "arch_kwargs": dict(arch_kwargs or {}),
                              "state_dict_entry": entry, "prefixes_removed": removed,
                              "dropped_outside_backbone": dropped, "converter": None}
    problems = compare_state_dict(model, state)
    if problems["missing"] or problems["unexpected"] or problems["shape_mismatch"]:
        converted = _try_release_rules(model, state, str(path))
        if converted is not None:
            report["converter"] = f"face_sdk.released rules of {converted[0]}"
            state = converted[1]
            problems = compare_state_dict(model, state)
    report.update(problems)
    fits = not (problems["missing"] or problems["unexpected"] or problems["shape_mismatch"])
    summary = (f"missing {_listed(problems['missing'])}; unexpected {_listed(problems['unexpected'])}; "
               f"shape mismatch {_listed(problems['shape_mismatch'])}")
    if not fits and strict:
        raise WeightsMismatchError(f"--weights {path} does not fit --arch {arch} {dict(arch_kwargs or {})}: "
                                   f"{summary} (prefixes removed: {removed or 'none'}; pass --non-strict to load "
                                   f"what fits)")
    expected = model.state_dict()
    loadable = {k: v.reshape(expected[k].shape) if k.endswith("num_batches_tracked") else v
                for k, v in state.items() if k in expected
                and (v.shape == expected[k].shape or (k.endswith("num_batches_tracked") and v.numel() == 1))}
    model.load_state_dict(loadable, strict=False)
    report["loaded"] = len(loadable)
    report["expected"] = len(expected)
    report["strict"] = strict
    report["status"] = "all keys loaded" if fits else f"NON-STRICT, partially loaded: {summary}"
    return LoadedModel(model.eval(), spec, str(path), None, report)


def load_for_evaluation(checkpoint: Optional[str] = None, export: Optional[str] = None,
                        work_dirs: str = "work_dirs", onnx: Optional[str] = None) -> LoadedModel:
    """``--export``, ``--onnx`` or ``--checkpoint`` if given, else the newest run under ``work_dirs``
    (``--weights`` goes through ``load_foreign_weights``)."""
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
