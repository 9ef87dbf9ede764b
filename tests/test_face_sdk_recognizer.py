"""Recogniser on real LFW images: detect → align → embed with released MobileFaceNets (face_sdk.recognizer)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from backbone import build_backbone
from data_processor.preprocess import PreprocessSpec
from face_sdk.model_meta import ModelMeta
from face_sdk.recognizer import Recognizer

# From LFW pairs.txt, fold 1: two "same" pairs and two "different" pairs.
SAME = [("Abel_Pacheco_0001.jpg", "Abel_Pacheco_0004.jpg"), ("Akhmed_Zakayev_0001.jpg", "Akhmed_Zakayev_0003.jpg")]
DIFFERENT = [("Abdel_Madi_Shabneh_0001.jpg", "Dean_Barker_0001.jpg"),
             ("Abdel_Madi_Shabneh_0001.jpg", "Giancarlo_Fisichella_0001.jpg")]


def _random_recognizer(input_size=(112, 112), template="arcface_112x112") -> Recognizer:
    torch.manual_seed(0)
    meta = ModelMeta(arch="MobileFaceNetGDC", kwargs={"feat_dim": 32, "input_size": list(input_size)},
                     embedding_dim=32, preprocess=PreprocessSpec("RGB", input_size=input_size, template=template))
    return Recognizer(build_backbone(meta.backbone_config), meta, batch_size=3)


def test_embed_accepts_arrays_lists_and_tensors_and_batches():
    recognizer = _random_recognizer()
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, size=(7, 112, 112, 3), dtype=np.uint8)
    from_array = recognizer.embed(crops)
    from_list = recognizer.embed(list(crops))
    from_tensor = recognizer.embed(torch.from_numpy(crops).permute(0, 3, 1, 2))
    assert from_array.shape == (7, 32) and from_array.dtype == np.float32
    np.testing.assert_allclose(from_array, from_list, atol=1e-5)
    np.testing.assert_allclose(from_array, from_tensor, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(from_array, axis=1), 1.0, atol=1e-5)
    assert recognizer.embed([]).shape == (0, 32)


def test_wrong_crop_size_is_an_error_but_arcface_crops_feed_sphereface_models():
    recognizer = _random_recognizer()
    with pytest.raises(ValueError, match="expects 112×112 crops aligned to arcface_112x112"):
        recognizer.embed(np.zeros((1, 100, 100, 3), np.uint8))
    sphere = _random_recognizer((112, 96), "sphereface_112x96")
    crops = np.random.default_rng(1).integers(0, 256, size=(2, 112, 112, 3), dtype=np.uint8)
    np.testing.assert_allclose(sphere.embed(crops), sphere.embed(np.ascontiguousarray(crops[:, :, 8:104])), atol=1e-6)


@pytest.fixture(scope="module")
def lfw_crops():
    from tests.conftest import shared_path
    from data_processor.image_io import read_image
    from face_sdk.aligner import align_face
    from face_sdk.detector import FaceDetector, pick_central_face

    root = shared_path("data/lfw/images")
    shared_path("weights/detection/facexzoo_face_detection_retina_mnet025.pkl")
    detector = FaceDetector.from_weights()
    crops = {}
    for name in {n for pair in SAME + DIFFERENT for n in pair}:
        image = read_image(root / name)
        face = pick_central_face(detector.detect(image), image.shape[:2])
        assert face is not None, name
        crops[name] = align_face(image, face.landmarks).crop
    return crops


@pytest.mark.parametrize("model", ["foamliu_mobilefacenet_ms1m", "xiaoccer_mobilefacenet_casia",
                                   "bubbliiiing_mobilefacenet_casia"])
def test_same_person_scores_higher_than_different_people(shared, lfw_crops, model):
    from face_sdk.recognizer import load_recognizer
    from face_sdk.released import RELEASED_RECOGNIZERS

    shared(f"weights/{RELEASED_RECOGNIZERS[model].file}")
    recognizer = load_recognizer(model)
    names = sorted(lfw_crops)
    embeddings = dict(zip(names, recognizer.embed([lfw_crops[n] for n in names])))
    same = [float(embeddings[a] @ embeddings[b]) for a, b in SAME]
    different = [float(embeddings[a] @ embeddings[b]) for a, b in DIFFERENT]
    assert min(same) > max(different), (same, different)
    assert min(same) > 0.4 and max(different) < 0.3, (same, different)
