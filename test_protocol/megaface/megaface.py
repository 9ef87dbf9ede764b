"""MegaFace Challenge-1 identification (and verification) on FaceScrub × MegaFace distractors, as FaceX-Zoo runs it.

Inputs, exactly as published:
- ``facescrub_features_list.json``: ``{"path": [...], "id": [...]}`` (relative FaceScrub image paths and identity
  names); ``megaface_features_list.json_<SIZE>_1``: ``{"path": [...]}`` (the 10k / 100k / 1M distractor sets).
- Noise lists (insightface's ``facescrub_noises.txt`` / ``megaface_noises.txt``; optional): one entry per line,
  blank lines and ``#`` lines skipped. An entry names an image by its relative path, a path suffix, or its file name.
  What is done with them (FaceX-Zoo's ``remove_noises.py``): a **FaceScrub** noise image's feature is replaced by the
  L2-normalised mean of the clean images of its identity (zero vector when its identity has no clean image); a
  **MegaFace** noise image's feature becomes the zero vector (it scores 0 against everything). Entries that name
  no image of the set in use are counted (``noise_unmatched``), not an error: the lists cover the whole 1M set.

Metrics (cosine of L2-normalised features):
- CMC rank 1..``max_rank``: for each identity with ``M`` images every ordered pair ``(i, j)``, ``i ≠ j``, is a trial;
  ``j`` is the query, ``i`` its planted mate. The trial is correct at rank N when ``score(i, j) ≥`` the N-th largest
  score of query ``j`` against the distractors. ``rank@N`` = correct trials / all trials.
- Verification TAR@FAR (not in FaceX-Zoo; MegaFace's own verification curve): genuine = the same ordered pairs,
  impostors = every query × every distractor (``queries × N`` pairs). At FAR ``f`` up to ``K = floor(f · impostors)``
  false accepts are allowed: the threshold is the (K+1)-th largest impostor score and TAR = fraction of genuine
  scores strictly above it; ``None`` ('-') when ``K < 1``.
- ``mask`` variant (MegaFace-Mask): the query ``j`` is the **masked** copy of the FaceScrub image (``masked_root``,
  same relative paths, built by ``build_masked_facescrub`` with our occlusion module), the mate ``i`` and the
  distractors are clean.
Scores are computed by ``feature_store.chunked_search``: distractors in chunks, top-k per query and the global
top-K impostor scores kept, never the full ``queries × N`` matrix.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from test_protocol import PROTOCOLS
from test_protocol.extract import check_flip
from test_protocol.megaface.feature_store import (
    DEFAULT_CHUNK,
    Rows,
    chunked_search,
    normalise_rows,
    open_store,
    peak_memory_mib,
    store_rows,
)
from test_protocol.protocol_base import (EmbeddingProtocol, check_available, check_images_exist, file_sha256,
                                         rate_key)

DISTRACTOR_SIZES = (10, 100, 1000, 10000, 100000, 1000000)
MEGAFACE_VARIANTS = ("clean", "mask")
DEFAULT_FARS = (1e-6,)
FACESCRUB_LIST = "facescrub_features_list.json"


def resolve(value: Optional[str], where: str) -> Optional[str]:
    """A data_conf-style path (relative → under $FACE_DATA_ROOT, ``${SHARED_ROOT}/…``, absolute as is)."""
    from test_protocol.data_conf import data_roots, resolve_path

    return None if value is None else resolve_path(str(value), data_roots(), where)


def distractor_list_name(size: int) -> str:
    return f"megaface_features_list.json_{size}_1"


def read_facescrub_list(path: Path) -> Tuple[List[str], List[str]]:
    """(paths, identity names) from ``facescrub_features_list.json``."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or "path" not in data or "id" not in data or len(data["path"]) != len(data["id"]):
        raise ValueError(f"{path}: expected {{'path': [...], 'id': [...]}} of equal length")
    return [str(p) for p in data["path"]], [str(i) for i in data["id"]]


def read_distractor_list(path: Path) -> List[str]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or "path" not in data:
        raise ValueError(f"{path}: expected {{'path': [...]}}")
    return [str(p) for p in data["path"]]


def read_noise_list(path: Path) -> List[str]:
    entries = []
    with open(path, "r", encoding="utf-8") as handle:
        for line in handle:
            entry = line.strip()
            if entry and not entry.startswith("#"):
                entries.append(entry)
    return entries


