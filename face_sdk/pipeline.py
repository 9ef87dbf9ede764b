"""Detect → 5-point landmarks → align → embed, for whole images (uint8 RGB)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from face_sdk.aligner import AlignedFace, align_face
from face_sdk.detector import Detection, FaceDetector, pick_central_face
from face_sdk.recognizer import Recognizer

LANDMARK_COLOURS = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255))


@dataclass(frozen=True)
class FaceResult:
    """One face of an image: detection (image coordinates), aligned crop and, when computed, its embedding."""

    detection: Detection
    aligned: AlignedFace
    embedding: Optional[np.ndarray] = None


@dataclass(frozen=True)
class Verification:
    """Cosine score of two main faces, the threshold used and the decision."""

    score: float
    threshold: float
    same: bool
    faces: Tuple[FaceResult, FaceResult]


class FacePipeline:
    """Runs a ``FaceDetector`` and, optionally, a ``Recognizer``; the alignment template follows the recogniser."""

    def __init__(self, detector: FaceDetector, recognizer: Optional[Recognizer] = None,
                 template: Optional[str] = None) -> None:
        self.detector = detector
        self.recognizer = recognizer
        self.template = template or (recognizer.meta.template if recognizer else "arcface_112x112")

    def detect(self, image: np.ndarray) -> List[Detection]:
        return self.detector.detect(image)

    def align(self, image: np.ndarray, detections: Optional[Sequence[Detection]] = None) -> List[FaceResult]:
        """Every detected face, aligned to the template (detections are computed when not given)."""
        detections = self.detect(image) if detections is None else detections
        return [FaceResult(d, align_face(image, d.landmarks, self.template)) for d in detections]

    def main_face(self, image: np.ndarray, source: str = "image") -> FaceResult:
        """The central, confident face (LFW convention); ``ValueError`` naming ``source`` when there is none."""
        detection = pick_central_face(self.detect(image), image.shape[:2])
        if detection is None:
            raise ValueError(f"{source}: no face found (score threshold {self.detector.score_threshold})")
        return FaceResult(detection, align_face(image, detection.landmarks, self.template))

    def embed_faces(self, faces: Sequence[FaceResult]) -> List[FaceResult]:
        if self.recognizer is None:
            raise ValueError("this pipeline has no recogniser")
        embeddings = self.recognizer.embed([face.aligned.crop for face in faces])
        return [FaceResult(f.detection, f.aligned, e) for f, e in zip(faces, embeddings)]

    def verify(self, image_a: np.ndarray, image_b: np.ndarray, threshold: float, sources: Sequence[str] = ("a", "b")
               ) -> Verification:
        """Cosine similarity of the main faces of two images, and whether it reaches ``threshold``."""
        faces = self.embed_faces([self.main_face(image_a, sources[0]), self.main_face(image_b, sources[1])])
        score = float(np.dot(faces[0].embedding, faces[1].embedding))
        return Verification(score, float(threshold), score >= threshold, (faces[0], faces[1]))


def draw_detections(image: np.ndarray, detections: Sequence[Detection]) -> np.ndarray:
    """A copy of ``image`` with boxes, scores and the 5 landmarks drawn (uint8 RGB)."""
    canvas = np.ascontiguousarray(image.copy())
    thickness = max(1, round(min(image.shape[:2]) / 250))
    for detection in detections:
        x1, y1, x2, y2 = (int(round(v)) for v in detection.box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), (0, 255, 0), thickness)
        cv2.putText(canvas, f"{detection.score:.2f}", (x1, max(12, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4 * thickness, (0, 255, 0), thickness)
        for (x, y), colour in zip(detection.landmarks, LANDMARK_COLOURS):
            cv2.circle(canvas, (int(round(x)), int(round(y))), 2 * thickness, colour, -1)
    return canvas
