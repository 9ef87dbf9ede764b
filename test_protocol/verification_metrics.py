"""Numbers behind the verification protocols: k-fold accuracy (two variants), spread, ROC, TAR@FAR, AUC.

``facexzoo``: per test fold, 1000 thresholds evenly spaced over ``(min, max]`` of the *train* folds' scores, the one
maximising TPR − FPR (Youden J) is kept; a test pair is accepted when ``score > thr`` and rejected when
``score < thr`` (a tie counts as an error, as in FaceX-Zoo).
``insightface``: thresholds 0, 0.01, …, 3.99 on the squared L2 distance, the first maximising train accuracy is
kept; a pair is accepted when ``distance < thr``.
Folds are contiguous slices of the pair order (what ``sklearn`` ``KFold(n_folds, shuffle=False)`` gives): parsers
emit pairs in fold order. ROC and AUC are computed here with numpy (same values as ``sklearn.metrics.roc_curve`` /
``roc_auc_score``), which keeps scikit-learn's multi-second import out of training and the CLI.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np

SPREAD_KINDS = ("std", "sem")
INSIGHTFACE_THRESHOLDS = np.arange(0.0, 4.0, 0.01)


def fold_splits(num_pairs: int, num_folds: int) -> List[Tuple[np.ndarray, np.ndarray]]:
    """(train, test) index arrays of contiguous folds over the pair order (the first ``n % k`` folds one larger)."""
    if num_folds < 2 or num_folds > num_pairs:
        raise ValueError(f"num_folds must be in [2, {num_pairs}] for {num_pairs} pairs, got {num_folds}")
    indices = np.arange(num_pairs)
    return [(np.setdiff1d(indices, test, assume_unique=True), test) for test in np.array_split(indices, num_folds)]


def youden_threshold(scores: np.ndarray, issame: np.ndarray, num_thresholds: int = 1000) -> float:
    """The threshold (of ``num_thresholds`` evenly spaced over ``(min, max]``) maximising TPR − FPR."""
    low, high = float(scores.min()), float(scores.max())
    thresholds = low + (high - low) * np.arange(1, num_thresholds + 1) / num_thresholds
    positives, negatives = np.sort(scores[issame]), np.sort(scores[~issame])
    tpr = 1.0 - np.searchsorted(positives, thresholds, side="right") / max(positives.size, 1)
    fpr = 1.0 - np.searchsorted(negatives, thresholds, side="right") / max(negatives.size, 1)
    return float(thresholds[int(np.argmax(tpr - fpr))])


def youden_accuracy(scores: np.ndarray, issame: np.ndarray, threshold: float) -> float:
    correct = np.sum(scores[issame] > threshold) + np.sum(scores[~issame] < threshold)
    return float(correct) / scores.size


def accuracy_threshold(distances: np.ndarray, issame: np.ndarray,
                       thresholds: np.ndarray = INSIGHTFACE_THRESHOLDS) -> float:
    """The first threshold of ``thresholds`` maximising accuracy of ``distance < thr`` ⇔ same."""
    accepted = distances[None, :] < thresholds[:, None]
    accuracy = (accepted == issame[None, :]).mean(axis=1)
    return float(thresholds[int(np.argmax(accuracy))])


def distance_accuracy(distances: np.ndarray, issame: np.ndarray, threshold: float) -> float:
    return float(np.mean((distances < threshold) == issame))


def kfold_facexzoo(scores: np.ndarray, issame: np.ndarray, num_folds: int) -> Tuple[np.ndarray, np.ndarray]:
    """Per-fold test accuracy and threshold, FaceX-Zoo rule (cosine scores, Youden threshold)."""
    accuracies, thresholds = [], []
    for train, test in fold_splits(scores.size, num_folds):
        threshold = youden_threshold(scores[train], issame[train])
        thresholds.append(threshold)
        accuracies.append(youden_accuracy(scores[test], issame[test], threshold))
    return np.asarray(accuracies), np.asarray(thresholds)


def kfold_insightface(distances: np.ndarray, issame: np.ndarray, num_folds: int) -> Tuple[np.ndarray, np.ndarray]:
    """Per-fold test accuracy and threshold, insightface rule (squared L2, accuracy-chosen grid threshold)."""
    accuracies, thresholds = [], []
    for train, test in fold_splits(distances.size, num_folds):
        threshold = accuracy_threshold(distances[train], issame[train])
        thresholds.append(threshold)
        accuracies.append(distance_accuracy(distances[test], issame[test], threshold))
    return np.asarray(accuracies), np.asarray(thresholds)


SPREAD_LABELS = {"sem": "s.e.", "std": "std"}


def spread_label(kind: str) -> str:
    """What a ± of this spread kind is, for tables and captions: ``s.e.`` (facexzoo) or ``std`` (insightface)."""
    return SPREAD_LABELS.get(kind, kind)


def spread(values: Sequence[float], kind: str) -> float:
    """``std``: population std (ddof 0, insightface); ``sem``: std(ddof 1)/√k (FaceX-Zoo's standard error)."""
    values = np.asarray(values, dtype=np.float64)
    if kind == "std":
        return float(values.std())
    if kind == "sem":
        return float(values.std(ddof=1) / np.sqrt(values.size)) if values.size > 1 else 0.0
    raise ValueError(f"spread must be one of {SPREAD_KINDS}, got {kind!r}")


def roc(similarities: np.ndarray, issame: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) at every distinct score threshold, from (0, 0) upwards (accept when score ≥ threshold)."""
    issame = np.asarray(issame, dtype=bool)
    positives, negatives = int(issame.sum()), int((~issame).sum())
    if positives == 0 or negatives == 0:
        raise ValueError(f"a ROC needs both classes, got {positives} positive and {negatives} negative pairs")
    order = np.argsort(-np.asarray(similarities), kind="mergesort")
    ranked, labels = np.asarray(similarities)[order], issame[order]
    last_of_each_score = np.r_[np.flatnonzero(np.diff(ranked)), ranked.size - 1]
    true_accepts = np.cumsum(labels)[last_of_each_score]
    false_accepts = last_of_each_score + 1 - true_accepts
    return np.r_[0.0, false_accepts / negatives], np.r_[0.0, true_accepts / positives]


def tar_at_far(similarities: np.ndarray, issame: np.ndarray, fars: Sequence[float]) -> Dict[float, float]:
    """TAR at each FAR: the highest true-accept rate over ROC points whose false-accept rate is ≤ FAR.

    With ``n`` negatives a FAR below ``1/n`` is read at zero false accepts.
    """
    fpr, tpr = roc(similarities, issame)
    return {far: float(tpr[fpr <= far].max()) for far in fars}


def auc(similarities: np.ndarray, issame: np.ndarray) -> float:
    """Area under the ROC curve (trapezoids; ties count one half)."""
    fpr, tpr = roc(similarities, issame)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))
