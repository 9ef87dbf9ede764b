"""IJB-B / IJB-C template protocols (1:1 verification, 1:N identification), as insightface's ``IJB`` evaluation
reads them, plus a masked variant.

Published metadata (``meta_dir``, prefix ``ijbb`` / ``ijbc``):
- ``<p>_face_tid_mid.txt``: ``image template_id media_id`` per line (image = file under ``root``, the loose crops);
- ``<p>_template_pair_label.txt``: ``t1 t2 label`` (1 = same subject);
- ``<p>_name_5pts_score.txt`` (optional, for ``detector_score: true``): ``image x1 y1 … x5 y5 score``;
- 1:N: ``<p>_1N_gallery_<G>.csv`` (IJB-C G1/G2, IJB-B S1/S2) and ``<p>_1N_probe_mixed.csv``, CSV with a header
  holding at least ``TEMPLATE_ID``, ``SUBJECT_ID``, ``FILENAME`` (image under ``root``); media = ``MEDIA_ID`` when
  the CSV has it, else each image is its own media.

Pooling (insightface): image features L2-normalised (× the detector score when ``detector_score``), averaged within
a media, the media features summed per template, the sum L2-normalised. Score = cosine of template features.

Metrics: 1:1 — TAR at FAR 1e-6 … 1e-1 (best TAR with FAR ≤ the target; '-' when FAR · negatives < 1; insightface
instead reads the ROC point whose FAR is *closest* to the target) + the ROC and AUC. 1:N (open set, mixed probes
against one gallery): rank-1 over mated probes (subject in the gallery); TPIR at FPIR f: with non-mated probes'
top-1 scores sorted, ``K = floor(f · non-mated)`` false alarms are allowed, the threshold is the (K+1)-th largest
non-mated top-1 score, TPIR = fraction of mated probes whose top-1 gallery template is their subject's and scores
strictly above it. ``variant: mask``: the probe side (1:1: the second template of each pair; 1:N: probe templates)
uses the occluded copy under ``masked_root`` (same relative paths, our occlusion module), the other side stays clean.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from test_protocol import PROTOCOLS
from test_protocol.extract import check_flip
from test_protocol.megaface.feature_store import normalise_rows
from test_protocol.megaface.megaface import resolve
from test_protocol.protocol_base import (EmbeddingProtocol, check_available, check_images_exist, file_sha256,
                                         rate_key)
from test_protocol.verification_metrics import auc, roc, tar_at_far
from utils.text_files import read_fields

IJB_FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
IJB_FPIRS = (1e-2, 1e-1)
PREFIX = {"IJBB": "ijbb", "IJBC": "ijbc"}
GALLERIES = {"IJBB": ("S1", "S2"), "IJBC": ("G1", "G2")}


def read_tid_mid(path: Path) -> Tuple[List[str], np.ndarray, np.ndarray]:
    """(images, template ids, media ids) of ``*_face_tid_mid.txt``."""
    images, templates, medias = [], [], []
    for _, fields in read_fields(path, 3, "'image template_id media_id'", "IJB face/template/media list"):
        images.append(fields[0])
        templates.append(int(fields[1]))
        medias.append(int(fields[2]))
    return images, np.asarray(templates, dtype=np.int64), np.asarray(medias, dtype=np.int64)


def read_pair_labels(path: Path) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    data = np.loadtxt(path, dtype=np.int64, ndmin=2)
    if data.shape[1] != 3:
        raise ValueError(f"{path}: expected 't1 t2 label' per line")
    return data[:, 0], data[:, 1], data[:, 2].astype(bool)


def read_detector_scores(path: Path) -> Dict[str, float]:
    """``image x1 y1 … x5 y5 score`` → {image: score} (the last field)."""
    return {fields[0]: float(fields[-1])
            for _, fields in read_fields(path, 12, "image + 10 coordinates + score", "IJB detector-score file")}


def read_1n_csv(path: Path) -> Dict[str, np.ndarray]:
    """TEMPLATE_ID, SUBJECT_ID, FILENAME (and MEDIA_ID if present) columns of a 1:N gallery/probe CSV."""
    with open(path, "r", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"{path}: empty CSV")
    header = {key.strip().upper(): key for key in rows[0]}
    missing = [c for c in ("TEMPLATE_ID", "SUBJECT_ID", "FILENAME") if c not in header]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; header: {list(rows[0])}")
    out = {"template": np.asarray([int(r[header["TEMPLATE_ID"]]) for r in rows], dtype=np.int64),
           "subject": np.asarray([int(r[header["SUBJECT_ID"]]) for r in rows], dtype=np.int64),
           "image": np.asarray([r[header["FILENAME"]].strip() for r in rows], dtype=object)}
    out["media"] = (np.asarray([int(r[header["MEDIA_ID"]]) for r in rows], dtype=np.int64) if "MEDIA_ID" in header
                    else np.arange(len(rows), dtype=np.int64) + 1_000_000_000)
    return out


def pool_templates(features: np.ndarray, templates: np.ndarray, medias: np.ndarray,
                   weights: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """(sorted unique template ids, L2-normalised template features): see the module doc."""
    feats = normalise_rows(features)
    if weights is not None:
        feats = feats * np.asarray(weights, dtype=np.float32)[:, None]
    unique = np.unique(templates)
    pooled = np.zeros((len(unique), feats.shape[1]), dtype=np.float32)
    order = np.lexsort((medias, templates))
    keys = np.stack([templates[order], medias[order]], axis=1)
    starts = np.flatnonzero(np.r_[True, np.any(keys[1:] != keys[:-1], axis=1)])
    media_mean = np.add.reduceat(feats[order], starts, axis=0) / np.diff(np.r_[starts, len(order)])[:, None]
    np.add.at(pooled, np.searchsorted(unique, templates[order][starts]), media_mean)
    return unique, normalise_rows(pooled)


def verification_1to1(first: np.ndarray, second: np.ndarray, issame: np.ndarray,
                      fars: Sequence[float] = IJB_FARS) -> Tuple[Dict[str, Any], np.ndarray]:
    """(TAR columns in %, scores): cosine of the paired template features."""
    scores = np.sum(first * second, axis=1).astype(np.float64)
    negatives = int(np.count_nonzero(~issame))
    columns: Dict[str, Any] = {rate_key(far): 100.0 * tar if far * negatives >= 1 - 1e-9 else None
                               for far, tar in tar_at_far(scores, issame, fars).items()}
    columns.update({"auc": auc(scores, issame), "far_floor": 1.0 / negatives})
    return columns, scores


def identification_1toN(probe: np.ndarray, probe_subject: np.ndarray, gallery: np.ndarray,
                        gallery_subject: np.ndarray, fpirs: Sequence[float] = IJB_FPIRS) -> Dict[str, Any]:
    """rank-1 and TPIR@FPIR (in %) of probe templates against gallery templates (see the module doc)."""
    similarity = probe @ gallery.T
    best = similarity.argmax(axis=1)
    top1 = similarity[np.arange(len(probe)), best]
    mated = np.isin(probe_subject, gallery_subject)
    hit = gallery_subject[best] == probe_subject
    if not mated.any():
        raise ValueError("1:N: no probe subject is in the gallery")
    columns: Dict[str, Any] = {"rank1": 100.0 * float(hit[mated].mean()), "num_mated": int(mated.sum()),
                               "num_nonmated": int((~mated).sum())}
    nonmated = np.sort(top1[~mated])[::-1]
    for fpir in fpirs:
        allowed = int(math.floor(fpir * len(nonmated) + 1e-9))
        key = rate_key(fpir, "tpir", "fpir")
        if allowed < 1:
            columns[key] = None
        else:
            threshold = nonmated[allowed] if allowed < len(nonmated) else -np.inf
            columns[key] = 100.0 * float(np.mean(hit[mated] & (top1[mated] > threshold)))
    return columns


@PROTOCOLS.register()
class IJBProtocol(EmbeddingProtocol):
    """IJB-B / IJB-C ``task: 1:1`` (template pairs) or ``task: 1:N`` (``gallery`` G1/G2 or S1/S2 vs the mixed
    probes); ``variant: clean | mask``; ``detector_score: true`` weights images by their detection score."""

    def __init__(self, name: str, root: str, meta_dir: str, dataset: str = "IJBC", task: str = "1:1",
                 gallery: Optional[str] = None, variant: str = "clean", masked_root: Optional[str] = None,
                 detector_score: bool = False, fars: Sequence[float] = IJB_FARS,
                 fpirs: Sequence[float] = IJB_FPIRS, flip: str = "none") -> None:
        if dataset not in PREFIX:
            raise ValueError(f"{name}: dataset must be one of {sorted(PREFIX)}, got {dataset!r}")
        if task not in ("1:1", "1:N"):
            raise ValueError(f"{name}: task must be '1:1' or '1:N', got {task!r}")
        if variant not in ("clean", "mask") or (variant == "mask" and not masked_root):
            raise ValueError(f"{name}: variant is 'clean' or 'mask' (which needs masked_root), got {variant!r}")
        gallery = gallery or GALLERIES[dataset][0]
        if task == "1:N" and gallery not in GALLERIES[dataset]:
            raise ValueError(f"{name}: gallery must be one of {GALLERIES[dataset]}, got {gallery!r}")
        self.name, self.dataset, self.task, self.gallery_name = name, dataset, task, gallery
        self.variant = ("ijb_1to1" if task == "1:1" else f"ijb_1toN_{gallery}") + ("_mask" if variant == "mask" else "")
        self.masked = variant == "mask"
        self.flip = check_flip(flip)
        self.fars, self.fpirs = tuple(fars), tuple(fpirs)
        self.detector_score = detector_score
        root, meta_dir, masked_root = (resolve(value, f"{name}.{key}") for key, value in (
            ("root", root), ("meta_dir", meta_dir), ("masked_root", masked_root)))
        meta, prefix = Path(meta_dir), PREFIX[dataset]
        roots = [Path(root)] + ([Path(masked_root)] if masked_root else [])
        if task == "1:1":
            files = [meta / f"{prefix}_face_tid_mid.txt", meta / f"{prefix}_template_pair_label.txt"]
        else:
            files = [meta / f"{prefix}_1N_gallery_{gallery}.csv", meta / f"{prefix}_1N_probe_mixed.csv"]
        score_file = meta / f"{prefix}_name_5pts_score.txt"
        check_available(name, [*roots, *files] + ([score_file] if detector_score else []))
        self.lists_sha256 = file_sha256(files)
        if task == "1:1":
            images, templates, medias = read_tid_mid(files[0])
            self.t1, self.t2, self.issame = read_pair_labels(files[1])
            self.sides = {"all": (np.asarray(images, dtype=object), templates, medias)}
        else:
            g, p = read_1n_csv(files[0]), read_1n_csv(files[1])
            self.sides = {"gallery": (g["image"], g["template"], g["media"]),
                          "probe": (p["image"], p["template"], p["media"])}
            self.subjects = {side: dict(zip(d["template"].tolist(), d["subject"].tolist()))
                             for side, d in (("gallery", g), ("probe", p))}
        unique_images = list(dict.fromkeys(str(i) for side in self.sides.values() for i in side[0]))
        self.weights = None
        if detector_score:
            scores = read_detector_scores(score_file)
            missing = [i for i in unique_images if i not in scores]
            if missing:
                raise ValueError(f"{name}: {len(missing)} images have no detector score, first: {missing[:3]}")
            self.weights = {i: scores[i] for i in unique_images}
        check_images_exist(name, roots[0], unique_images, files[0].name)
        keys = [f"{roots[0]}/{i}" for i in unique_images]
        if self.masked:
            masked_images = unique_images if task == "1:1" else list(dict.fromkeys(self.sides["probe"][0]))
            check_images_exist(name, roots[1], masked_images, f"{files[-1].name} (masked copy)")
            keys += [f"{roots[1]}/{i}" for i in masked_images]
        self.roots = [str(r) for r in roots]
        self._setup(keys, "")

    def _templates(self, side: str, masked: bool) -> Tuple[np.ndarray, np.ndarray]:
        embeddings = self.embeddings_cache
        images, templates, medias = self.sides[side]
        root = self.roots[1] if masked else self.roots[0]
        rows = [self.position[f"{root}/{i}"] for i in images]
        weights = None if self.weights is None else np.asarray([self.weights[str(i)] for i in images])
        return pool_templates(embeddings[rows], templates, medias, weights)

    def compute(self, checkpoint: str = "") -> Dict[str, Any]:
        self.embeddings_cache = self.normalised_embeddings().numpy()
        row: Dict[str, Any] = {"set": self.name, "variant": self.variant, "flip": self.flip, "score": "cosine",
                               "detector_score": self.detector_score}
        if self.task == "1:1":
            ids, feats = self._templates("all", False)
            probe_feats = self._templates("all", True)[1] if self.masked else feats
            missing = np.setdiff1d(np.r_[self.t1, self.t2], ids)
            if missing.size:
                raise ValueError(f"{self.name}: {missing.size} templates of the pair list have no image, "
                                 f"first: {missing[:3].tolist()}")
            first, second = feats[np.searchsorted(ids, self.t1)], probe_feats[np.searchsorted(ids, self.t2)]
            columns, scores = verification_1to1(first, second, self.issame, self.fars)
            self.curve = roc(scores, self.issame)
            row.update(columns)
            row["num_pairs"] = int(self.issame.size)
        else:
            g_ids, g_feats = self._templates("gallery", False)
            p_ids, p_feats = self._templates("probe", self.masked)
            row.update(identification_1toN(
                p_feats, np.asarray([self.subjects["probe"][t] for t in p_ids.tolist()]), g_feats,
                np.asarray([self.subjects["gallery"][t] for t in g_ids.tolist()]), self.fpirs))
            row.update({"num_probes": int(len(p_ids)), "num_gallery": int(len(g_ids))})
        row.update({"pairs_sha256": self.lists_sha256, "checkpoint": checkpoint})
        return row
