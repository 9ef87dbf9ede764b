"""Golden tests for the verification numbers: separability, both threshold rules, spread kinds, ROC / TAR@FAR."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.model_selection import KFold

from test_protocol.protocol_base import tar_columns
from test_protocol.verification_metrics import (INSIGHTFACE_THRESHOLDS, auc, fold_splits, kfold_facexzoo,
                                                kfold_insightface, roc, spread, tar_at_far, youden_threshold)


def lfw_like_labels(folds: int = 10, per_fold: int = 300) -> np.ndarray:
    return np.tile(np.repeat([True, False], per_fold), folds)


def test_fold_splits_match_sklearn_kfold_without_shuffle():
    for n, k in [(6000, 10), (37, 10), (6, 3)]:
        for (train, test), (ref_train, ref_test) in zip(fold_splits(n, k), KFold(k, shuffle=False).split(np.arange(n))):
            assert np.array_equal(train, ref_train) and np.array_equal(test, ref_test)
    with pytest.raises(ValueError, match="num_folds"):
        fold_splits(5, 10)


def test_separable_scores_give_100_percent_in_both_variants():
    issame = lfw_like_labels()
    rng = np.random.default_rng(0)
    cosine = np.where(issame, rng.uniform(0.6, 1.0, issame.size), rng.uniform(-0.2, 0.4, issame.size))
    accuracy, _ = kfold_facexzoo(cosine, issame, 10)
    assert accuracy.tolist() == [1.0] * 10
    distance = 2.0 - 2.0 * cosine  # squared L2 of unit vectors
    accuracy, thresholds = kfold_insightface(distance, issame, 10)
    assert accuracy.tolist() == [1.0] * 10
    assert np.all((thresholds > distance[issame].max()) & (thresholds <= distance[~issame].min()))
    assert auc(cosine, issame) == 1.0
    assert tar_at_far(cosine, issame, [1e-3, 1e-4]) == {1e-3: 1.0, 1e-4: 1.0}


def test_random_scores_are_near_chance():
    issame = lfw_like_labels()
    rng = np.random.default_rng(1)
    cosine = rng.uniform(-1, 1, issame.size)
    for accuracy in (kfold_facexzoo(cosine, issame, 10)[0], kfold_insightface(2 - 2 * cosine, issame, 10)[0]):
        assert 0.45 < accuracy.mean() < 0.55
    assert abs(auc(cosine, issame) - 0.5) < 0.03


def brute_force_facexzoo(scores, issame, folds):
    """A slow, literal restatement of the FaceX-Zoo rule, as the oracle."""
    accuracies = []
    for train, test in fold_splits(scores.size, folds):
        low, high = scores[train].min(), scores[train].max()
        best, best_j = None, -np.inf
        for i in range(1, 1001):
            thr = low + (high - low) * i / 1000
            pos, neg = scores[train][issame[train]], scores[train][~issame[train]]
            j = np.mean(pos > thr) - np.mean(neg > thr)
            if j > best_j:
                best, best_j = thr, j
        test_scores, test_same = scores[test], issame[test]
        accuracies.append((np.sum(test_scores[test_same] > best) + np.sum(test_scores[~test_same] < best))
                          / test.size)
    return np.array(accuracies)


def brute_force_insightface(distances, issame, folds):
    accuracies = []
    for train, test in fold_splits(distances.size, folds):
        train_acc = [np.mean((distances[train] < t) == issame[train]) for t in INSIGHTFACE_THRESHOLDS]
        best = INSIGHTFACE_THRESHOLDS[int(np.argmax(train_acc))]
        accuracies.append(np.mean((distances[test] < best) == issame[test]))
    return np.array(accuracies)


def test_both_rules_match_their_literal_oracles_on_overlapping_scores():
    issame = lfw_like_labels(10, 30)
    rng = np.random.default_rng(2)
    cosine = np.where(issame, rng.normal(0.5, 0.2, issame.size), rng.normal(0.1, 0.2, issame.size))
    assert np.allclose(kfold_facexzoo(cosine, issame, 10)[0], brute_force_facexzoo(cosine, issame, 10))
    distance = 2 - 2 * np.clip(cosine, -1, 1)
    assert np.allclose(kfold_insightface(distance, issame, 10)[0], brute_force_insightface(distance, issame, 10))


def test_variants_differ_where_youden_and_accuracy_disagree():
    """2 positives vs 8 negatives per fold: Youden J keeps both positives (and two negatives), accuracy does not."""
    issame = np.tile(np.array([True] * 2 + [False] * 8), 10)
    cosine = np.tile(np.array([0.9, 0.3, 0.4, 0.35, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]), 10)
    assert youden_threshold(cosine, issame) < 0.3
    accuracy, _ = kfold_facexzoo(cosine, issame, 10)
    assert accuracy.mean() == pytest.approx(0.8)
    accuracy, thresholds = kfold_insightface(2 - 2 * cosine, issame, 10)
    assert accuracy.mean() == pytest.approx(0.9) and np.allclose(thresholds, 0.2)  # first grid value above 2 - 2·0.9


def test_a_score_equal_to_the_threshold_counts_as_an_error_in_facexzoo():
    issame = np.array([True, False] * 10)
    cosine = np.where(issame, 1.0, 0.0)
    cosine[1] = 0.001  # fold 0's negative sits exactly on the chosen threshold min + (max - min) / 1000
    accuracy, thresholds = kfold_facexzoo(cosine, issame, 10)
    assert thresholds[0] == 0.001
    assert accuracy[0] == 0.5 and np.all(accuracy[1:] == 1.0)


def test_spread_kinds():
    values = np.array([0.99, 0.98, 1.0, 0.97])
    assert spread(values, "std") == pytest.approx(np.std(values))
    assert spread(values, "sem") == pytest.approx(np.std(values, ddof=1) / 2.0)
    assert spread(values, "sem") > spread(values, "std") / 2.0
    with pytest.raises(ValueError, match="spread must be one of"):
        spread(values, "var")


def test_roc_and_auc_match_sklearn_with_ties():
    rng = np.random.default_rng(3)
    scores = np.round(rng.normal(size=500), 1)
    issame = rng.random(500) < 0.3
    fpr, tpr = roc(scores, issame)
    ref_fpr, ref_tpr, _ = roc_curve(issame, scores, drop_intermediate=False)
    assert np.allclose(fpr, ref_fpr) and np.allclose(tpr, ref_tpr)
    assert auc(scores, issame) == pytest.approx(roc_auc_score(issame, scores))


def test_tar_at_far_on_a_constructed_roc():
    """10,000 negatives scored 0..9999, 100 positives at 9999.5, 9997.5, ... 9801.5."""
    negatives = np.arange(10000, dtype=float)
    positives = 9999.5 - 2.0 * np.arange(100)
    scores = np.r_[positives, negatives]
    issame = np.r_[np.ones(100, bool), np.zeros(10000, bool)]
    # FAR 1e-3 allows 10 false accepts (negatives 9990..9999): positives >= 9989.5 pass, i.e. 6 of 100;
    # FAR 1e-4 allows one (9999): only 9999.5 passes; 1e-5 allows none: still 9999.5.
    assert tar_at_far(scores, issame, [1e-3, 1e-4, 1e-5]) == {1e-3: 0.06, 1e-4: 0.01, 1e-5: 0.01}
    assert tar_columns(scores, issame) == {"tar@far=1e-3": 6.0, "tar@far=1e-4": 1.0, "far_floor": 1e-4}


def test_reported_tar_skips_a_far_the_negatives_cannot_resolve():
    """LFW's 3,000 negatives resolve FAR 1e-3 (3 false accepts) but not 1e-4 (a third of one)."""
    rng = np.random.default_rng(0)
    scores = np.r_[rng.normal(1.0, 0.3, 3000), rng.normal(0.0, 0.3, 3000)]
    issame = np.r_[np.ones(3000, bool), np.zeros(3000, bool)]
    columns = tar_columns(scores, issame)
    assert columns["tar@far=1e-3"] == pytest.approx(100.0 * tar_at_far(scores, issame, [1e-3])[1e-3])
    assert columns["tar@far=1e-4"] is None and columns["far_floor"] == pytest.approx(1 / 3000)
