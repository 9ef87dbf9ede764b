"""Export a backbone: ``model.onnx`` (dynamic batch) + ``backbone.pt`` (prefix-free state_dict) + ``model_meta.json``,
then check onnxruntime against PyTorch and print the max abs difference.

    python -m utils.export_onnx --released foamliu_mobilefacenet_ms1m --out work_dirs/export/foamliu
    python -m utils.export_onnx --export-dir work_dirs/run/export --out work_dirs/export/run
    python -m utils.export_onnx --checkpoint work_dirs/run/checkpoints/last.pt --out work_dirs/export/run

The ONNX graph takes the *normalised* input ``[B, 3, H, W]`` float32 — ``preprocess(uint8 RGB, meta.preprocess)``
— and returns the raw (not L2-normalised) embedding ``[B, D]``. Input name ``input``, output name ``embedding``.
A Trainer checkpoint is read as ``{"config": {"backbone": ..., "data": {"preprocess": ...}}, "model":
{"backbone.*": ...}}`` (the layout of ``training_mode/trainer.py``).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from backbone import build_backbone
from data_processor.preprocess import PreprocessSpec
from utils.checkpoint import atomic_torch_save, load_backbone_weights, load_checkpoint, strip_prefix
from utils.cli import run_cli

DEFAULT_OPSET = 18


@dataclass(frozen=True)
class ParityReport:
    batch_sizes: Tuple[int, ...]
    max_abs_diff: float
    max_cosine_gap: float


def export_to_onnx(model: nn.Module, input_size: Tuple[int, int], path: str | Path, opset: int = DEFAULT_OPSET,
                   exporter: str = "dynamo") -> Path:
    """``torch.onnx.export`` with a dynamic batch axis (``exporter``: "dynamo" or "torchscript"); atomic write.

    Both exporters work for the MobileFaceNets with torch 2.14; "dynamo" (torch.export based) is torch's default
    and future, "torchscript" is the legacy one (deprecated, faster to run).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    example = torch.randn(2, 3, *input_size)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".onnx")
    os.close(handle)
    names = {"input_names": ["input"], "output_names": ["embedding"], "opset_version": opset}
    try:
        if exporter == "dynamo":
            batch = torch.export.Dim("batch", min=1, max=65536)
            torch.onnx.export(model, (example,), tmp, dynamic_shapes=({0: batch},), dynamo=True, verbose=False,
                              external_data=False, **names)  # one self-contained file (weights inline)
        elif exporter == "torchscript":
            torch.onnx.export(model, (example,), tmp, dynamic_axes={"input": {0: "batch"}, "embedding": {0: "batch"}},
                              do_constant_folding=True, dynamo=False, **names)
        else:
            raise ValueError(f"exporter must be 'dynamo' or 'torchscript', got {exporter!r}")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def check_onnx_parity(model: nn.Module, onnx_path: str | Path, input_size: Tuple[int, int],
                      batch_sizes: Sequence[int] = (1, 5), seed: int = 0) -> ParityReport:
    """Run PyTorch and onnxruntime on the same random normalised batches; report the largest differences."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(seed)
    max_diff, max_gap = 0.0, 0.0
    model = model.eval()
    for batch in batch_sizes:
        x = torch.randn(batch, 3, *input_size, generator=generator)
        with torch.inference_mode():
            expected = model(x).numpy()
        actual = session.run(["embedding"], {"input": x.numpy()})[0]
        if actual.shape != expected.shape:
            raise RuntimeError(f"{onnx_path}: batch {batch} gives {actual.shape}, PyTorch gives {expected.shape}")
        max_diff = max(max_diff, float(np.abs(actual - expected).max()))
        cos = np.sum(actual * expected, 1) / (np.linalg.norm(actual, axis=1) * np.linalg.norm(expected, axis=1))
        max_gap = max(max_gap, float(np.abs(1.0 - cos).max()))
    return ParityReport(tuple(batch_sizes), max_diff, max_gap)


class OnnxEmbeddingModel(nn.Module):
    """A ``model.onnx`` run by onnxruntime (CPU) behind the ``nn.Module`` call the protocols use: normalised float32
    ``[B, 3, H, W]`` in, raw embeddings ``[B, D]`` out; it holds no PyTorch parameters and ignores ``.to()``."""

    def __init__(self, onnx_path: str | Path) -> None:
        super().__init__()
        import onnxruntime

        self.path = Path(onnx_path)
        self.session = onnxruntime.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        self.feat_dim = int(self.session.get_outputs()[0].shape[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inputs = x.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(self.session.run(["embedding"], {"input": inputs})[0]).to(x.device)


def backbone_from_checkpoint(path: Path):
    """(backbone, ModelMeta) from a Trainer checkpoint (config + ``backbone.*`` weights)."""
    from face_sdk.model_meta import ModelMeta

    state = load_checkpoint(path)
    try:
        cfg, weights = state["config"], strip_prefix(state["model"], "backbone.")
        backbone_cfg = dict(cfg["backbone"])
        spec = PreprocessSpec.from_dict(cfg.get("data", {}).get("preprocess"))
    except (KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a Trainer checkpoint (needs config.backbone and model.backbone.*): "
                         f"missing {error}") from None
    backbone = build_backbone(backbone_cfg)
    load_backbone_weights(backbone, weights, source=f"{path} (backbone.*)")
    arch = backbone_cfg.pop("type")
    meta = ModelMeta(arch=arch, kwargs=backbone_cfg, embedding_dim=int(backbone.feat_dim), preprocess=spec,
                     name=path.parent.parent.name, source=f"training checkpoint {path.name}")
    return backbone.eval(), meta


def export_model(backbone: nn.Module, meta, out_dir: str | Path, opset: int = DEFAULT_OPSET,
                 parity: bool = True, exporter: str = "dynamo") -> Optional[ParityReport]:
    """Write ``backbone.pt``, ``model_meta.json`` and ``model.onnx`` into ``out_dir``; return the parity report."""
    from face_sdk.model_meta import write_model_meta

    out_dir = Path(out_dir)
    backbone = backbone.eval()
    atomic_torch_save({k: v.detach().cpu().clone() for k, v in backbone.state_dict().items()}, out_dir / meta.weights)
    write_model_meta(out_dir / "model_meta.json", meta)
    onnx_path = export_to_onnx(backbone, meta.preprocess.input_size, out_dir / "model.onnx", opset, exporter)
    for written in (out_dir / meta.weights, out_dir / "model_meta.json", onnx_path):
        os.chmod(written, 0o644)  # the atomic writes go through mkstemp files (0600); exports are meant to be shared
    if not parity:
        return None
    return check_onnx_parity(backbone, onnx_path, meta.preprocess.input_size)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.export_onnx", description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--released", help="a released recogniser name (face_sdk.released) or its weights file")
    source.add_argument("--export-dir", type=Path, help="an export folder (model_meta.json + backbone.pt)")
    source.add_argument("--checkpoint", type=Path, help="a Trainer checkpoint (.pt)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    parser.add_argument("--exporter", choices=("dynamo", "torchscript"), default="dynamo")
    parser.add_argument("--no-parity", action="store_true", help="skip the onnxruntime comparison")
    args = parser.parse_args(argv)

    if args.released:
        from face_sdk.released import load_released_recognizer

        backbone, meta = load_released_recognizer(args.released)
    elif args.export_dir:
        from face_sdk.recognizer import load_exported_recognizer

        backbone, meta = load_exported_recognizer(args.export_dir)
    else:
        backbone, meta = backbone_from_checkpoint(args.checkpoint)
    parity = not args.no_parity
    if parity:
        if importlib.util.find_spec("onnxruntime") is None:
            print("onnxruntime is not installed: skipping the parity check", file=sys.stderr)
            parity = False
    report = export_model(backbone, meta, args.out, args.opset, parity, args.exporter)
    print(f"wrote {args.out / 'model.onnx'}, {args.out / meta.weights}, {args.out / 'model_meta.json'}")
    if report is not None:
        print(f"onnxruntime parity (batch sizes {list(report.batch_sizes)}): max abs diff {report.max_abs_diff:.3e}, "
              f"max 1-cosine {report.max_cosine_gap:.3e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
