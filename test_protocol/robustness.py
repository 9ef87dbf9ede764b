"""Seen / held-out tags and robustness-curve data of an evaluation row (issue 12).

Every verification row gets, from :func:`annotate_row` (one code path for the Trainer's ``eval.protocols`` and
``test_protocol.test_lfw_adapt``):

- ``split``: ``"test"`` or ``"val"`` (data_conf.yaml's ``split`` key; ``test`` when absent).
- ``occluder_families``: the families of the set's occlusion kinds (``manifest.json`` beside the set's pairs file:
  the kinds actually drawn, ``counts.kinds``, else ``kinds``); ``[]`` for a clean set — one without an occluded-set
  manifest (the synthetic faces themselves, LFW, ...) or whose manifest occluded no image.
- ``occluders``: ``"clean"`` for a clean set; otherwise ``seen_or_held_out(kinds, trained_families)`` →
  ``"seen"`` / ``"held_out"``, or ``"unknown"`` when the model's trained families are not known (a released
  model, an export written before they were recorded).
- ``hidden_fraction_bins`` (sets whose folder holds ``hidden_fraction.txt``): accuracy against the fraction of the
  face hidden. A pair's hidden fraction is the larger of its two images' (an image the file does not list is
  unoccluded: 0; see ``occluded_set_builder.hidden_fraction`` for the face region). Bins are fixed, 0.1 wide:
  ``[0.0, 0.1), [0.1, 0.2), ..., [0.9, 1.0]`` (the last one closed), all ten always listed so curves of different
  models line up; an empty bin has ``pairs: 0`` and ``accuracy: None``. A pair is correct under the row's own
  k-fold rule: the threshold of the fold in which it is a *test* pair (facexzoo: Youden threshold, ``score > thr``
  for same / ``score < thr`` for different; insightface: its accuracy-chosen distance threshold). The pair-weighted
  mean of the bins' accuracies is therefore the pooled accuracy over all pairs, which equals the row's ``accuracy``
  (the mean of the fold accuracies) whenever the folds are equally large — as in every LFW-format set here.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from data_processor.occlusion.families import CLEAN, CLEAN_NAMES, families_of, seen_or_held_out
from test_protocol.verification_metrics import fold_splits

UNKNOWN = "unknown"
BIN_EDGES = tuple(round(0.1 * k, 1) for k in range(11))  # 0.0, 0.1, ..., 1.0
HIDDEN_FRACTION_FILE = "hidden_fraction.txt"
ROW_KEYS = ("split", "occluders", "occluder_families", "hidden_fraction_bins")


def fold_correct(scores: np.ndarray, issame: np.ndarray, thresholds: Sequence[float], num_folds: int,
                 rule: str) -> np.ndarray:
    """Per pair: is it right under the threshold of the fold in which it is a test pair?

    ``rule="facexzoo"``: ``scores`` are similarities, same ⇔ ``score > thr``, different ⇔ ``score < thr`` (a tie is
    an error); ``rule="insightface"``: ``scores`` are distances, same ⇔ ``distance < thr``. ``thresholds``: one per
    fold, as ``kfold_facexzoo`` / ``kfold_insightface`` return them.
    """
    scores, issame = np.asarray(scores, dtype=np.float64), np.asarray(issame, dtype=bool)
    correct = np.zeros(scores.size, dtype=bool)
    for (_, test), threshold in zip(fold_splits(scores.size, num_folds), thresholds):
        if rule == "facexzoo":
            correct[test] = np.where(issame[test], scores[test] > threshold, scores[test] < threshold)
        elif rule == "insightface":
            correct[test] = (scores[test] < threshold) == issame[test]
        else:
            raise ValueError(f"rule must be facexzoo or insightface, got {rule!r}")
    return correct


def hidden_fraction_bins(pair_hidden: Sequence[float], correct: Sequence[bool],
                         edges: Sequence[float] = BIN_EDGES) -> List[Dict[str, Any]]:
    """``[{"low", "high", "pairs", "accuracy" (%, None when empty)}, ...]`` over ``edges`` (last bin closed)."""
    hidden = np.clip(np.asarray(pair_hidden, dtype=np.float64), edges[0], edges[-1])
    correct = np.asarray(correct, dtype=bool)
    if hidden.shape != correct.shape:
        raise ValueError(f"{hidden.size} hidden fractions for {correct.size} pairs")
    index = np.clip(np.searchsorted(np.asarray(edges, dtype=np.float64), hidden, side="right") - 1, 0,
                    len(edges) - 2)
    bins = []
    for k in range(len(edges) - 1):
        members = index == k
        count = int(members.sum())
        bins.append({"low": float(edges[k]), "high": float(edges[k + 1]), "pairs": count,
                     "accuracy": 100.0 * float(correct[members].mean()) if count else None})
    return bins


def binned_accuracy(bins: Sequence[Mapping[str, Any]]) -> float:
    """Pair-weighted mean accuracy (%) of ``bins`` (the pooled accuracy they came from)."""
    total = sum(b["pairs"] for b in bins)
    return sum(b["pairs"] * b["accuracy"] for b in bins if b["pairs"]) / total


def pair_hidden_fractions(pairs: Any, table: Mapping[str, float]) -> np.ndarray:
    """Per pair of a ``PairList``: max of its two images' hidden fractions (unlisted image: 0)."""
    per_image = np.array([float(table.get(name, 0.0)) for name in pairs.images], dtype=np.float64)
    if per_image.size == 0:
        return np.zeros(len(pairs))
    return np.maximum(per_image[pairs.first], per_image[pairs.second])


