"""Robustness-curve data: per-pair correctness under each fold's threshold, hidden-fraction bins, face region."""
from __future__ import annotations

import numpy as np
import pytest

from test_protocol.lfw.occluded_set_builder import face_box, hidden_fraction, read_hidden_fractions
from test_protocol.pairs_parsers import pair_list_from_names
from test_protocol.robustness import (BIN_EDGES, binned_accuracy, fold_correct, hidden_fraction_bins,
                                      pair_hidden_fractions)
from test_protocol.verification_metrics import kfold_facexzoo, kfold_insightface
from data_processor.landmarks import ARCFACE_TEMPLATE_112


def scored_pairs(seed: int = 0, pairs: int = 600):
    rng = np.random.default_rng(seed)
    issame = np.arange(pairs) % 2 == 0
    similarity = np.where(issame, 0.45, 0.1) + rng.normal(0, 0.2, pairs)
    hidden = rng.uniform(0, 1, pairs)
    return similarity, issame, hidden


@pytest.mark.parametrize("variant", ["facexzoo", "insightface"])
def test_pair_weighted_mean_of_the_bins_is_the_rows_accuracy(variant):
    similarity, issame, hidden = scored_pairs()
    if variant == "facexzoo":
        accuracies, thresholds = kfold_facexzoo(similarity, issame, 10)
        correct = fold_correct(similarity, issame, thresholds, 10, "facexzoo")
    else:
        distances = 2.0 - 2.0 * similarity
        accuracies, thresholds = kfold_insightface(distances, issame, 10)
        correct = fold_correct(distances, issame, thresholds, 10, "insightface")
    assert 100.0 * correct.mean() == pytest.approx(100.0 * accuracies.mean())
    bins = hidden_fraction_bins(hidden, correct)
    assert [(b["low"], b["high"]) for b in bins] == list(zip(BIN_EDGES[:-1], BIN_EDGES[1:]))
    assert sum(b["pairs"] for b in bins) == issame.size
    assert binned_accuracy(bins) == pytest.approx(100.0 * accuracies.mean())


def test_bin_edges_empty_bins_and_the_closed_last_bin():
    bins = hidden_fraction_bins([0.0, 0.0999, 0.1, 0.95, 1.0, 1.0], [True, False, True, True, False, True])
    counts = [b["pairs"] for b in bins]
    assert counts == [2, 1, 0, 0, 0, 0, 0, 0, 0, 3]
    assert bins[0]["accuracy"] == 50.0 and bins[2]["accuracy"] is None
    assert bins[-1]["accuracy"] == pytest.approx(200.0 / 3)
    with pytest.raises(ValueError, match="hidden fractions for"):
        hidden_fraction_bins([0.1], [True, False])


def test_a_pairs_hidden_fraction_is_the_larger_of_its_images_unlisted_is_clean(tmp_path):
    pairs = pair_list_from_names([("a/1.png", "a/2.png", True), ("a/1.png", "b/1.png", False),
                                  ("b/2.png", "b/1.png", True)], "test")
    table_file = tmp_path / "hidden_fraction.txt"
    table_file.write_text("a/1.png 0.300000\nb/1.png 0.700000\n")
    table = read_hidden_fractions(table_file)
    assert pair_hidden_fractions(pairs, table).tolist() == [0.3, 0.7, 0.7]
    assert pair_hidden_fractions(pairs, {}).tolist() == [0.0, 0.0, 0.0]


def test_hidden_fraction_is_measured_inside_the_face_box():
    landmarks = np.asarray(ARCFACE_TEMPLATE_112, dtype=np.float64)
    x0, y0, x1, y1 = face_box(landmarks, (112, 112))
    assert (x0, y0, x1, y1) == (20, 18, 92, 109)
    visibility = np.ones((112, 112), dtype=np.uint8)
    assert hidden_fraction(visibility, landmarks) == 0.0
    visibility[:, :x0] = 0                      # background outside the box does not count
    assert hidden_fraction(visibility, landmarks) == 0.0
    visibility[y0:y1, x0:(x0 + x1) // 2] = 0    # the left half of the box
    assert hidden_fraction(visibility, landmarks) == pytest.approx(0.5)
    assert hidden_fraction(np.zeros((112, 112), np.uint8), landmarks) == 1.0
