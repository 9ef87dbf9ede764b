"""MeGlass official protocol (``cleardusk/MeGlass``): gallery/probe lists, TAR@FAR and Rank-1.

The ``test/`` folder holds ``gallery_{black_glass,no_glass}.txt`` and ``probe_{black_glass,no_glass}.txt``, one
image of each of the 1,710 identities per list (identity = the file name up to its second ``@``). A protocol is one
(gallery list, probe list) combination; the four combinations are the paper's four protocols, e.g.
``gallery=no_glass, probe=black_glass`` (enrolled without eyeglasses, probed with them).

How the sets are combined, exactly:
- verification: every probe image against every gallery image (1,710 genuine and 1,710·1,709 impostor pairs),
  cosine of L2-normalised embeddings; TAR at FAR = the best true-accept rate with false-accept rate ≤ FAR;
- identification: each probe is assigned the identity of its most similar gallery image; Rank-1 = fraction right.
This is *not* GFRO's ``glasses_pairs.txt`` (6,000 random LFW-style pairs), which is a derived protocol.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from test_protocol import PROTOCOLS
from test_protocol.extract import check_flip
from test_protocol.protocol_base import (EmbeddingProtocol, check_available, check_images_exist, file_sha256,
                                         tar_columns)
from test_protocol.verification_metrics import auc
from utils.text_files import read_fields

MEGLASS_LISTS = ("no_glass", "black_glass")


def meglass_identity(file_name: str, where: str) -> str:
    """``10032527@N08_identity_4@2897031059_1.jpg`` → ``10032527@N08_identity_4`` (text before the 2nd ``@``)."""
    parts = file_name.split("@")
    if len(parts) < 3:
        raise ValueError(f"{where}: MeGlass names have the form 'a@b@c.jpg', got {file_name!r}")
    return "@".join(parts[:2])


def read_meglass_list(path: Path) -> List[str]:
    names = []
    for line_no, fields in read_fields(path, 1, "one image name per line", "MeGlass list"):
        meglass_identity(fields[0], f"{path}:{line_no}")
        names.append(fields[0])
    if not names:
        raise ValueError(f"{path}: empty list")
    return names


@PROTOCOLS.register()
class MeGlassProtocol(EmbeddingProtocol):
    """One MeGlass gallery/probe protocol over the 120×120 crops in ``root``; lists from ``lists_dir``."""

    variant = "meglass_official"

    def __init__(self, name: str, root: str, lists_dir: str, gallery: str = "no_glass", probe: str = "black_glass",
                 flip: str = "none") -> None:
        for role, value in (("gallery", gallery), ("probe", probe)):
            if value not in MEGLASS_LISTS:
                raise ValueError(f"{name}: {role} must be one of {MEGLASS_LISTS}, got {value!r}")
        self.name, self.gallery_kind, self.probe_kind = name, gallery, probe
        self.flip = check_flip(flip)
        self.root = Path(root)
        list_files = [Path(lists_dir) / f"gallery_{gallery}.txt", Path(lists_dir) / f"probe_{probe}.txt"]
        check_available(name, [self.root, *list_files])
        self.gallery = read_meglass_list(list_files[0])
        self.probe = read_meglass_list(list_files[1])
        self.lists_sha256 = file_sha256(list_files)
        images = list(dict.fromkeys(self.gallery + self.probe))
        check_images_exist(name, self.root, images, f"{list_files[0].name} + {list_files[1].name}")
        gallery_ids = [meglass_identity(n, str(list_files[0])) for n in self.gallery]
        probe_ids = [meglass_identity(n, str(list_files[1])) for n in self.probe]
        unknown = sorted(set(probe_ids) - set(gallery_ids))
        if unknown:
            raise ValueError(f"{name}: {len(unknown)} probe identities have no gallery image, first: {unknown[:3]}")
        identity_index = {identity: i for i, identity in enumerate(sorted(set(gallery_ids)))}
        self.gallery_labels = np.asarray([identity_index[i] for i in gallery_ids])
        self.probe_labels = np.asarray([identity_index[i] for i in probe_ids])
        self._setup(images, str(self.root) + "/")

    def similarity_matrix(self) -> np.ndarray:
        """Cosine similarity ``[num_probe, num_gallery]``."""
        embeddings = self.normalised_embeddings()
        probe = embeddings[[self.position[p] for p in self.probe]]
        gallery = embeddings[[self.position[g] for g in self.gallery]]
        return (probe @ gallery.T).double().numpy()

    def compute(self, checkpoint: str = "") -> Dict[str, Any]:
        similarity = self.similarity_matrix()
        genuine = self.probe_labels[:, None] == self.gallery_labels[None, :]
        scores, issame = similarity.reshape(-1), genuine.reshape(-1)
        rank1 = float(np.mean(self.gallery_labels[similarity.argmax(axis=1)] == self.probe_labels))
        self.store_curve(scores, issame)
        return {
            "set": self.name, "variant": self.variant, "flip": self.flip, "score": "cosine",
            "gallery": self.gallery_kind, "probe": self.probe_kind, "auc": auc(scores, issame),
            **tar_columns(scores, issame), "rank1": 100.0 * rank1,
            "num_probes": len(self.probe), "num_gallery": len(self.gallery), "num_pairs": int(issame.size),
            "pairs_sha256": self.lists_sha256, "checkpoint": checkpoint,
        }
