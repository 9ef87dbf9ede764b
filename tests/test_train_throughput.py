"""benchmarks/train_throughput.py: the timed steps are the Trainer's training modes, GFRO rows count both views, the
fast path's knobs are really applied, Partial FC rows run the sharded head, and the ratios are computed from rows."""
from __future__ import annotations

import pytest
import torch

from backbone.gfro import GFROEmbedding
from benchmarks.train_throughput import build_method, main, measure, ratio_lines, synthetic_batch
from head.partial_fc import PartialFC
from training_mode.conventional import ConventionalTraining
from training_mode.gfro import GFROTraining

SMALL_NET = {"type": "MobileFaceNet", "width": 0.25, "input_size": [64, 64]}


def test_methods_build_the_trainers_modes() -> None:
    assert isinstance(build_method("arcface", SMALL_NET, 10), ConventionalTraining)
    gfro = build_method("gfro", SMALL_NET, 10)
    assert isinstance(gfro, GFROTraining) and isinstance(gfro.backbone, GFROEmbedding) and gfro.teacher is None
    assert gfro.preprocess_spec.input_size == (64, 64)  # the batch is already at the input size: no resize
    with_teacher = build_method("gfro_teacher", SMALL_NET, 10)
    assert with_teacher.teacher is not None and with_teacher.kd_weight > 0
    assert not any(p.requires_grad for p in with_teacher.teacher.parameters())
    assert isinstance(build_method("arcface", SMALL_NET, 10, {"type": "PartialFC"}).head, PartialFC)
    with pytest.raises(ValueError, match="unknown method"):
        build_method("gfro_plus", SMALL_NET, 10)


def test_gfro_row_trains_on_both_views_and_counts_them() -> None:
    batch = synthetic_batch("gfro", 4, 10, 64, torch.device("cpu"))
    assert set(batch) == {"image", "label", "noisy", "occlusion_type"} and batch["noisy"].shape[-1] == 64
    out = build_method("gfro", SMALL_NET, 10)(batch)
    assert {"ce_clean", "ce_noisy", "contrastive", "moe_balance"} <= set(out["terms"])
    row = measure("gfro", SMALL_NET, "fast", 4, steps=1, warmup=1, num_class=10, size=64, device=torch.device("cpu"))
    assert row["method"] == "gfro" and row["path"] == "fast" and row["autocast"] == "bfloat16"
    assert row["forward_img_per_s"] == pytest.approx(2 * row["img_per_s"], abs=0.02)  # both rounded to 0.01
    assert row["img_per_s"] == pytest.approx(4 / row["step_s"], rel=0.01)
    plain = measure("arcface", SMALL_NET, "eager_fp32", 4, steps=1, warmup=1, num_class=10, size=64,
                    device=torch.device("cpu"))
    assert plain["autocast"] == "fp32" and plain["compile_s"] is None


def test_ratios_come_from_the_rows() -> None:
    rows = [{"backbone": "B", "method": m, "path": p, "img_per_s": v,
             "forward_img_per_s": v * (1 if m == "arcface" else 2)}
            for m, p, v in (("arcface", "eager_amp_fp16", 100.0), ("arcface", "fast", 250.0),
                            ("gfro", "eager_amp_fp16", 40.0), ("gfro", "fast", 110.0))]
    lines = "\n".join(ratio_lines(rows))
    assert "arcface       fast / AMP-fp16 eager = 2.50×" in lines
    assert "gfro          fast / AMP-fp16 eager = 2.75×" in lines
    assert "gfro          fast            step per forwarded image = 1.14× ArcFace's (per sample 2.27×)" in lines


def test_cli_small_run_writes_every_section(tmp_path, capsys) -> None:
    out = tmp_path / "throughput.json"
    assert main(["--device", "cpu", "--small", "--methods", "arcface", "--paths", "eager_fp32,fast", "--backbones",
                 "MobileFaceNet", "--steps", "1", "--warmup", "1", "--max-workers", "0", "--loader-samples", "32",
                 "--eval-images", "64", "--skip-partial-fc", "--json", str(out)]) == 0
    import json

    report = json.loads(out.read_text())
    assert [row["path"] for row in report["steps"]] == ["eager_fp32", "fast"]
    assert report["loader"][0]["workers"] == 0 and report["loader"][0]["samples_per_s"] > 0
    assert report["eval"][0]["images"] == 64 and "fast / AMP-fp16" not in capsys.readouterr().out