def match_noise(entries: Sequence[str], paths: Sequence[str]) -> Tuple[np.ndarray, int]:
    """(indices into ``paths`` named by ``entries``, number of entries naming none): exact path, path suffix
    (``.../entry``) or file name."""
    by_key: Dict[str, List[int]] = {}
    for index, path in enumerate(paths):
        parts = path.split("/")
        for start in range(len(parts)):
            by_key.setdefault("/".join(parts[start:]), []).append(index)
    matched: set = set()
    unmatched = 0
    for entry in entries:
        hits = by_key.get(entry.strip("/"))
        if hits:
            matched.update(hits)
        else:
            unmatched += 1
    return np.asarray(sorted(matched), dtype=np.int64), unmatched


def clean_facescrub(features: np.ndarray, labels: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """FaceScrub noise rows → the normalised mean of their identity's clean rows (zero if none); a copy."""
    cleaned = np.array(features, dtype=np.float32)
    is_noise = np.zeros(len(labels), dtype=bool)
    is_noise[noise] = True
    for label in np.unique(labels[is_noise]):
        members = labels == label
        clean = cleaned[members & ~is_noise]
        centre = normalise_rows(clean.mean(axis=0, keepdims=True))[0] if len(clean) else 0.0
        cleaned[members & is_noise] = centre
    return cleaned


def genuine_trials(query: np.ndarray, target: np.ndarray, labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(scores, query rows) of every ordered same-identity pair (mate i, query j), i ≠ j."""
    scores, queries = [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) < 2:
            continue
        block = target[members] @ query[members].T  # [mate, query]
        off = ~np.eye(len(members), dtype=bool)
        scores.append(block[off])
        queries.append(np.broadcast_to(members[None, :], block.shape)[off])
    if not scores:
        raise ValueError("MegaFace: no identity has two images, so there is no trial")
    return np.concatenate(scores), np.concatenate(queries)


def cmc_from_topk(genuine: np.ndarray, genuine_query: np.ndarray, topk: np.ndarray) -> np.ndarray:
    """Fraction of trials correct at rank 1..k: ``genuine ≥ topk[query, N-1]``."""
    return (genuine[:, None] >= topk[genuine_query]).mean(axis=0)


def tar_from_top(genuine: np.ndarray, top_impostors: np.ndarray, impostors: int, far: float) -> Optional[float]:
    allowed = int(math.floor(far * impostors + 1e-9))
    if allowed < 1:
        return None
    if allowed >= len(top_impostors):
        raise ValueError(f"FAR {far}: needs the top {allowed + 1} impostor scores, only {len(top_impostors)} kept")
    return float(np.mean(genuine > top_impostors[allowed]))


def evaluate_megaface(query: np.ndarray, target: np.ndarray, labels: np.ndarray, distractors: np.ndarray,
                      max_rank: int = 10, fars: Sequence[float] = DEFAULT_FARS, chunk: int = DEFAULT_CHUNK,
                      device: str = "cpu", distractor_noise: Optional[np.ndarray] = None) -> Dict[str, Any]:
    """CMC and TAR@FAR of (normalised) ``query`` / ``target`` FaceScrub features against ``distractors``
    (``[N, D]``, e.g. a float16 memory map); see the module doc. Also returns the partial ROC and timings."""
    query = normalise_rows(query)
    target = normalise_rows(target)
    labels = np.asarray(labels)
    genuine, genuine_query = genuine_trials(query, target, labels)
    impostors = len(query) * len(distractors)
    global_k = max([int(math.floor(f * impostors + 1e-9)) + 1 for f in fars] + [0])
    result = chunked_search(query, distractors, max_rank, global_k, chunk, device, desc="megaface distractors",
                            zero_rows=distractor_noise)
    topk = result.scores
    if topk.shape[1] < max_rank:  # fewer distractors than ranks: beyond the last one every trial is correct
        topk = np.pad(topk, ((0, 0), (0, max_rank - topk.shape[1])), constant_values=-np.inf)
    cmc = cmc_from_topk(genuine, genuine_query, topk)
    top = result.global_top
    fpr = np.arange(1, len(top) + 1) / impostors
    tpr = (len(genuine) - np.searchsorted(np.sort(genuine), top, side="left")) / len(genuine)  # accept ≥ t
    return {
        "cmc": cmc, "tar": {far: tar_from_top(genuine, top, impostors, far) for far in fars},
        "num_trials": int(genuine.size), "num_impostors": impostors, "curve": (fpr, tpr),
        "search_seconds": result.seconds, "peak_memory_mib": peak_memory_mib(),
    }


def megaface_row(name: str, variant: str, metrics: Dict[str, Any], fars: Sequence[float], num_queries: int,
                 num_distractors: int, lists_sha256: str, checkpoint: str, **extra: Any) -> Dict[str, Any]:
    """One result row in the pair protocols' format (``set``, ``variant``, ``rank1``, ``tar@far=…``, ...)."""
    cmc = metrics["cmc"]
    row: Dict[str, Any] = {"set": name, "variant": variant, "score": "cosine", "rank1": 100.0 * float(cmc[0])}
    row.update({f"rank@{n + 1}": 100.0 * float(value) for n, value in enumerate(cmc)})
    for far in fars:
        tar = metrics["tar"][far]
        row[rate_key(far)] = None if tar is None else 100.0 * tar
    row.update({"far_floor": 1.0 / metrics["num_impostors"], "num_pairs": metrics["num_trials"],
                "num_probes": num_queries, "num_distractors": num_distractors, "pairs_sha256": lists_sha256,
                "search_seconds": metrics["search_seconds"], "peak_memory_mib": metrics["peak_memory_mib"],
                "checkpoint": checkpoint, **extra})
    return row


@PROTOCOLS.register()
class MegaFaceProtocol(EmbeddingProtocol):
    """MegaFace / MegaFace-Mask on images: ``facescrub_root`` + ``megaface_root`` + the published lists in
    ``lists_dir`` (``facescrub_features_list.json``, ``megaface_features_list.json_<distractors>_1``), optional
    ``noises_dir`` (``facescrub_noises.txt``, ``megaface_noises.txt``) and, for ``variant: mask``, ``masked_root``.
    ``distractor_features``: a float16 store (``python -m test_protocol.megaface.extract_distractors``) holding
    the distractors' features: then only FaceScrub is embedded by the caller and the distractors are read from disk
    (the way to run 1M: the store must come from the same model; its manifest's ``model`` is put in the row)."""

    def __init__(self, name: str, facescrub_root: str, lists_dir: str, megaface_root: Optional[str] = None,
                 distractors: int = 1000000, variant: str = "clean", masked_root: Optional[str] = None,
                 noises_dir: Optional[str] = None, max_rank: int = 10, fars: Sequence[float] = DEFAULT_FARS,
                 flip: str = "none", chunk: int = DEFAULT_CHUNK, device: Optional[str] = None,
                 distractor_features: Optional[str] = None) -> None:
        if variant not in MEGAFACE_VARIANTS:
            raise ValueError(f"{name}: variant must be one of {MEGAFACE_VARIANTS}, got {variant!r}")
        if megaface_root is None and distractor_features is None:
            raise ValueError(f"{name}: give megaface_root (the distractor images) or distractor_features (a store)")
        if variant == "mask" and masked_root is None:
            raise ValueError(f"{name}: variant 'mask' needs masked_root (the occluded FaceScrub copy)")
        self.name, self.megaface_variant = name, variant
        self.variant = "megaface" if variant == "clean" else "megaface_mask"
        self.flip = check_flip(flip)
        self.max_rank, self.fars, self.chunk = int(max_rank), tuple(float(f) for f in fars), int(chunk)
        self.device = device
        facescrub_root, megaface_root, lists_dir, masked_root, noises_dir, distractor_features = (
            resolve(value, f"{name}.{key}") for key, value in (
                ("facescrub_root", facescrub_root), ("megaface_root", megaface_root), ("lists_dir", lists_dir),
                ("masked_root", masked_root), ("noises_dir", noises_dir),
                ("distractor_features", distractor_features)))
        lists = Path(lists_dir)
        files = [lists / FACESCRUB_LIST, lists / distractor_list_name(int(distractors))]
        noise_files = [Path(noises_dir) / f for f in ("facescrub_noises.txt", "megaface_noises.txt")] \
            if noises_dir else []
        roots = [Path(facescrub_root), Path(megaface_root or "-")] + ([Path(masked_root)] if masked_root else [])
        needed = roots if not distractor_features else [roots[0], *roots[2:]]  # the store replaces the images
        check_available(name, [*needed, *files, *noise_files])
        self.facescrub, identities = read_facescrub_list(files[0])
        self.distractors = read_distractor_list(files[1])
        names = {identity: i for i, identity in enumerate(sorted(set(identities)))}
        self.labels = np.asarray([names[i] for i in identities])
        self.lists_sha256 = file_sha256(files + noise_files)
        check_images_exist(name, roots[0], self.facescrub, files[0].name)
        self.store = None
        if distractor_features:  # distractors embedded once into an on-disk store; only FaceScrub is embedded here
            check_available(name, [Path(distractor_features) / "manifest.json"])
            self.store = open_store(distractor_features)
            self.store_rows = store_rows(self.store, self.distractors)
            keys = [f"{roots[0]}/{p}" for p in self.facescrub]
        else:
            check_images_exist(name, roots[1], self.distractors, files[1].name)
            keys = [f"{roots[0]}/{p}" for p in self.facescrub] + [f"{roots[1]}/{p}" for p in self.distractors]
        if masked_root:
            check_images_exist(name, roots[2], self.facescrub, f"{files[0].name} (masked copy)")
            keys += [f"{roots[2]}/{p}" for p in self.facescrub]
        self.facescrub_noise = np.zeros(0, dtype=np.int64)
        self.distractor_noise = np.zeros(0, dtype=np.int64)
        self.noise_unmatched = 0
        if noise_files:
            self.facescrub_noise, miss_a = match_noise(read_noise_list(noise_files[0]), self.facescrub)
            self.distractor_noise, miss_b = match_noise(read_noise_list(noise_files[1]), self.distractors)
            self.noise_unmatched = miss_a + miss_b
        self._setup(keys, "")

    def compute(self, checkpoint: str = "") -> Dict[str, Any]:
        import torch

        embeddings = self.normalised_embeddings().numpy()
        count = len(self.facescrub)
        total = count if self.store is not None else count + len(self.distractors)
        distractors = Rows(self.store.features, self.store_rows) if self.store is not None else \
            embeddings[count:total]
        target = clean_facescrub(embeddings[:count], self.labels, self.facescrub_noise)
        query = target if self.megaface_variant == "clean" else \
            clean_facescrub(embeddings[total:], self.labels, self.facescrub_noise)
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        metrics = evaluate_megaface(query, target, self.labels, distractors, self.max_rank, self.fars,
                                    self.chunk, device, self.distractor_noise)
        self.curve = metrics["curve"]
        return megaface_row(self.name, self.variant, metrics, self.fars, count, len(self.distractors),
                            self.lists_sha256, checkpoint, flip=self.flip,
                            noise_facescrub=int(self.facescrub_noise.size),
                            noise_megaface=int(self.distractor_noise.size), noise_unmatched=self.noise_unmatched,
                            distractor_features=None if self.store is None else
                            {"folder": str(self.store.folder), "model": self.store.manifest.get("model")})


def build_masked_facescrub(source_root: Union[str, Path], landmarks_file: Union[str, Path],
                           out_root: Union[str, Path], kind: str = "mask", seed: int = 0,
                           paths: Optional[Sequence[str]] = None) -> int:
    """Occluded FaceScrub copy for MegaFace-Mask: ``data_processor.occlusion.occlude(image, landmarks, kind,
    (seed, index))`` on every image of ``paths`` (default: every image in the landmark file, in its order; index =
    position), written under ``out_root`` with the same relative path. ``landmarks_file``: our landmark file
    (``data_processor.landmarks``: path + 5 points). Returns the number of images written."""
    from data_processor.image_io import read_image, write_image
    from data_processor.landmarks import read_landmark_file
    from data_processor.occlusion import occlude

    landmarks = read_landmark_file(Path(landmarks_file))
    paths = list(landmarks) if paths is None else list(paths)
    for index, relative in enumerate(paths):
        if relative not in landmarks:
            raise KeyError(f"{landmarks_file}: no landmarks for {relative}")
        image = read_image(Path(source_root) / relative)
        occluded, _ = occlude(image, np.asarray(landmarks[relative], dtype=np.float32).reshape(5, 2), kind,
                              (seed, index))
        target = Path(out_root) / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        write_image(target, occluded)
    return len(paths)
