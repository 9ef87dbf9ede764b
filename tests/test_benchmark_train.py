"""tools/benchmark_train.py: the timed steps are the real training modes, and GFRO rows count both views."""
from __future__ import annotations

import pytest
import torch

from backbone.gfro import GFROEmbedding
from tools.benchmark_train import build_method, measure, synthetic_batch
from training_mode.conventional import ConventionalTraining
from training_mode.gfro import GFROTraining


def test_methods_build_the_trainers_modes() -> None:
    assert isinstance(build_method("arcface", "MobileFaceNet", None, 10), ConventionalTraining)
    gfro = build_method("gfro", "MobileFaceNet", None, 10)
    assert isinstance(gfro, GFROTraining) and isinstance(gfro.backbone, GFROEmbedding) and gfro.teacher is None
    with_teacher = build_method("gfro_teacher", "MobileFaceNet", None, 10)
    assert with_teacher.teacher is not None and with_teacher.kd_weight > 0
    assert not any(p.requires_grad for p in with_teacher.teacher.parameters())
    with pytest.raises(ValueError, match="unknown method"):
        build_method("gfro_plus", "MobileFaceNet", None, 10)


def test_gfro_step_trains_on_both_views_and_counts_them() -> None:
    batch = synthetic_batch("gfro", 4, 10, torch.device("cpu"))
    assert set(batch) == {"image", "label", "noisy", "occlusion_type"} and batch["noisy"].dtype == torch.uint8
    out = build_method("gfro", "MobileFaceNet", None, 10)(batch)
    assert {"ce_clean", "ce_noisy", "contrastive", "moe_balance"} <= set(out["terms"])
    row = measure("gfro", "MobileFaceNet", "fp32", False, False, 4, steps=1, warmup=1, num_class=10,
                  device=torch.device("cpu"))
    assert row["method"] == "gfro" and row["img_per_s"] > 0
    assert row["forward_img_per_s"] == pytest.approx(2 * row["img_per_s"], abs=0.02)  # both rounded to 0.01
    assert row["img_per_s"] == pytest.approx(4 / row["step_s"], rel=0.01)
