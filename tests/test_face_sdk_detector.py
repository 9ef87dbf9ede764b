"""RetinaFace priors / decoding / NMS and the released detectors on a real photo (face_sdk.detector)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from face_sdk.detector import Detection, FaceDetector, pick_central_face
from face_sdk.priors import decode_boxes, decode_landmarks, nms, prior_boxes
from face_sdk.retinaface import RetinaFace, RetinaFaceConfig

# The astronaut's face (skimage.data.astronaut, 512×512): box x 177–271, y 55–178.
ASTRONAUT_FACE = (177.0, 55.0, 271.0, 178.0)


@pytest.mark.parametrize("size", [(320, 320), (150, 150), (241, 333)])
def test_priors_match_network_outputs_for_any_size(size):
    config = RetinaFaceConfig()
    priors = prior_boxes(size, config.min_sizes, config.steps)
    expected = sum(math.ceil(size[0] / s) * math.ceil(size[1] / s) * 2 for s in config.steps)
    assert priors.shape == (expected, 4)
    network = RetinaFace().eval()
    with torch.inference_mode():
        boxes, scores, landmarks = network(torch.zeros(1, 3, *size))
    assert boxes.shape == (1, expected, 4) and scores.shape == (1, expected, 2) and landmarks.shape == (1, expected, 10)
    # first prior: centre of the first stride-8 cell, smallest anchor
    np.testing.assert_allclose(priors[0].numpy(), [4 / size[1], 4 / size[0], 16 / size[1], 16 / size[0]], rtol=1e-6)


def test_zero_offsets_decode_to_the_priors():
    priors = torch.tensor([[0.5, 0.5, 0.2, 0.4], [0.1, 0.2, 0.05, 0.05]])
    boxes = decode_boxes(torch.zeros(2, 4), priors)
    np.testing.assert_allclose(boxes.numpy(), [[0.4, 0.3, 0.6, 0.7], [0.075, 0.175, 0.125, 0.225]], atol=1e-7)
    points = decode_landmarks(torch.zeros(2, 10), priors)
    assert torch.equal(points, priors[:, None, :2].expand(2, 5, 2))


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10.5]], dtype=np.float32)
    scores = np.array([0.8, 0.9, 0.7, 0.3], dtype=np.float32)
    assert nms(boxes, scores, 0.4).tolist() == [1, 2]
    assert nms(boxes[:0], scores[:0], 0.4).size == 0


def test_pick_central_face_prefers_centre_among_confident_faces():
    def det(x1, y1, x2, y2, score):
        return Detection(np.array([x1, y1, x2, y2], dtype=np.float32), score, np.zeros((5, 2), np.float32))

    edge, centre, weak = det(0, 0, 40, 40, 0.99), det(50, 50, 100, 100, 0.9), det(60, 60, 90, 90, 0.2)
    assert pick_central_face([edge, centre, weak], (150, 150)) is centre
    assert pick_central_face([], (150, 150)) is None


def _check_astronaut(detections):
    assert len(detections) == 1, [d.to_dict() for d in detections]
    face = detections[0]
    assert face.score > 0.95
    x1, y1, x2, y2 = face.box
    gx1, gy1, gx2, gy2 = ASTRONAUT_FACE
    inter = max(0, min(x2, gx2) - max(x1, gx1)) * max(0, min(y2, gy2) - max(y1, gy1))
    union = (x2 - x1) * (y2 - y1) + (gx2 - gx1) * (gy2 - gy1) - inter
    assert inter / union > 0.8
    points = face.landmarks
    assert np.all((points[:, 0] > x1) & (points[:, 0] < x2) & (points[:, 1] > y1) & (points[:, 1] < y2))
    left_eye, right_eye, nose, left_mouth, right_mouth = points
    assert left_eye[0] < nose[0] < right_eye[0] and left_mouth[0] < right_mouth[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(left_mouth[1], right_mouth[1])


@pytest.mark.parametrize("name", ["facexzoo_mnet025", "biubug6_mnet025"])
def test_released_detectors_find_the_astronaut(shared, name):
    from face_sdk.demo import demo_image
    from face_sdk.released import RELEASED_DETECTORS

    shared(f"weights/{RELEASED_DETECTORS[name].file}")
    detector = FaceDetector.from_weights(name)
    image = demo_image("astronaut")
    _check_astronaut(detector.detect(image))
    # an odd-sized crop: coordinates come back in the crop's own pixels
    crop = np.ascontiguousarray(image[20:261, 101:434])
    shifted = detector.detect(crop)
    assert len(shifted) == 1
    np.testing.assert_allclose(shifted[0].box + [101, 20, 101, 20], detector.detect(image)[0].box, atol=4.0)


def test_detector_rejects_non_rgb_input(shared):
    shared("weights/detection/facexzoo_face_detection_retina_mnet025.pkl")
    detector = FaceDetector.from_weights()
    with pytest.raises(ValueError, match="uint8 RGB"):
        detector.detect(np.zeros((64, 64), dtype=np.uint8))
    with pytest.raises(ValueError, match="one size"):
        detector.detect_batch([np.zeros((64, 64, 3), np.uint8), np.zeros((65, 64, 3), np.uint8)])
