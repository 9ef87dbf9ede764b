"""10-fold pair verification (LFW, CALFW, CPLFW, AgeDB-30, RFW, ``.bin`` sets and their occluded copies).

Two variants, named in every result row (see ``verification_metrics`` for the exact rules):

- ``facexzoo`` (default): cosine of L2-normalised embeddings, no flip, Youden threshold over the train folds'
  score range, mean ± standard error (std(ddof=1)/√k).
- ``insightface``: squared L2 distance of L2-normalised (flip-summed) embeddings, accuracy-chosen threshold on the
  0..4 grid, mean ± std (ddof 0).

``flip`` overrides the variant's default (``none`` / ``sum`` / ``norm_weighted``, see ``extract``); note that
insightface's own ``verification.py`` sums the raw outputs, which is ``norm_weighted`` here — on LFW the two differ
by a few hundredths of a percent (docs/BENCHMARKS.md).

Both also give ROC AUC and TAR@FAR=1e-3/1e-4 over all pairs. Usage::

    protocol = PROTOCOLS.build({"type": "PairVerification", "name": "LFW", "root": ..., "pairs_file": ...})
    embeddings = extract_views(model, protocol.images(), spec, device, with_flip=protocol.needs_flip)
    protocol.process(range(len(embeddings)), embeddings)
    row = protocol.compute(checkpoint="work_dirs/x/checkpoints/last.pt")

Every image the pairs need is checked at construction: a missing image is a ``FileNotFoundError`` naming the count
and the first few paths, before any embedding work; a missing root or pairs file is ``SetNotAvailable``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from data_processor.image_io import decode_image
from test_protocol import PAIRS_PARSERS, PROTOCOLS
from test_protocol.extract import ImageSource, check_flip
from test_protocol.pairs_parsers import PairList
from test_protocol.protocol_base import (EmbeddingProtocol, check_available, check_images_exist, file_sha256,
                                         fuse_branch_scores, tar_columns)
from test_protocol.robustness import fold_correct
from test_protocol.verification_metrics import SPREAD_KINDS, auc, kfold_facexzoo, kfold_insightface, spread

VARIANTS = ("facexzoo", "insightface")
VARIANT_DEFAULTS = {
    "facexzoo": {"flip": "none", "spread": "sem", "threshold_rule": "youden", "score": "cosine"},
    "insightface": {"flip": "sum", "spread": "std", "threshold_rule": "accuracy", "score": "squared_l2"},
}


class EncodedImages(Dataset):
    """Decodes the encoded images of a ``.bin`` set on access (uint8 RGB ``H×W×3``)."""

    def __init__(self, encoded: Sequence[bytes], source: str) -> None:
        self.encoded, self.source = encoded, source

    def __len__(self) -> int:
        return len(self.encoded)

    def __getitem__(self, index: int) -> np.ndarray:
        return decode_image(self.encoded[index], f"{self.source} image {index}")


@PROTOCOLS.register()
class PairVerification(EmbeddingProtocol):
    """k-fold verification on a pairs file; ``compute()`` returns one result row (see the module docstring)."""

    def __init__(self, name: str, pairs_file: str, root: Optional[str] = None, parser: str = "lfw",
                 image_ext: str = ".jpg", variant: str = "facexzoo", flip: Optional[str] = None,
                 spread: Optional[str] = None, num_folds: Optional[int] = None) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"{name}: variant must be one of {VARIANTS}, got {variant!r}")
        defaults = VARIANT_DEFAULTS[variant]
        self.name, self.variant = name, variant
        self.flip = check_flip(flip or defaults["flip"])
        self.spread_kind = spread or defaults["spread"]
        if self.spread_kind not in SPREAD_KINDS:
            raise ValueError(f"{name}: spread must be one of {SPREAD_KINDS}, got {self.spread_kind!r}")
        self.pairs_file = Path(pairs_file)
        self.root = Path(root) if root is not None else None
        if parser != "bin" and self.root is None:
            raise ValueError(f"{name}: 'root' (the image folder) is required for parser {parser!r}")
        check_available(name, [self.root, self.pairs_file])
        self.pairs: PairList = PAIRS_PARSERS.get(parser)(self.pairs_file, image_ext=image_ext,
                                                          num_folds=num_folds or 10)
        self.num_folds = num_folds or self.pairs.num_folds or 10
        self.pairs_sha256 = file_sha256(self.pairs_file)
        if self.pairs.encoded is None:
            check_images_exist(name, self.root, self.pairs.images, str(self.pairs_file))
            self._setup(self.pairs.images, str(self.root) + "/")
        else:
            self._setup(self.pairs.images, str(self.pairs_file))

    pair_correct: Optional[np.ndarray] = None  # per pair, after compute(): right under its test fold's threshold

    def images(self) -> ImageSource:
        """What ``extract_views`` takes: the paths, or a Dataset decoding a ``.bin``'s images."""
        if self.pairs.encoded is not None:
            return EncodedImages(self.pairs.encoded, str(self.pairs_file))
        return self.image_paths()

    branch_scores: Optional[np.ndarray] = None  # with a pair_scorer: [pairs, k] scores before fusion

    def scores(self) -> np.ndarray:
        """Similarity per pair (higher = same): cosine (facexzoo) or minus squared L2 distance (insightface).

        With a model ``pair_scorer`` (e.g. OAML): its branch scores, each min-max normalised over all pairs of the set
        and fused with its ``fusion_weights`` into s in [0, 1]; insightface gets ``4·(s − 1)`` (minus a distance on
        its 0..4 threshold grid)."""
        if self.pair_scorer is not None:
            self.branch_scores = self.pair_branch_scores(self.pairs.first, self.pairs.second)
            fused = fuse_branch_scores(self.branch_scores, getattr(self.pair_scorer, "fusion_weights", None))
            return fused if self.variant == "facexzoo" else 4.0 * (fused - 1.0)
        embeddings = self.normalised_embeddings()
        first = embeddings[torch.from_numpy(self.pairs.first)]
        second = embeddings[torch.from_numpy(self.pairs.second)]
        if self.variant == "facexzoo":
            return (first * second).sum(dim=1).double().numpy()
        return -((first - second) ** 2).sum(dim=1).double().numpy()

    def compute(self, checkpoint: str = "") -> Dict[str, Any]:
        similarity, issame = self.scores(), self.pairs.issame
        if self.variant == "facexzoo":
            accuracies, thresholds = kfold_facexzoo(similarity, issame, self.num_folds)
            self.pair_correct = fold_correct(similarity, issame, thresholds, self.num_folds, "facexzoo")
        else:
            accuracies, thresholds = kfold_insightface(-similarity, issame, self.num_folds)
            self.pair_correct = fold_correct(-similarity, issame, thresholds, self.num_folds, "insightface")
        self.store_curve(similarity, issame)
        defaults = VARIANT_DEFAULTS[self.variant]
        return {
            "set": self.name, "variant": self.variant, "flip": self.flip,
            "threshold_rule": defaults["threshold_rule"],
            "score": defaults["score"] if self.pair_scorer is None else getattr(self.pair_scorer, "score_name",
                                                                                 "pair_scorer"),
            "accuracy": 100.0 * float(accuracies.mean()),
            "spread": 100.0 * spread(accuracies, self.spread_kind), "spread_kind": self.spread_kind,
            "threshold": float(thresholds.mean()), "auc": auc(similarity, issame),
            **tar_columns(similarity, issame),
            "num_pairs": int(issame.size), "num_folds": self.num_folds, "pairs_sha256": self.pairs_sha256,
            "checkpoint": checkpoint, **self.branch_accuracies(),
        }

    def branch_accuracies(self) -> Dict[str, Any]:
        """With a pair_scorer: ``{"branch_accuracy": {name: %}}``, each branch alone under this variant's rule."""
        if self.pair_scorer is None or self.branch_scores is None:
            return {}
        names = getattr(self.pair_scorer, "score_names", None) or [str(k) for k in range(self.branch_scores.shape[1])]
        result = {}
        for name, column in zip(names, self.branch_scores.T):
            single = fuse_branch_scores(column[:, None])
            if self.variant == "facexzoo":
                accuracies, _ = kfold_facexzoo(single, self.pairs.issame, self.num_folds)
            else:
                accuracies, _ = kfold_insightface(4.0 * (1.0 - single), self.pairs.issame, self.num_folds)
            result[name] = 100.0 * float(accuracies.mean())
        return {"branch_accuracy": result}
