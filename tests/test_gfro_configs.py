"""The GFRO presets load and build, and a GFRO config trains, checkpoints and exports through the Trainer."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from backbone import BACKBONES
from head import HEADS
from training_mode import TRAINING_MODES
from training_mode.teacher import build_teacher
from training_mode.trainer import Trainer
from utils.checkpoint import export_backbone, load_checkpoint
from utils.config import load_config, merge
from utils.registry import check_kwargs

REPO = Path(__file__).resolve().parents[1]
PRESETS = sorted((REPO / "configs" / "gfro").glob("*.yaml"))


def check_section(registry, section: dict, where: str) -> None:
    kwargs = {k: v for k, v in section.items() if k != "type"}
    check_kwargs(registry.get(section["type"]), kwargs, where)


@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_preset_sections_name_registered_types_and_accepted_keys(path):
    cfg = load_config(path)
    check_section(BACKBONES, cfg["backbone"], "backbone")
    if cfg["backbone"]["type"] == "GFROEmbedding":
        check_section(BACKBONES, cfg["backbone"]["trunk"], "backbone.trunk")
    check_section(HEADS, cfg["head"], "head")
    check_section(TRAINING_MODES, cfg["training_mode"], "training_mode")
    assert cfg["training_mode"]["type"] == "GFROTraining" and cfg["data"]["occlusion"]
    if "teacher" in cfg:
        assert set(cfg["teacher"]) <= {"backbone", "weights", "preprocess", "strict"}
        if "backbone" in cfg["teacher"]:  # else a released model / export that carries its own architecture
            check_section(BACKBONES, cfg["teacher"]["backbone"], "teacher.backbone")
            assert cfg["teacher"]["preprocess"]["channel_order"] == "RGB"  # ElasticFace-Arc's input contract


def test_presets_cover_the_brief():
    names = {p.stem for p in PRESETS}
    assert {"embedded_cpu", "casia_elasticface_iresnet", "casia_elasticface_mobilefacenet"} <= names
    iresnet = load_config(REPO / "configs" / "gfro" / "casia_elasticface_iresnet.yaml")
    assert iresnet["backbone"]["trunk"]["type"] == "IResNet50"
    assert iresnet["teacher"]["backbone"]["type"] == "IResNet100"
    assert iresnet["schedule"]["milestones"] == [10, 13, 16] and iresnet["runtime"]["amp"] == "bf16"


def test_casia_preset_without_teacher_weights_stops_unless_strict_is_off(caplog):
    cfg = load_config(REPO / "configs" / "gfro" / "casia_elasticface_iresnet.yaml")
    if Path(cfg["teacher"]["weights"]).exists():
        pytest.skip("the ElasticFace-Arc weights are present here")
    with pytest.raises(FileNotFoundError, match=cfg["teacher"]["weights"]):
        build_teacher(cfg["teacher"], "cpu")
    with caplog.at_level(logging.INFO, logger="training_mode.teacher"):
        assert build_teacher({**cfg["teacher"], "strict": False}, "cpu") is None
    assert "teacher-free mode" in caplog.text


def small_gfro_config(faces: Path, **extra) -> dict:
    """embedded_cpu.yaml on the random faces, with a slim 64-d trunk, batch 4 and 2 steps."""
    cfg = load_config(REPO / "configs" / "gfro" / "embedded_cpu.yaml")
    cfg = merge(cfg, {
        "data": {"train": {"type": "ImageListDataset", "root": str(faces / "images"),
                           "list_file": str(faces / "train_list.txt")},
                 "batch_size": 4, "num_workers": 0},
        "backbone": {"trunk": {"feat_dim": 64, "width": 0.25}, "feat_dim": 64, "expert_hidden": 32,
                     "gate_hidden": 32},
        "eval": {"protocols": []},
        "runtime": {"max_steps": 2, "log_interval": 1},
    })
    return merge(cfg, extra)


def test_gfro_preset_trains_checkpoints_and_exports(random_faces, tmp_path):
    trainer = Trainer(small_gfro_config(random_faces), tmp_path / "run")
    try:
        history = trainer.fit()["history"]
        export = trainer.export()
        model = trainer.module.embedding_model().eval()
    finally:
        trainer.close()
    assert len(history) == 2 and all(np.isfinite(row["loss"]) for row in history)
    from face_sdk.recognizer import load_exported_recognizer

    rebuilt, meta = load_exported_recognizer(export)
    assert meta.arch == "GFROEmbedding" and meta.embedding_dim == 64
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x))


def test_gfro_with_a_teacher_keeps_it_out_of_the_optimiser_and_checkpoint(random_faces, tmp_path):
    teacher_model = BACKBONES.get("MobileFaceNet")(feat_dim=64, width=0.25)
    teacher_dir = export_backbone(teacher_model, {
        "arch": "MobileFaceNet", "kwargs": {"feat_dim": 64, "width": 0.25}, "embedding_dim": 64,
        "preprocess": {"channel_order": "RGB", "mean": [127.5] * 3, "std": [127.5] * 3}}, tmp_path / "teacher")
    cfg = small_gfro_config(random_faces, teacher={"weights": str(teacher_dir)},
                            training_mode={"kd_weight": 1.0})
    trainer = Trainer(cfg, tmp_path / "run")
    try:
        teacher = trainer.module.teacher
        assert teacher is not None and teacher.preprocess_spec.channel_order == "RGB"
        optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
        assert not any(id(p) in optimised for p in teacher.parameters())
        before = {k: v.clone() for k, v in teacher.state_dict().items()}
        assert all(np.isfinite(row["loss"]) for row in trainer.fit()["history"])
        assert not teacher.training
        for key, value in teacher.state_dict().items():
            torch.testing.assert_close(value, before[key])  # frozen, BN statistics included
    finally:
        trainer.close()
    checkpoint = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert not any(key.startswith("teacher.") for key in checkpoint["model"])
