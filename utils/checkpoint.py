"""Training checkpoints (full state, atomic) and backbone exports (prefix-free state_dict + model_meta.json)."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import torch

CHECKPOINT_FORMAT_VERSION = 2  # 2: "rng" is a list of every rank's RNG state, indexed by rank (1: rank 0's only)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """Write ``obj`` with torch.save to a temporary file in the same folder, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # corrupted / non-weights pickles
        raise RuntimeError(f"cannot load checkpoint {path} with weights_only=True: {exc}") from exc


def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    """Keep the keys under ``prefix`` (e.g. ``"backbone."``) with the prefix removed."""
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def normalise_state_dict_keys(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Remove the ``module.`` (DataParallel/DDP) and ``_orig_mod.`` (torch.compile) wrappers from keys."""
    out: Dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        for wrapper in ("module.", "_orig_mod."):
            key = key.replace(wrapper, "")
        out[key] = value
    return out


def load_backbone_weights(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "") -> None:
    """Strictly load ``state_dict`` into ``model``, reporting missing and unexpected keys by name."""
    result = model.load_state_dict(normalise_state_dict_keys(state_dict), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise RuntimeError(f"{source or 'state_dict'} does not match {type(model).__name__}: "
                           f"missing {result.missing_keys[:8]}{'…' if len(result.missing_keys) > 8 else ''} "
                           f"({len(result.missing_keys)}), unexpected {result.unexpected_keys[:8]}"
                           f"{'…' if len(result.unexpected_keys) > 8 else ''} ({len(result.unexpected_keys)})")


def find_latest_checkpoint(checkpoint_dir: str | Path) -> Optional[Path]:
    """The file named by ``checkpoint_dir/last_checkpoint``, or None."""
    pointer = Path(checkpoint_dir) / "last_checkpoint"
    if not pointer.is_file():
        return None
    target = Path(checkpoint_dir) / pointer.read_text(encoding="utf-8").strip()
    return target if target.is_file() else None


def export_backbone(model: torch.nn.Module, meta: Mapping[str, Any], out_dir: str | Path) -> Path:
    """Write ``backbone.pt`` (prefix-free state_dict) and ``model_meta.json`` into ``out_dir``."""
    out_dir = Path(out_dir)
    state = {k: v.detach().cpu().clone() for k, v in normalise_state_dict_keys(model.state_dict()).items()}
    atomic_torch_save(state, out_dir / "backbone.pt")
    atomic_write_text(out_dir / "model_meta.json", json.dumps(dict(meta), indent=2) + "\n")
    return out_dir
