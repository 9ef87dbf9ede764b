"""Reduced fidelity check on real LFW (../shared): align a 60-pair subset, score the released MS1M MobileFaceNet.

The full run (all 6,000 pairs, three models, both variants) is `python -m benchmarks.lfw_released_models`; its
figures are in docs/BENCHMARKS.md.
"""
from __future__ import annotations

import pytest

from benchmarks.lfw_released_models import ensure_aligned_lfw, evaluate_released, subset_pairs_file
from test_protocol import PAIRS_PARSERS


@pytest.mark.shared
@pytest.mark.slow
def test_released_ms1m_model_on_reduced_lfw_is_far_above_chance(shared, tmp_path):
    images, pairs = shared("data/lfw/images"), shared("data/lfw/pairs.txt")
    weights = shared("weights")
    shared("weights/recognition/foamliu_mobilefacenet_ms1m.pt")
    subset = subset_pairs_file(pairs, 60, tmp_path / "pairs.txt")  # 10 folds x (3 same + 3 different)
    raw = tmp_path / "raw"
    raw.mkdir()
    for relative in PAIRS_PARSERS.get("lfw")(subset).images:
        flat = relative.split("/")[1]  # the shared copy is flat: NAME_####.jpg
        (raw / flat).symlink_to(images / flat)
    summary = ensure_aligned_lfw(raw, tmp_path / "aligned", workers=1)
    assert summary["images"] == len(list(raw.iterdir())) and summary["errors"] == 0
    rows = evaluate_released("foamliu_mobilefacenet_ms1m", tmp_path / "aligned", subset, weights, "cpu", 64)
    assert [(row["variant"], row["flip"]) for row in rows] == [("facexzoo", "none"), ("insightface", "sum"),
                                                              ("insightface", "norm_weighted")]
    for row in rows:
        assert row["num_pairs"] == 60 and row["auc"] > 0.98 and row["accuracy"] > 93.0, row
