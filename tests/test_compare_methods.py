"""benchmarks/compare_methods.py: rows share one budget, the summary's spreads and paired differences equal an
independent recomputation, held-out columns are the sets no method trained on, and a tiny run gives the table."""
from __future__ import annotations

import json
import math
import statistics

import numpy as np
import pytest
import torch

from benchmarks.compare_methods import (BUDGETS, DEFAULT_METHODS, SPLIT_SETS, format_tables, main, method_config,
                                        run_comparison, summarise, write_figures)
from data_processor.synthetic_faces import build_synthetic_faces
from data_processor.train_dataset import trained_families

TINY_SET = dict(num_train_identities=6, images_per_train_identity=4, num_test_identities=20,
                images_per_test_identity=3, pairs_per_fold=3)
TINY_BUDGET = {"batch_size": 4, "epochs": 1, "max_steps": 2, "lr": 0.01, "warmup_epochs": 0, "width": 0.25,
               "input_size": [64, 64]}


@pytest.mark.parametrize("budget_name", sorted(BUDGETS))
def test_methods_share_the_budget_and_differ_only_where_they_say(budget_name):
    configs = {name: method_config(name, BUDGETS[budget_name], SPLIT_SETS["test"], seed=3) for name in DEFAULT_METHODS}
    shared = {name: (c["data"]["batch_size"], c["data"]["preprocess"], c["schedule"], c["optim"],
                     c["runtime"]["seed"], c["runtime"]["max_steps"], c["eval"]["protocols"])
              for name, c in configs.items()}
    assert len({repr(value) for value in shared.values()}) == 1
    assert configs["arcface"]["runtime"]["seed"] == 3
    # the clean-only baseline flips like the others (flip no longer lives only in the occlusion wrapper)
    assert configs["arcface"]["data"]["occlusion"] is None and configs["arcface"]["data"]["flip"] == 0.5
    # every occlusion row trains on the same families, and none of them on a held-out test family
    families = {name: tuple(trained_families(c["data"]["occlusion"])) for name, c in configs.items()}
    assert families["arcface"] == ()
    assert len({families[name] for name in DEFAULT_METHODS[1:]}) == 1
    assert not set(families["gfro"]) & {"upper_accessory", "lower_accessory", "object"}


def fake_run(method: str, seed: int, accuracies: dict, tags: dict) -> dict:
    rows = [{"set": name, "variant": "facexzoo", "accuracy": acc, "occluders": tags[name],
             "hidden_fraction_bins": [{"low": 0.0, "high": 0.5, "pairs": 10, "accuracy": acc + 5},
                                      {"low": 0.5, "high": 1.0, "pairs": 30, "accuracy": acc - 5}]}
            for name, acc in accuracies.items()]
    return {"method": method, "seed": seed, "rows": rows, "parameters": 1000, "samples_per_second": 10.0}


def test_summary_matches_an_independent_recomputation():
    sets = ("CLEAN", "A", "B", "C")
    rng = np.random.default_rng(0)
    acc = {(m, s): dict(zip(sets, rng.uniform(50, 100, 4))) for m in ("base", "new") for s in (0, 1, 2)}
    tags = {"base": {"CLEAN": "clean", "A": "held_out", "B": "held_out", "C": "held_out"},
            "new": {"CLEAN": "clean", "A": "seen", "B": "held_out", "C": "held_out"}}
    runs = [fake_run(m, s, acc[m, s], tags[m]) for (m, s) in acc]
    summary = summarise(runs, ["base", "new"], sets)
    assert summary["held_out_sets"] == ["B", "C"] and summary["clean_sets"] == ["CLEAN"]
    held = {(m, s): (acc[m, s]["B"] + acc[m, s]["C"]) / 2 for (m, s) in acc}
    diffs = [held["new", s] - held["base", s] for s in (0, 1, 2)]
    new = summary["methods"]["new"]
    assert new["held_out_diff"][0] == pytest.approx(sum(diffs) / 3)
    assert new["held_out_diff"][1] == pytest.approx(statistics.stdev(diffs))
    cleans = [acc["new", s]["CLEAN"] for s in (0, 1, 2)]
    assert new["clean_mean"] == pytest.approx((statistics.fmean(cleans), statistics.stdev(cleans)))
    assert new["sets"]["A"]["occluders"] == "seen"
    # robustness bins pool pairs over held-out sets and seeds: 6 rows × 10 / × 30 pairs
    bins = new["robustness"]
    assert [b["pairs"] for b in bins] == [60, 180]
    expected_low = statistics.fmean(acc["new", s][n] + 5 for s in (0, 1, 2) for n in ("B", "C"))
    assert bins[0]["accuracy"] == pytest.approx(expected_low)
    table = format_tables(summary, sets, "test")
    assert "held-out mean over the sets no method trained on: B, C" in table
    assert f"{sum(diffs) / 3:+.2f} ± {statistics.stdev(diffs):.2f}" in table


def test_unknown_method_is_named(tmp_path):
    with pytest.raises(Exception, match="no_such_method"):
        main(["--work-dir", str(tmp_path), "--methods", "arcface,no_such_method"])


@pytest.fixture
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_tiny_comparison_gives_a_table_with_seen_and_held_out_columns(tmp_path, monkeypatch, one_torch_thread):
    root = tmp_path / "synthetic_faces"
    build_synthetic_faces(root, seed=0, **TINY_SET)
    monkeypatch.setenv("FACE_DATA_ROOT", str(tmp_path))
    extra = [f"data.train.root={root}", "data.num_workers=0", "eval.batch_size=32", "runtime.log_interval=1",
             *(f"+data.train.{key}={value}" for key, value in TINY_SET.items())]
    sets = ("SYNTH", "SYNTH-CROP", "SYNTH-MASK")
    monkeypatch.setitem(SPLIT_SETS, "test", sets)
    report = run_comparison(["arcface", "gfro"], [0, 1], TINY_BUDGET, "test", tmp_path / "runs", extra)
    summary = report["summary"]
    assert summary["held_out_sets"] == ["SYNTH-MASK"]          # CROP is seen by GFRO (partial views)
    assert summary["methods"]["gfro"]["sets"]["SYNTH-CROP"]["occluders"] == "seen"
    assert summary["methods"]["arcface"]["sets"]["SYNTH-CROP"]["occluders"] == "held_out"
    for run in report["runs"]:
        assert run["steps"] == 2
        assert all(math.isfinite(row["accuracy"]) for row in run["rows"])
    assert summary["methods"]["gfro"]["paired_seeds"] == [0, 1]
    figures = write_figures(summary, tmp_path, "test")
    assert all(path.read_bytes()[:4] == b"\x89PNG" for path in figures)

    # --reuse: the same (method, seed) pairs come from the report, nothing trains again; another budget is refused
    stored = tmp_path / "report.json"
    stored.write_text(json.dumps(report, default=float))
    monkeypatch.setattr("benchmarks.compare_methods.run_one", lambda *args: pytest.fail(f"trained again: {args[:2]}"))
    again = run_comparison(["arcface", "gfro"], [0, 1], TINY_BUDGET, "test", tmp_path / "runs", extra,
                           reuse=[stored])
    assert again["summary"]["methods"]["gfro"]["held_out_mean"] == summary["methods"]["gfro"]["held_out_mean"]
    assert again["reused_from"] == [str(stored)]
    with pytest.raises(ValueError, match="budget"):
        run_comparison(["arcface"], [0], {**TINY_BUDGET, "epochs": 9}, "test", tmp_path / "runs", extra,
                       reuse=[stored])
