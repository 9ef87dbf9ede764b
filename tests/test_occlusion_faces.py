"""Occluders on faces: real aligned CelebA faces from ../shared (ArcFace-template landmarks, as they are aligned to
it) and the embedded synthetic faces (the generator's own per-image landmarks)."""
from __future__ import annotations

import numpy as np
import pytest

from data_processor.image_io import read_image
from data_processor.landmarks import ARCFACE_TEMPLATE_112
from data_processor.occlusion import OCCLUDERS, DonorPool, occlude
from tests.test_occlusion import EXPECTED_VISIBLE, kind_params, visible_at

KINDS = [name for name in OCCLUDERS.names() if name != "rgba"]


def check_faces(faces) -> None:
    donors = DonorPool([points for _, points in faces], list(range(len(faces))), images=[image for image, _ in faces])
    for face_index, (image, points) in enumerate(faces):
        for kind in KINDS:
            params = {**kind_params(kind, donors), "identity": face_index} if kind == "crowd" else {}
            for seed in range(3):
                noisy, visibility = occlude(image, points, kind, (seed, face_index), **params)
                changed = (noisy != image).any(axis=2)
                assert not (changed & (visibility == 1)).any(), f"{kind}: changed pixels marked visible"
                if kind not in EXPECTED_VISIBLE:
                    continue
                hidden_ids, visible_ids = EXPECTED_VISIBLE[kind]
                visible = visible_at(visibility, points)
                assert not visible[list(hidden_ids)].any(), f"{kind} face {face_index} seed {seed}: {visible}"
                assert visible[list(visible_ids)].all(), f"{kind} face {face_index} seed {seed}: {visible}"


def test_occluders_on_real_aligned_faces(shared):
    root = shared("data/celeba_subset_112/images")
    files = sorted(root.glob("*/*.jpg"))[::500][:8]
    assert len(files) == 8
    check_faces([(read_image(path), ARCFACE_TEMPLATE_112) for path in files])


def test_occluders_on_synthetic_faces_with_their_own_landmarks():
    render = pytest.importorskip("data_processor.synthetic_render").render_identity_image
    faces = [render(0, "test", identity, 1) for identity in range(6)]
    assert any(np.abs(points - ARCFACE_TEMPLATE_112).max() > 2 for _, points in faces)  # not the template
    check_faces(faces)

