"""Face detector: RetinaFace (MobileNet-0.25) + priors + decoding + score threshold + NMS, any image size.

Input images are uint8 RGB ``H×W×3`` like everywhere in the toolbox. The *detector's own* input convention —
BGR channel order minus the per-channel mean (104, 117, 123), no scaling, as the released RetinaFace weights were
trained — is applied inside ``FaceDetector`` and nowhere else; it has nothing to do with the recogniser's
``PreprocessSpec``. Small images are upscaled so the short side is at least ``min_short_side`` (LFW's 150×150
crops hold ~100 px faces; the detector is more reliable on them at 320), large ones are downscaled so the long side
is at most ``max_long_side``; results are mapped back to original pixel coordinates.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from face_sdk.priors import decode_boxes, decode_landmarks, nms, prior_boxes
from face_sdk.released import load_released_detector
from face_sdk.retinaface import RetinaFace, RetinaFaceConfig

DETECTOR_BGR_MEAN = (104.0, 117.0, 123.0)


@dataclass(frozen=True)
class Detection:
    """One face: box (x1, y1, x2, y2) and 5 landmarks ``[5, 2]`` in original image pixels, face score in [0, 1]."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray

    def to_dict(self) -> Dict[str, object]:
        return {"box": [round(float(v), 2) for v in self.box], "score": round(float(self.score), 4),
                "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks]}


class FaceDetector:
    """Detect faces and 5-point landmarks (left eye, right eye, nose, left mouth, right mouth) in RGB images."""

    def __init__(self, network: RetinaFace, config: RetinaFaceConfig, device: str | torch.device = "cpu",
                 score_threshold: float = 0.6, nms_threshold: float = 0.4, min_short_side: int = 320,
                 max_long_side: int = 1600, pre_nms_top_k: int = 5000) -> None:
        self.device = torch.device(device)
        self.network = network.to(self.device).eval()
        self.config = config
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.min_short_side = int(min_short_side)
        self.max_long_side = int(max_long_side)
        self.pre_nms_top_k = int(pre_nms_top_k)
        self._prior_cache: Dict[Tuple[int, int], torch.Tensor] = {}

    @classmethod
    def from_weights(cls, weights: Optional[str | Path] = None, device: str | torch.device = "cpu",
                     config: Optional[RetinaFaceConfig] = None, **options: float) -> "FaceDetector":
        """Build from a released detector name or file (``.pth`` state_dict or FaceX-Zoo ``.pkl``).

        ``weights=None`` uses ``face_sdk.released.DEFAULT_DETECTOR``; ``config`` is required only for a file that
        is not one of ``face_sdk.released.RELEASED_DETECTORS``. ``options`` go to the constructor.
        """
        network, config = load_released_detector(weights, config)
        return cls(network, config, device, **options)

    def scale_for(self, height: int, width: int) -> float:
        """Resize factor applied before the network (upscale small images, cap large ones)."""
        scale = max(1.0, self.min_short_side / min(height, width))
        if max(height, width) * scale > self.max_long_side:
            scale = self.max_long_side / max(height, width)
        return scale

    def _network_input(self, images: Sequence[np.ndarray], scale: float) -> torch.Tensor:
        batch = []
        for image in images:
            if scale != 1.0:
                h, w = image.shape[:2]
                size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
                image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
            batch.append(image[:, :, ::-1].astype(np.float32) - np.array(DETECTOR_BGR_MEAN, dtype=np.float32))
        return torch.from_numpy(np.stack(batch).transpose(0, 3, 1, 2).copy()).to(self.device)

    def _priors(self, size: Tuple[int, int]) -> torch.Tensor:
        if size not in self._prior_cache:
            self._prior_cache[size] = prior_boxes(size, self.config.min_sizes, self.config.steps).to(self.device)
        return self._prior_cache[size]

    @torch.inference_mode()
    def detect_batch(self, images: Sequence[np.ndarray]) -> List[List[Detection]]:
        """Detections for each image (all images must have the same size), sorted by decreasing score."""
        if not images:
            return []
        shapes = {tuple(img.shape) for img in images}
        if len(shapes) != 1:
            raise ValueError(f"detect_batch needs images of one size, got {sorted(shapes)}; use detect() per image")
        height, width, channels = images[0].shape if images[0].ndim == 3 else (*images[0].shape, 1)
        if images[0].ndim != 3 or channels != 3 or images[0].dtype != np.uint8:
            raise ValueError(f"expected uint8 RGB H×W×3 images, got {images[0].dtype} {images[0].shape}")
        scale = self.scale_for(height, width)
        inputs = self._network_input(images, scale)
        net_h, net_w = inputs.shape[-2:]
        box_offsets, scores, landmark_offsets = self.network(inputs)
        priors = self._priors((net_h, net_w))
        # Decoded coordinates are relative to the (resized) image, so they map straight onto the original size.
        to_pixels = torch.tensor([float(width), float(height)], device=self.device)
        results = []
        for b in range(inputs.shape[0]):
            face = scores[b, :, 1]
            keep = torch.nonzero(face > self.score_threshold).squeeze(1)
            keep = keep[torch.argsort(face[keep], descending=True)][: self.pre_nms_top_k]
            variances = self.config.variances
            boxes = decode_boxes(box_offsets[b, keep], priors[keep], variances) * to_pixels.repeat(2)
            points = decode_landmarks(landmark_offsets[b, keep], priors[keep], variances) * to_pixels
            boxes_np, scores_np, points_np = boxes.cpu().numpy(), face[keep].cpu().numpy(), points.cpu().numpy()
            kept = nms(boxes_np, scores_np, self.nms_threshold)
            results.append([Detection(boxes_np[i], float(scores_np[i]), points_np[i]) for i in kept])
        return results

    def detect(self, image: np.ndarray) -> List[Detection]:
        """Detections in one uint8 RGB image, sorted by decreasing score."""
        return self.detect_batch([image])[0]


def pick_central_face(detections: Sequence[Detection], image_size: Tuple[int, int],
                      min_score_ratio: float = 0.5) -> Optional[Detection]:
    """The face closest to the image centre among those scoring at least ``min_score_ratio`` × the best score.

    The LFW convention: images are centred on the labelled person, while other people may appear at the edges.
    """
    if not detections:
        return None
    height, width = image_size
    best = max(d.score for d in detections)
    candidates = [d for d in detections if d.score >= min_score_ratio * best]
    centre = np.array([width / 2.0, height / 2.0])

    def distance(d: Detection) -> float:
        box_centre = np.array([(d.box[0] + d.box[2]) / 2.0, (d.box[1] + d.box[3]) / 2.0])
        return float(np.linalg.norm(box_centre - centre))

    return min(candidates, key=distance)
