"""The released third-party weights this toolbox can load, with their input contracts.

``load_released_recognizer(name_or_path)`` → ``(backbone, ModelMeta)`` for the three released MobileFaceNets;
``load_detector_state_dict(path)`` reads the RetinaFace weights (biubug6 ``.pth`` state_dict, or FaceX-Zoo's
pickled SDK module through the restricted unpickler) as our detector's state_dict.

Weights live outside the repository: by default in ``../shared/weights`` next to the repository root, or in the
folder named by the ``FACE_SDK_WEIGHTS_DIR`` environment variable.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

import torch

from backbone import build_backbone
from backbone.base import FaceBackbone
from data_processor.preprocess import PreprocessSpec
from face_sdk.model_meta import ModelMeta
from face_sdk.restricted_pickle import load_pickled_module_state_dict
from face_sdk.retinaface import RetinaFace, RetinaFaceConfig
from face_sdk.weights import (BUBBLIIIING_RULES, FOAMLIU_RULES, RETINAFACE_RULES, XIAOCCER_RULES, Rule,
                              WeightConversionError, convert_state_dict, map_keys, strip_data_parallel_prefix)

REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGENET_MEAN = tuple(round(255 * v, 4) for v in (0.485, 0.456, 0.406))
IMAGENET_STD = tuple(round(255 * v, 4) for v in (0.229, 0.224, 0.225))


LFW_PROTOCOL = ("LFW 6,000 pairs, crops from tools.align_dataset (facexzoo_mnet025 detector, arcface_112x112), "
                "cosine, no flip; threshold = best accuracy over all pairs (use it for single verifications, the "
                "10-fold figure is the accuracy)")


def _lfw_results(threshold: float, tenfold: float, std: float) -> Dict[str, object]:
    return {"lfw_cosine_threshold": threshold, "lfw_10fold_accuracy": tenfold, "lfw_10fold_std": std,
            "lfw_protocol": LFW_PROTOCOL}


def default_weights_dir() -> Path:
    """``$FACE_SDK_WEIGHTS_DIR`` if set, else ``<repo>/../shared/weights``."""
    env = os.environ.get("FACE_SDK_WEIGHTS_DIR")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "weights"


@dataclass(frozen=True)
class ReleasedRecognizer:
    """One released recogniser: file (relative to the weights folder), how to read it, key rules, meta."""

    file: str
    rules: Tuple[Rule, ...]
    meta: ModelMeta
    state_key: Optional[str] = None  # the checkpoint dict entry holding the state_dict, if nested


RELEASED_RECOGNIZERS: Dict[str, ReleasedRecognizer] = {
    "foamliu_mobilefacenet_ms1m": ReleasedRecognizer(
        file="recognition/foamliu_mobilefacenet_ms1m.pt",
        rules=tuple(FOAMLIU_RULES),
        meta=ModelMeta(
            name="foamliu_mobilefacenet_ms1m", arch="MobileFaceNetReLU6",
            kwargs={"feat_dim": 128, "input_size": [112, 112]}, embedding_dim=128,
            preprocess=PreprocessSpec("RGB", IMAGENET_MEAN, IMAGENET_STD, (112, 112), "arcface_112x112"),
            source="foamliu/MobileFaceNet release (Apache-2.0), MS1M, published LFW 99.48",
            notes="Trained with PIL-loaded RGB images and torchvision ImageNet normalisation; RGB beats BGR on LFW "
                  "(99.05 vs 98.95).",
            provenance={"training_data": "MS1M (insightface 112x112 ArcFace-aligned)",
                        "results": _lfw_results(0.27, 99.05, 0.33)},
        ),
    ),
    "xiaoccer_mobilefacenet_casia": ReleasedRecognizer(
        file="recognition/xiaoccer_mobilefacenet_casia_epoch068.ckpt",
        rules=tuple(XIAOCCER_RULES),
        state_key="net_state_dict",
        meta=ModelMeta(
            name="xiaoccer_mobilefacenet_casia", arch="MobileFaceNetGDC",
            kwargs={"feat_dim": 128, "input_size": [112, 96]}, embedding_dim=128,
            preprocess=PreprocessSpec("RGB", (127.5,) * 3, (128.0,) * 3, (112, 96), "sphereface_112x96"),
            source="Xiaoccer/MobileFaceNet_Pytorch release, epoch 68, published LFW 99.30",
            notes="RGB: the training loader reads images with scipy.misc.imread (RGB), and LFW accuracy with "
                  "our crops is higher with RGB than with BGR input (98.83 vs 98.37, docs/BENCHMARKS.md).",
            provenance={"training_data": "CASIA-WebFace, SphereFace 112x96 crops",
                        "results": _lfw_results(0.27, 98.83, 0.45)},
        ),
    ),
    "bubbliiiing_mobilefacenet_casia": ReleasedRecognizer(
        file="recognition/bubbliiiing_arcface_mobilefacenet_casia.pth",
        rules=tuple(BUBBLIIIING_RULES),
        meta=ModelMeta(
            name="bubbliiiing_mobilefacenet_casia", arch="MobileFaceNetGDC",
            kwargs={"feat_dim": 128, "input_size": [112, 112]}, embedding_dim=128,
            preprocess=PreprocessSpec("RGB", (127.5,) * 3, (127.5,) * 3, (112, 112), "arcface_112x112"),
            source="bubbliiiing/arcface-pytorch release (MIT), published LFW 98.78",
            notes="(x/255 - 0.5)/0.5 on PIL RGB images, i.e. (x - 127.5)/127.5; RGB beats BGR on LFW "
                  "(98.17 vs 97.45).",
            provenance={"training_data": "CASIA-WebFace, ArcFace 112x112 crops",
                        "results": _lfw_results(0.28, 98.17, 0.43)},
        ),
    ),
}


def read_state_dict(path: Path, state_key: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """``torch.load(weights_only=True)``; unwrap ``state_key`` when the file is a checkpoint dict."""
    if not path.is_file():
        raise FileNotFoundError(f"weights not found: {path} (set FACE_SDK_WEIGHTS_DIR or pass a path)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state_key is not None:
        if not isinstance(state, Mapping) or state_key not in state:
            raise WeightConversionError(f"{path}: expected a dict with key {state_key!r}")
        state = state[state_key]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightConversionError(f"{path}: expected a state_dict (name -> tensor)")
    return strip_data_parallel_prefix(state)


def identify_release(path: Path) -> str:
    """Which released recogniser a file is: by file name, then by its key signature."""
    for name, release in RELEASED_RECOGNIZERS.items():
        if Path(release.file).name == path.name:
            return name
    state = torch.load(path, map_location="cpu", weights_only=True)
    keys: List[str] = list(state.get("net_state_dict", state)) if isinstance(state, Mapping) else []
    if any(k.startswith("arcface.GDC_dw") for k in keys):
        return "bubbliiiing_mobilefacenet_casia"
    if any(k.startswith("linear7.conv") for k in keys):
        return "xiaoccer_mobilefacenet_casia"
    if any(k.startswith("gdconv.depthwise") for k in keys):
        return "foamliu_mobilefacenet_ms1m"
    raise WeightConversionError(f"{path}: not one of the released recognisers {sorted(RELEASED_RECOGNIZERS)}")


def released_weights_path(name: str, weights_dir: Optional[Path] = None) -> Path:
    if name not in RELEASED_RECOGNIZERS:
        raise KeyError(f"unknown released recogniser {name!r}; known: {sorted(RELEASED_RECOGNIZERS)}")
    return Path(weights_dir or default_weights_dir()) / RELEASED_RECOGNIZERS[name].file


def convert_released_recognizer(name_or_path: str | Path, weights_dir: Optional[Path] = None
                                ) -> Tuple[FaceBackbone, ModelMeta, Dict[str, torch.Tensor], Dict[str, str]]:
    """Like ``load_released_recognizer`` but also returns the source state_dict and the key mapping (for tests)."""
    if str(name_or_path) in RELEASED_RECOGNIZERS:
        name, path = str(name_or_path), released_weights_path(str(name_or_path), weights_dir)
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: neither a released recogniser name {sorted(RELEASED_RECOGNIZERS)} "
                                    f"nor a file")
        name = identify_release(path)
    release = RELEASED_RECOGNIZERS[name]
    source_state = read_state_dict(path, release.state_key)
    backbone = build_backbone(release.meta.backbone_config)
    converted = convert_state_dict(source_state, release.rules, backbone, str(path))
    backbone.load_state_dict(converted, strict=True)
    backbone.eval()
    return backbone, release.meta, source_state, map_keys(list(source_state), release.rules, str(path))


def load_released_recognizer(name_or_path: str | Path, weights_dir: Optional[Path] = None
                             ) -> Tuple[FaceBackbone, ModelMeta]:
    """A released MobileFaceNet (by name or file) as our backbone (eval mode) plus its ``ModelMeta``."""
    backbone, meta, _, _ = convert_released_recognizer(name_or_path, weights_dir)
    return backbone, meta


@dataclass(frozen=True)
class ReleasedDetector:
    """One released RetinaFace: file (relative to the weights folder) and the settings it was trained with."""

    file: str
    config: RetinaFaceConfig
    source: str


RELEASED_DETECTORS: Dict[str, ReleasedDetector] = {
    # biubug6/Face-Detector-1MB-with-landmark: ReLU activations, small priors (trained on ~300 px crops).
    "biubug6_mnet025": ReleasedDetector(
        file="detection/biubug6_mobilenet0.25_Final.pth",
        config=RetinaFaceConfig(negative_slope=0.0, min_sizes=((10, 20), (32, 64), (128, 256))),
        source="biubug6/Face-Detector-1MB-with-landmark (MIT)",
    ),
    # FaceX-Zoo SDK face_detection_1.0: LeakyReLU(0.1) (read from the pickled modules), RetinaFace priors.
    "facexzoo_mnet025": ReleasedDetector(
        file="detection/facexzoo_face_detection_retina_mnet025.pkl",
        config=RetinaFaceConfig(negative_slope=0.1, min_sizes=((16, 32), (64, 128), (256, 512))),
        source="JDAI-CV/FaceX-Zoo face_sdk (Apache-2.0), recovered with the restricted unpickler",
    ),
}
DEFAULT_DETECTOR = "facexzoo_mnet025"


def load_released_detector(name_or_path: Optional[str | Path] = None, config: Optional[RetinaFaceConfig] = None
                           ) -> Tuple[RetinaFace, RetinaFaceConfig]:
    """A RetinaFace with released weights (eval mode) and its config; ``None`` = ``DEFAULT_DETECTOR``."""
    name_or_path = DEFAULT_DETECTOR if name_or_path is None else name_or_path
    if str(name_or_path) in RELEASED_DETECTORS:
        release = RELEASED_DETECTORS[str(name_or_path)]
        path = default_weights_dir() / release.file
    else:
        path = Path(name_or_path)
        release = next((r for r in RELEASED_DETECTORS.values() if Path(r.file).name == path.name), None)
    if config is None:
        if release is None:
            raise ValueError(f"{path}: unknown detector file; pass a RetinaFaceConfig or use one of "
                             f"{sorted(RELEASED_DETECTORS)}")
        config = release.config
    network = RetinaFace(negative_slope=config.negative_slope)
    network.load_state_dict(load_detector_state_dict(path, network), strict=True)
    return network.eval(), config


def load_detector_state_dict(path: str | Path, model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """RetinaFace weights for ``model``: a ``.pth`` state_dict (weights_only) or a pickled FaceX-Zoo ``.pkl``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"detector weights not found: {path} (set FACE_SDK_WEIGHTS_DIR or pass a path)")
    if path.suffix == ".pkl":
        source_state = load_pickled_module_state_dict(path)
    else:
        source_state = read_state_dict(path)
    return convert_state_dict(strip_data_parallel_prefix(source_state), RETINAFACE_RULES, model, str(path))
