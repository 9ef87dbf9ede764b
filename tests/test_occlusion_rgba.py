"""User RGBA occluders: homography onto the landmarks, alpha threshold = visibility, loading from a folder."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from data_processor.landmarks import ARCFACE_TEMPLATE_112
from data_processor.occlusion import RGBAOccluder, load_rgba_occluders, occlude
from tests.test_occlusion import noise_image, similarity_landmarks, visible_at


def mask_art(scale: float = 2.0) -> tuple:
    """An RGBA 'mask' drawn here: an opaque ellipse over nose and mouth with a soft (blurred) alpha edge, on a
    transparent canvas; anchors = the ArcFace template in art pixels."""
    size = int(round(112 * scale))
    art = np.zeros((size, size, 4), dtype=np.uint8)
    centre = (int(56 * scale), int(86 * scale))
    axes = (int(36 * scale), int(24 * scale))
    cv2.ellipse(art, centre, axes, 0, 0, 360, (40, 120, 200, 255), -1)
    art[..., 3] = cv2.GaussianBlur(art[..., 3], (0, 0), 2.0 * scale)
    return art, ARCFACE_TEMPLATE_112 * scale


def test_rgba_mask_covers_nose_and_mouth_not_eyes():
    art, anchors = mask_art()
    occluder = RGBAOccluder(art, anchors)
    image = noise_image(seed=20)
    for seed, points in enumerate([ARCFACE_TEMPLATE_112] + [similarity_landmarks(s) for s in range(4)]):
        noisy, visibility = occlude(image, points, "rgba", (seed, 0), occluder=occluder)
        visible = visible_at(visibility, points)
        assert visible[:2].all() and not visible[2:].any()
        changed = (noisy != image).any(axis=2)
        assert not (changed & (visibility == 1)).any()
        assert changed[visibility == 0].mean() > 0.95


def test_identity_homography_reproduces_the_alpha_threshold():
    art = np.zeros((112, 112, 4), dtype=np.uint8)
    art[30:80, 20:90] = (255, 0, 0, 255)
    art[40:60, 40:60, 3] = 100  # below the 0.5 threshold: stays visible
    occluder = RGBAOccluder(art, ARCFACE_TEMPLATE_112, scale_range=(1, 1), rotation_deg=0, shift=0)
    image = noise_image(seed=21)
    noisy, visibility = occlude(image, ARCFACE_TEMPLATE_112, "rgba", 0, occluder=occluder)
    expected_hidden = art[..., 3] >= 128
    assert np.array_equal(visibility == 0, expected_hidden)
    assert (noisy[expected_hidden] == (255, 0, 0)).all()
    assert np.array_equal(noisy[~expected_hidden], image[~expected_hidden])


def test_large_art_is_prescaled_without_moving_the_placement():
    small_art, small_anchors = mask_art(2.0)
    large_art, large_anchors = mask_art(9.0)  # 1008 px: pre-scaled to the working size
    large = RGBAOccluder(large_art, large_anchors)
    assert max(large.rgba.shape[:2]) <= 320
    image = noise_image(seed=22)
    _, small_vis = occlude(image, ARCFACE_TEMPLATE_112, "rgba", (1, 1), occluder=RGBAOccluder(small_art, small_anchors))
    _, large_vis = occlude(image, ARCFACE_TEMPLATE_112, "rgba", (1, 1), occluder=large)
    assert np.mean(small_vis != large_vis) < 0.01


def test_rgba_is_seeded_and_picks_from_a_list(tmp_path):
    art, anchors = mask_art()
    for name, colour in (("blue", (40, 120, 200)), ("red", (200, 30, 30))):
        coloured = art.copy()
        coloured[..., :3] = colour
        cv2.imwrite(str(tmp_path / f"{name}.png"), cv2.cvtColor(coloured, cv2.COLOR_RGBA2BGRA))
        (tmp_path / f"{name}.json").write_text(json.dumps({"anchors": anchors.tolist()}))
    occluders = load_rgba_occluders(tmp_path)
    assert [o.name for o in occluders] == ["blue", "red"]
    image = noise_image(seed=23)
    first = occlude(image, ARCFACE_TEMPLATE_112, "rgba", (4, 2), occluder=occluders)[0]
    assert np.array_equal(first, occlude(image, ARCFACE_TEMPLATE_112, "rgba", (4, 2), occluder=occluders)[0])
    reds = sum(int(occlude(image, ARCFACE_TEMPLATE_112, "rgba", (4, i), occluder=occluders)[0][100, 56, 0] > 150)
               for i in range(20))
    assert 0 < reds < 20


def test_rgba_loading_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="folder not found"):
        load_rgba_occluders(tmp_path / "missing")
    with pytest.raises(ValueError, match="no RGBA occluders"):
        load_rgba_occluders(tmp_path)
    cv2.imwrite(str(tmp_path / "flat.png"), np.zeros((20, 20, 3), dtype=np.uint8))
    with pytest.raises(FileNotFoundError, match="flat.json"):
        load_rgba_occluders(tmp_path)
    (tmp_path / "flat.json").write_text(json.dumps({"anchors": ARCFACE_TEMPLATE_112.tolist()}))
    with pytest.raises(ValueError, match="flat.png: expected an RGBA image"):
        load_rgba_occluders(tmp_path)
    (tmp_path / "flat.json").write_text("{}")
    with pytest.raises(ValueError, match="flat.json: expected a JSON object with key 'anchors'"):
        load_rgba_occluders(tmp_path)
    with pytest.raises(ValueError, match="5 \\(x, y\\) points"):
        RGBAOccluder(np.zeros((10, 10, 4), dtype=np.uint8), [[0, 0]] * 4)
