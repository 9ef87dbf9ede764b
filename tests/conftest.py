"""Shared fixtures: the ../shared folder (real data / weights) and a small embedded synthetic data set."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data_processor.image_io import write_image

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"


def shared_path(relative: str) -> Path:
    """Path inside ../shared, or skip the test with a reason when it is missing."""
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"needs ../shared/{relative} (real data/weights are not part of the repository)")
    return path


@pytest.fixture
def shared():
    return shared_path


@pytest.fixture(scope="session")
def random_faces(tmp_path_factory):
    """48 random 112×112 images of 4 identities (``id<k>/<n>.png``) in a FaceX-Zoo ``train_list.txt``."""
    root = tmp_path_factory.mktemp("random_faces")
    rng = np.random.default_rng(0)
    lines = []
    for k in range(48):
        path = f"id{k % 4}/{k:03d}.png"
        write_image(root / "images" / path, rng.integers(0, 255, (112, 112, 3), np.uint8))
        lines.append(f"{path} {k % 4}")
    (root / "train_list.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def aligned_lfw_subset(tmp_path):
    """``make(pairs) -> (aligned folder, subset pairs file)``: the first ``pairs/20`` positive and negative pairs of
    every fold of the official LFW pairs, their images aligned by the face_sdk aligner into ``tmp_path``."""
    from benchmarks.lfw_released_models import ensure_aligned_lfw, subset_pairs_file
    from test_protocol import PAIRS_PARSERS

    def make(pairs: int):
        images, official = shared_path("data/lfw/images"), shared_path("data/lfw/pairs.txt")
        shared_path("weights/detection")
        subset = subset_pairs_file(official, pairs, tmp_path / f"pairs{pairs}.txt")
        raw = tmp_path / "raw"
        raw.mkdir(exist_ok=True)
        for relative in PAIRS_PARSERS.get("lfw")(subset).images:
            flat = relative.split("/")[1]  # the shared copy is flat: NAME_####.jpg
            if not (raw / flat).exists():
                (raw / flat).symlink_to(images / flat)
        summary = ensure_aligned_lfw(raw, tmp_path / "aligned", workers=1)
        assert summary["images"] == len(list(raw.iterdir())) and summary["errors"] == 0, summary
        return tmp_path / "aligned", subset

    return make
