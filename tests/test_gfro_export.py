"""A GFRO checkpoint exports as ONE embedding network (trunk + branches + dual MoE) through the same export command
as any backbone, and its ONNX graph scores real LFW pairs exactly like the PyTorch model."""
from __future__ import annotations

import pytest

from test_protocol.evaluate import evaluate_model
from test_protocol.model_loading import load_export, load_onnx_export
from training_mode.trainer import Trainer
from utils.config import load_config, merge
from utils.export_onnx import main as export_main

from tests.test_gfro_configs import REPO


def released_trunk_gfro_config(faces, visibility_head: bool = False) -> dict:
    """embedded_cpu.yaml around the released MS1M MobileFaceNet trunk (fine-tuning layout), 2 steps on random faces
    (``visibility_head``: with the visibility head, trained by ``training_mode.visibility_weight``)."""
    cfg = load_config(REPO / "configs" / "gfro" / "embedded_cpu.yaml")
    return merge(cfg, {
        "data": {"train": {"type": "ImageListDataset", "root": str(faces / "images"),
                           "list_file": str(faces / "train_list.txt")},
                 "preprocess": {"channel_order": "RGB", "mean": [123.675, 116.28, 103.53],
                                "std": [58.395, 57.12, 57.375]},
                 "batch_size": 4, "num_workers": 0},
        "backbone": {"trunk": {"type": "MobileFaceNetReLU6", "feat_dim": 128, "input_size": [112, 112]},
                     "feat_dim": 128, "top_k": 2, "global_prior": 4.0, "visibility_head": visibility_head},
        "training_mode": {"visibility_weight": 0.1 if visibility_head else 0.0},
        "optim": {"lr": 0.001},
        "eval": {"protocols": []},
        "runtime": {"max_steps": 2, "log_interval": 1, "freeze_bn_stats": True,
                    "init_weights": {"weights": "foamliu_mobilefacenet_ms1m", "module": "backbone.trunk"}},
    })


@pytest.mark.shared
@pytest.mark.parametrize("visibility_head", [False, True], ids=["plain", "visibility_head"])
def test_gfro_export_onnx_scores_lfw_like_pytorch(shared, random_faces, aligned_lfw_subset, tmp_path, monkeypatch,
                                                  visibility_head):
    pytest.importorskip("onnxruntime")
    weights = shared("weights/recognition/foamliu_mobilefacenet_ms1m.pt")
    monkeypatch.setenv("FACE_SDK_WEIGHTS_DIR", str(weights.parents[1]))
    aligned, pairs = aligned_lfw_subset(60)
    trainer = Trainer(released_trunk_gfro_config(random_faces, visibility_head), tmp_path / "run")
    try:
        trainer.fit()
        export = trainer.export()
    finally:
        trainer.close()
    assert export_main(["--export-dir", str(export), "--out", str(tmp_path / "onnx")]) == 0

    protocol = [{"type": "PairVerification", "name": "LFW-60", "root": str(aligned), "pairs_file": str(pairs),
                 "parser": "lfw", "variant": "facexzoo"}]
    rows = {}
    for name, loaded in (("pytorch", load_export(tmp_path / "onnx")), ("onnx", load_onnx_export(tmp_path / "onnx"))):
        (rows[name],) = evaluate_model(loaded.model, loaded.spec, protocol, "cpu", batch_size=64,
                                       checkpoint=loaded.source)
    assert rows["onnx"]["checkpoint"].endswith("model.onnx")
    assert rows["onnx"]["accuracy"] == rows["pytorch"]["accuracy"] and rows["onnx"]["auc"] == pytest.approx(
        rows["pytorch"]["auc"], abs=1e-6)
    assert rows["pytorch"]["accuracy"] > 90.0  # the released trunk through the (still global-led) aggregator
