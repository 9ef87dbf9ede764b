"""Backbone export: ONNX with a dynamic batch axis + onnxruntime parity, state_dict + model_meta reload."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from backbone import build_backbone
from data_processor.preprocess import PreprocessSpec
from face_sdk.model_meta import ModelMeta
from face_sdk.recognizer import load_exported_recognizer
from utils.export_onnx import export_model


@pytest.mark.parametrize("arch, input_size, exporter", [
    pytest.param("MobileFaceNetGDC", (112, 96), "dynamo", marks=pytest.mark.slow),  # torch.export: ~15-90 s
    ("MobileFaceNetReLU6", (112, 112), "torchscript"),
])
def test_export_round_trip_and_onnxruntime_parity(tmp_path, arch, input_size, exporter):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    torch.manual_seed(0)
    meta = ModelMeta(arch=arch, kwargs={"feat_dim": 64, "input_size": list(input_size)}, embedding_dim=64,
                     preprocess=PreprocessSpec("RGB", input_size=input_size,
                                               template="sphereface_112x96" if input_size[1] == 96 else
                                               "arcface_112x112"), name=f"test_{arch}")
    backbone = build_backbone(meta.backbone_config).eval()
    for module in backbone.modules():  # non-trivial BN statistics, so eval-mode BN matters
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    report = export_model(backbone, meta, tmp_path, exporter=exporter)
    print(f"{arch} ({exporter}): onnxruntime max abs diff {report.max_abs_diff:.2e}")
    assert report.batch_sizes == (1, 5)  # two batch sizes through one graph: the batch axis is dynamic
    assert report.max_abs_diff < 1e-3 and report.max_cosine_gap < 1e-5
    reloaded, reloaded_meta = load_exported_recognizer(tmp_path)
    assert reloaded_meta == meta
    x = torch.randn(3, 3, *input_size)
    with torch.inference_mode():
        np.testing.assert_array_equal(reloaded(x).numpy(), backbone(x).numpy())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backbone.pt", "model.onnx", "model_meta.json"]
    state = torch.load(tmp_path / "backbone.pt", weights_only=True)
    assert not any(k.startswith(("module.", "backbone.")) for k in state)
