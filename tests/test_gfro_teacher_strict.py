"""``teacher.strict``: named teacher weights that are missing stop the run at start (default); the teacher-free
fallback happens only when asked for (``strict: false``). The contrastive loss detaches its targets itself."""
from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import torch

from loss.contrastive import CleanNoisyContrastiveLoss
from training_mode.teacher import build_teacher
from utils.config import load_config, merge
from utils.registry import ConfigError

REPO = Path(__file__).resolve().parents[1]
PRESETS = sorted((REPO / "configs" / "gfro").glob("*.yaml"))
IRESNET = {"type": "IResNet18", "feat_dim": 64}


@pytest.mark.parametrize("strict", [None, True])
def test_missing_weights_are_an_error_naming_the_path(tmp_path, strict):
    missing = tmp_path / "nope" / "295672backbone.pth"
    cfg = {"backbone": IRESNET, "weights": str(missing)}
    if strict is not None:
        cfg["strict"] = strict
    with pytest.raises(FileNotFoundError, match="teacher.strict") as error:
        build_teacher(cfg, "cpu")
    assert str(missing) in str(error.value)


def test_missing_released_recogniser_is_an_error_naming_the_resolved_file(tmp_path, monkeypatch):
    monkeypatch.setenv("FACE_SDK_WEIGHTS_DIR", str(tmp_path / "weights"))
    with pytest.raises(FileNotFoundError) as error:
        build_teacher({"weights": "foamliu_mobilefacenet_ms1m"}, "cpu")
    assert str(tmp_path / "weights" / "recognition" / "foamliu_mobilefacenet_ms1m.pt") in str(error.value)


def test_strict_false_falls_back_to_teacher_free_with_a_log_line(tmp_path, caplog, monkeypatch):
    missing = tmp_path / "nope.pth"
    monkeypatch.setenv("FACE_SDK_WEIGHTS_DIR", str(tmp_path / "weights"))
    with caplog.at_level(logging.INFO, logger="training_mode.teacher"):
        assert build_teacher({"backbone": IRESNET, "weights": str(missing), "strict": False}, "cpu") is None
        assert build_teacher({"weights": "foamliu_mobilefacenet_ms1m", "strict": False}, "cpu") is None
    assert f"teacher weights not found at {missing}: teacher-free mode" in caplog.text
    assert caplog.text.count("teacher-free mode") >= 2


def test_no_section_or_no_weights_is_teacher_free_whatever_strict(caplog):
    with caplog.at_level(logging.INFO, logger="training_mode.teacher"):
        assert build_teacher(None, "cpu") is None
        assert build_teacher({}, "cpu") is None
        assert build_teacher({"backbone": IRESNET, "strict": True}, "cpu") is None
    assert "teacher-free mode" in caplog.text


def test_strict_must_be_a_boolean(tmp_path):
    with pytest.raises(ConfigError, match="teacher.strict"):
        build_teacher({"weights": str(tmp_path / "x.pth"), "strict": "no"}, "cpu")


@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_every_preset_that_names_a_teacher_says_strict(path):
    teacher = load_config(path).get("teacher") or {}
    if teacher.get("weights"):
        assert teacher.get("strict") is True


def test_default_config_has_a_teacher_section_without_weights():
    base = load_config(REPO / "configs" / "_base_" / "default.yaml")
    assert isinstance(base.get("teacher"), dict) and not base["teacher"].get("weights")


def test_trainer_stops_at_start_when_the_teacher_is_missing(random_faces, tmp_path):
    from training_mode.trainer import Trainer

    cfg = load_config(REPO / "configs" / "gfro" / "embedded_cpu.yaml")
    missing = tmp_path / "teacher.pth"
    cfg = merge(cfg, {"data": {"train": {"type": "ImageListDataset", "root": str(random_faces / "images"),
                                         "list_file": str(random_faces / "train_list.txt")},
                               "batch_size": 4, "num_workers": 0},
                      "backbone": {"trunk": {"feat_dim": 64, "width": 0.25}, "feat_dim": 64},
                      "teacher": {"backbone": IRESNET, "weights": str(missing)},
                      "runtime": {"device": "cpu"}})
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        Trainer(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


# ------------------------------------------------------------------------------------- contrastive targets
def test_contrastive_loss_detaches_targets_even_when_the_caller_forgets():
    generator = torch.Generator().manual_seed(0)
    anchors = torch.randn(6, 2, 16, generator=generator, requires_grad=True)
    targets = torch.randn(6, 16, generator=generator, requires_grad=True)
    source = torch.randn(6, 16, generator=generator, requires_grad=True)
    derived = source * 2.0  # a non-leaf target whose graph reaches `source`
    loss = CleanNoisyContrastiveLoss(queue_size=8).train()
    total = loss(anchors, targets, torch.tensor([0, 1, 1, 2, 3, 4])) + loss(anchors, derived)
    total.backward()
    assert targets.grad is None and source.grad is None
    assert anchors.grad is not None and anchors.grad.abs().sum() > 0
    with torch.no_grad():
        expected = CleanNoisyContrastiveLoss()(anchors, targets.detach(), torch.tensor([0, 1, 1, 2, 3, 4]))
    torch.testing.assert_close(CleanNoisyContrastiveLoss()(anchors, targets, torch.tensor([0, 1, 1, 2, 3, 4])),
                               expected)