def read_hidden_fractions(path: Path) -> Dict[str, float]:
    from test_protocol.lfw.occluded_set_builder import read_hidden_fractions as read

    return read(path)


def set_folder(protocol: Any) -> Optional[Path]:
    """The folder of an occluded set (the one holding its pairs file and manifest.json), if any."""
    pairs_file = getattr(protocol, "pairs_file", None)
    return Path(pairs_file).parent if pairs_file is not None else None


def set_occlusion_kinds(protocol: Any) -> List[str]:
    """The occlusion kinds an evaluated set's images carry (``[]`` = clean), from its folder's manifest.json."""
    folder = set_folder(protocol)
    manifest_path = folder / "manifest.json" if folder is not None else None
    if manifest_path is None or not manifest_path.is_file():
        return []
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except ValueError:
        return []
    if not isinstance(manifest, dict) or "occlusion" not in (manifest.get("config") or {}):
        return []  # not an occluded-set manifest (occluded_set_builder writes config.occlusion)
    drawn = manifest.get("counts", {}).get("kinds") if isinstance(manifest.get("counts"), dict) else None
    kinds = list(drawn) if isinstance(drawn, dict) else list(manifest.get("kinds") or [])
    return sorted(kind for kind in kinds if kind not in CLEAN_NAMES)


def occluder_tag(kinds: Sequence[str], trained_families: Optional[Sequence[str]]) -> str:
    """``clean`` / ``seen`` / ``held_out`` / ``unknown`` (occluded set, model's trained families not known)."""
    if not families_of(kinds):
        return CLEAN
    if trained_families is None:
        return UNKNOWN
    return seen_or_held_out(list(kinds), trained_families)


def annotate_row(row: Dict[str, Any], protocol: Any, trained_families: Optional[Sequence[str]],
                 split: str = "test") -> Dict[str, Any]:
    """``row`` plus ``split``, ``occluders``, ``occluder_families`` and (when the set has per-image hidden
    fractions and the protocol kept per-pair correctness) ``hidden_fraction_bins``; see the module docstring."""
    kinds = set_occlusion_kinds(protocol)
    row = {**row, "split": split, "occluders": occluder_tag(kinds, trained_families),
           "occluder_families": families_of(kinds)}
    folder, correct = set_folder(protocol), getattr(protocol, "pair_correct", None)
    pairs = getattr(protocol, "pairs", None)
    if folder is not None and correct is not None and pairs is not None:
        table_path = folder / HIDDEN_FRACTION_FILE
        if table_path.is_file():
            row["hidden_fraction_bins"] = hidden_fraction_bins(
                pair_hidden_fractions(pairs, read_hidden_fractions(table_path)), correct)
    return row
