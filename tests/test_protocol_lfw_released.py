"""Reduced fidelity check on real LFW (../shared): align a 60-pair subset, score the released MS1M MobileFaceNet.

The full run (all 6,000 pairs, three models, both variants) is `python -m benchmarks.lfw_released_models`; its
figures are in docs/BENCHMARKS.md.
"""
from __future__ import annotations

import pytest

from benchmarks.lfw_released_models import evaluate_released


@pytest.mark.shared
@pytest.mark.slow
def test_released_ms1m_model_on_reduced_lfw_is_far_above_chance(shared, aligned_lfw_subset):
    weights = shared("weights")
    shared("weights/recognition/foamliu_mobilefacenet_ms1m.pt")
    aligned, subset = aligned_lfw_subset(60)  # 10 folds x (3 same + 3 different)
    rows = evaluate_released("foamliu_mobilefacenet_ms1m", aligned, subset, weights, "cpu", 64)
    assert [(row["variant"], row["flip"]) for row in rows] == [("facexzoo", "none"), ("insightface", "sum"),
                                                              ("insightface", "norm_weighted")]
    for row in rows:
        assert row["num_pairs"] == 60 and row["auc"] > 0.98 and row["accuracy"] > 93.0, row
