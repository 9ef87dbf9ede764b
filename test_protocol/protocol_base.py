"""Plumbing shared by the embedding-based protocols: image keys, the embedding store, checksums, errors."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from test_protocol.extract import EmbeddingViews, ImageSource
from test_protocol.verification_metrics import roc, tar_at_far
from utils.provenance import first_few

TAR_FARS = (1e-3, 1e-4)
MAX_LISTED_MISSING = 5


class SetNotAvailable(FileNotFoundError):
    """The data set itself (root folder or pairs file) is absent: reported as 'not available', not as an error."""

    def __init__(self, name: str, missing: Path) -> None:
        super().__init__(f"{name}: not available: {missing} missing")
        self.name = name
        self.missing = missing


def file_sha256(paths: Union[Path, Sequence[Path]], length: int = 12) -> str:
    """First ``length`` hex digits of the SHA-256 of one file (or of several, concatenated)."""
    digest = hashlib.sha256()
    for path in [paths] if isinstance(paths, Path) else paths:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:length]


def check_available(name: str, paths: Iterable[Optional[Path]]) -> None:
    for path in paths:
        if path is not None and not path.exists():
            raise SetNotAvailable(name, path)


def check_images_exist(name: str, root: Path, relative_paths: Sequence[str], source: str) -> None:
    """FileNotFoundError with the count and the first few paths when any image under ``root`` is missing."""
    missing = [p for p in relative_paths if not (root / p).is_file()]
    if missing:
        raise FileNotFoundError(f"{name}: {len(missing)} of {len(relative_paths)} images named by {source} are "
                                f"missing under {root}; first: {first_few(missing, MAX_LISTED_MISSING)}")


def rate_key(value: float, metric: str = "tar", rate: str = "far") -> str:
    """A result key ``<metric>@<rate>=<value>``, exponent written short: ``tar@far=1e-3``, ``tpir@fpir=1e-2``."""
    return f"{metric}@{rate}={value:.0e}".replace("e-0", "e-")


def tar_columns(similarity: np.ndarray, issame: np.ndarray) -> Dict[str, Optional[float]]:
    """``{"tar@far=1e-3": %, "tar@far=1e-4": %, "far_floor": 1/negatives}``.

    A FAR the pairs cannot resolve (fewer than one false accept allowed: FAR · negatives < 1, e.g. 1e-4 on LFW's
    3,000 negative pairs) is None — shown as '-' — rather than the TAR at zero false accepts passed off as that FAR.
    """
    negatives = int(np.count_nonzero(~np.asarray(issame, dtype=bool)))
    columns: Dict[str, Optional[float]] = {
        rate_key(far): 100.0 * tar if far * negatives >= 1.0 - 1e-9 else None
        for far, tar in tar_at_far(similarity, issame, TAR_FARS).items()}
    columns["far_floor"] = 1.0 / negatives
    return columns


def fuse_branch_scores(scores: np.ndarray, weights: Optional[Sequence[float]] = None) -> np.ndarray:
    """One similarity per pair from ``[pairs, k]`` branch scores: each column min-max normalised over all pairs of
    the set, then their weighted sum (``weights`` default equal; OAML: 0.5 global + 0.5 QAConv)."""
    scores = np.asarray(scores, dtype=np.float64).reshape(len(scores), -1)
    weights = np.full(scores.shape[1], 1.0 / scores.shape[1]) if weights is None else np.asarray(weights, float)
    low, high = scores.min(axis=0), scores.max(axis=0)
    normalised = (scores - low) / np.where(high > low, high - low, 1.0)
    return normalised @ weights


class EmbeddingProtocol:
    """Base of protocols that embed a fixed list of images: ``image_paths`` / ``process`` / ``compute``.

    Subclasses call ``_setup(keys, prefix)`` (``prefix + key`` is the image's path) and implement ``compute``.
    """

    name: str
    flip: str
    pair_scorer: Optional[torch.nn.Module] = None  # the model's ``pair_scorer`` (run_protocols), e.g. OAML's

    def _setup(self, keys: Sequence[str], prefix: str) -> None:
        self.keys = list(keys)
        self.prefix = prefix
        self.position = {key: i for i, key in enumerate(self.keys)}
        self.filled = np.zeros(len(self.keys), dtype=bool)
        self.plain: Optional[torch.Tensor] = None
        self.flipped: Optional[torch.Tensor] = None
        self.curve: Optional[Tuple[np.ndarray, np.ndarray]] = None

    @property
    def needs_flip(self) -> bool:
        return self.flip != "none"

    def image_paths(self) -> List[str]:
        """Unique images to embed, in the order ``process`` indices refer to."""
        return [self.prefix + key for key in self.keys]

    def images(self) -> ImageSource:
        """What ``extract_views`` takes (paths by default)."""
        return self.image_paths()

    def _index(self, item: Union[int, str, Path]) -> int:
        if isinstance(item, (str, Path)):
            key = str(item)
            key = key[len(self.prefix):] if key.startswith(self.prefix) else key
            if key not in self.position:
                raise KeyError(f"{self.name}: image {item} is not part of this protocol")
            return self.position[key]
        index = int(item)
        if not 0 <= index < len(self.keys):
            raise IndexError(f"{self.name}: image index {index} out of range [0, {len(self.keys)})")
        return index

    def process(self, indices_or_paths: Iterable[Union[int, str]],
                embeddings: Union[torch.Tensor, EmbeddingViews]) -> None:
        """Store embeddings of images given by index into ``image_paths()`` or by path (any order, any batching).

        A plain tensor is the no-flip view; with a flip, pass ``EmbeddingViews`` carrying the flipped view
        (``extract_views(..., with_flip=True)``).
        """
        views = embeddings if isinstance(embeddings, EmbeddingViews) else EmbeddingViews(torch.as_tensor(embeddings))
        if self.needs_flip and views.flipped is None:
            raise ValueError(f"{self.name}: flip={self.flip!r} needs EmbeddingViews with the flipped view "
                             "(extract_views(..., with_flip=True))")
        index = torch.as_tensor([self._index(item) for item in indices_or_paths], dtype=torch.long)
        if len(views) != index.numel():
            raise ValueError(f"{self.name}: process got {index.numel()} images but {len(views)} embeddings")
        if self.plain is None:
            self.plain = torch.zeros(len(self.keys), views.plain.shape[1])
            self.flipped = torch.zeros_like(self.plain) if self.needs_flip else None
        self.plain[index] = views.plain.detach().float().cpu()
        if self.flipped is not None:
            self.flipped[index] = views.flipped.detach().float().cpu()
        self.filled[index.numpy()] = True

    def normalised_embeddings(self) -> torch.Tensor:
        """Flip-fused, L2-normalised embeddings of all images (every image must have been processed)."""
        if not self.filled.all():
            missing = [self.keys[i] for i in np.flatnonzero(~self.filled)[:MAX_LISTED_MISSING]]
            raise RuntimeError(f"{self.name}: {int((~self.filled).sum())} images were never processed, "
                               f"first: {missing}")
        views = EmbeddingViews(self.plain, self.flipped)
        if self.pair_scorer is not None and hasattr(self.pair_scorer, "global_part"):  # packed descriptors
            views = EmbeddingViews(self.pair_scorer.global_part(self.plain),
                                   None if self.flipped is None else self.pair_scorer.global_part(self.flipped))
        return F.normalize(views.fuse(self.flip), dim=1)

    def pair_branch_scores(self, first: np.ndarray, second: np.ndarray, chunk: int = 1024) -> np.ndarray:
        """``[pairs, k]`` scores of ``pair_scorer`` (eval mode, no grad, in chunks on its device) on the raw
        flip-fused descriptors: the plain view, or the scorer's ``fuse_views(plain, flipped, flip)`` (else the raw
        sum of the two views)."""
        self.normalised_embeddings()  # every image processed
        descriptors = self.plain
        if self.flip != "none":
            fuse = getattr(self.pair_scorer, "fuse_views", None)
            descriptors = fuse(self.plain, self.flipped, self.flip) if fuse else self.plain + self.flipped
        scorer = self.pair_scorer
        device = next(scorer.parameters(), torch.empty(0)).device
        first, second = torch.as_tensor(first, dtype=torch.long), torch.as_tensor(second, dtype=torch.long)
        was_training, parts = scorer.training, []
        scorer.eval()
        try:
            with torch.no_grad():
                for start in range(0, first.numel(), chunk):
                    a = descriptors[first[start:start + chunk]].to(device)
                    b = descriptors[second[start:start + chunk]].to(device)
                    parts.append(scorer(a, b).float().reshape(a.shape[0], -1).cpu())
        finally:
            scorer.train(was_training)
        return torch.cat(parts).double().numpy()

    def store_curve(self, similarity: np.ndarray, issame: np.ndarray) -> None:
        self.curve = roc(similarity, issame)

    def roc_curve(self) -> Tuple[np.ndarray, np.ndarray]:
        """(FPR, TPR) of the last ``compute()``."""
        if self.curve is None:
            raise RuntimeError(f"{self.name}: call compute() first")
        return self.curve

    def compute(self, checkpoint: str = "") -> Dict[str, Any]:
        raise NotImplementedError
