"""benchmarks/gfro_ablation.py machinery: the four rows share the budget, and a tiny run gives a 4-row table."""
from __future__ import annotations

import math

import pytest
import torch

from benchmarks.gfro_ablation import (BUDGETS, CLEAN_SET, OCCLUDED_SETS, ROWS, format_ablation_table, main,
                                      row_config, run_ablation, write_ablation_figure)
from data_processor.synthetic_faces import build_synthetic_faces

TINY_SET = dict(num_train_identities=6, images_per_train_identity=4, num_test_identities=20,
                images_per_test_identity=3, pairs_per_fold=3)
TINY_BUDGET = {"batch_size": 4, "epochs": 1, "max_steps": 2, "lr": 0.01, "warmup_epochs": 0, "width": 0.25,
               "input_size": [64, 64]}


def tiny_overrides(root) -> list:
    return [f"data.train.root={root}", "data.num_workers=0", "eval.batch_size=32", "runtime.log_interval=1",
            *(f"+data.train.{key}={value}" for key, value in TINY_SET.items())]


@pytest.fixture
def one_torch_thread():
    """Training on a shared 2-core machine is several times faster with one torch thread than oversubscribed."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("budget_name", sorted(BUDGETS))
def test_rows_share_the_budget(budget_name):
    configs = [row_config(row, BUDGETS[budget_name], []) for row in ROWS]
    shared = [(c["data"]["batch_size"], c["data"]["preprocess"], c["schedule"]["type"], c["schedule"]["epochs"],
               c["schedule"]["warmup_epochs"], c["schedule"]["min_lr_ratio"], c["optim"], c["runtime"]["seed"],
               c["runtime"]["max_steps"], c["eval"]["protocols"]) for c in configs]
    assert all(entry == shared[0] for entry in shared)
    trunks = [c["backbone"]["trunk"] if c["backbone"]["type"] == "GFROEmbedding" else c["backbone"] for c in configs]
    assert {(t["type"], t["width"], tuple(t["input_size"]), t["feat_dim"]) for t in trunks} == {
        ("MobileFaceNet", BUDGETS[budget_name]["width"], tuple(BUDGETS[budget_name]["input_size"]), 512)}
    assert configs[0]["data"]["occlusion"] is None and configs[0]["training_mode"]["type"] == "ConventionalTraining"
    assert [c["training_mode"].get("contrastive_weight") for c in configs[1:]] == [0.0, 1.0, 1.0]
    assert [c["backbone"]["type"] for c in configs] == ["MobileFaceNet"] * 3 + ["GFROEmbedding"]
    occlusions = [c["data"]["occlusion"] for c in configs[1:]]
    assert all(occlusion == occlusions[0] for occlusion in occlusions)


def test_tiny_ablation_gives_four_finite_rows(tmp_path, monkeypatch, one_torch_thread):
    root = tmp_path / "synthetic_faces"
    build_synthetic_faces(root, seed=0, **TINY_SET)
    monkeypatch.setenv("FACE_DATA_ROOT", str(tmp_path))  # the eval sets (and occluded copies) live there
    report = run_ablation(TINY_BUDGET, tmp_path / "runs", tiny_overrides(root))
    results = report["results"]
    assert [result["row"] for result in results] == [row.name for row in ROWS]
    for result in results:
        assert result["steps"] == 2 and result["batch_size"] == 4
        for name in (CLEAN_SET, *OCCLUDED_SETS):
            assert math.isfinite(result["accuracy"][name]) and 0.0 <= result["accuracy"][name] <= 100.0
        assert math.isfinite(result["occluded_mean"])
    table = format_ablation_table(results).splitlines()
    assert len(table) == 2 + 4 and all(name in table[0] for name in OCCLUDED_SETS)
    assert set(report["bar"]) == {"occluded_gain", "clean_change", "met"}
    assert write_ablation_figure(report, tmp_path / "ablation.png").read_bytes()[:4] == b"\x89PNG"


def test_unknown_override_names_the_key(tmp_path):
    with pytest.raises(Exception, match="no_such_key"):
        main(["--work-dir", str(tmp_path), "--set", "data.no_such_key=1"])
