"""Similarity alignment to the ArcFace / SphereFace templates (face_sdk.aligner)."""
from __future__ import annotations

import numpy as np
import pytest

from data_processor.landmarks import ARCFACE_TEMPLATE_112, SPHEREFACE_TEMPLATE_112x96
from face_sdk.aligner import (align_face, center_crop, estimate_similarity, sphereface_from_arcface,
                              template_geometry, transform_points)


def _similarity(angle_deg: float, scale: float, shift) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), shift[0]],
                     [scale * np.sin(a), scale * np.cos(a), shift[1]]])


def _textured_image(height: int = 300, width: int = 260, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def test_template_geometry_sizes():
    points, size = template_geometry("arcface_112x112")
    assert size == (112, 112) and np.allclose(points, ARCFACE_TEMPLATE_112)
    points, size = template_geometry("sphereface_112x96")
    assert size == (112, 96) and np.allclose(points, SPHEREFACE_TEMPLATE_112x96)
    with pytest.raises(KeyError, match="unknown alignment template"):
        template_geometry("nope_1x1")


def test_template_landmarks_map_onto_template_exactly():
    image = _textured_image(112, 112)
    aligned = align_face(image, ARCFACE_TEMPLATE_112, "arcface_112x112")
    np.testing.assert_allclose(aligned.matrix, [[1, 0, 0], [0, 1, 0]], atol=1e-9)
    np.testing.assert_allclose(aligned.landmarks, ARCFACE_TEMPLATE_112, atol=1e-4)
    np.testing.assert_array_equal(aligned.crop, image)  # identity warp: pixels unchanged


@pytest.mark.parametrize("template", ["arcface_112x112", "sphereface_112x96"])
def test_known_similarity_is_undone(template):
    points, (height, width) = template_geometry(template)
    forward = _similarity(17.0, 1.8, (60.0, 45.0))  # template → image
    landmarks = transform_points(points, forward)
    matrix = estimate_similarity(landmarks, points)
    np.testing.assert_allclose(transform_points(landmarks, matrix), points, atol=1e-6)
    aligned = align_face(_textured_image(), landmarks, template)
    assert aligned.crop.shape == (height, width, 3) and aligned.crop.dtype == np.uint8
    np.testing.assert_allclose(aligned.landmarks, points, atol=1e-4)


def test_crop_pixels_come_from_the_landmark_positions():
    image = np.zeros((400, 400, 3), dtype=np.uint8)
    forward = _similarity(-12.0, 2.5, (80.0, 60.0))
    landmarks = transform_points(ARCFACE_TEMPLATE_112, forward)
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]
    for (x, y), colour in zip(landmarks, colours):
        image[int(round(y)) - 4:int(round(y)) + 5, int(round(x)) - 4:int(round(x)) + 5] = colour
    aligned = align_face(image, landmarks)
    for (x, y), colour in zip(aligned.landmarks, colours):
        assert tuple(aligned.crop[int(round(y)), int(round(x))]) == colour


def test_noisy_landmarks_are_fitted_in_least_squares():
    rng = np.random.default_rng(3)
    landmarks = ARCFACE_TEMPLATE_112 * 1.3 + 20 + rng.normal(0, 1.5, size=(5, 2))
    aligned = align_face(_textured_image(), landmarks)
    residual = np.linalg.norm(aligned.landmarks - ARCFACE_TEMPLATE_112, axis=1)
    assert residual.mean() < 2.5
    np.testing.assert_allclose(aligned.landmarks, transform_points(landmarks, aligned.matrix), atol=1e-4)


def test_sphereface_crop_is_the_centre_of_the_arcface_crop():
    image = _textured_image()
    landmarks = transform_points(ARCFACE_TEMPLATE_112, _similarity(8.0, 1.6, (70.0, 50.0)))
    arcface = align_face(image, landmarks, "arcface_112x112").crop
    sphereface = align_face(image, landmarks, "sphereface_112x96").crop
    assert np.abs(sphereface_from_arcface(arcface).astype(int) - sphereface.astype(int)).max() <= 1


def test_center_crop_fallback():
    image = _textured_image(150, 150)
    crop = center_crop(image, "arcface_112x112", fraction=0.75)
    assert crop.crop.shape == (112, 112, 3)
    np.testing.assert_allclose(crop.landmarks, ARCFACE_TEMPLATE_112)
    centre = transform_points(np.array([[75.0, 75.0]]), crop.matrix)
    np.testing.assert_allclose(centre, [[56.0, 56.0]], atol=1e-9)


def test_bad_inputs_are_reported():
    with pytest.raises(ValueError, match="5 landmarks"):
        align_face(_textured_image(), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="uint8 RGB"):
        align_face(np.zeros((50, 50), dtype=np.uint8), ARCFACE_TEMPLATE_112)
    with pytest.raises(ValueError, match="finite"):
        align_face(_textured_image(), np.full((5, 2), np.nan))
