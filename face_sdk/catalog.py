"""Every weight file the toolbox can use, with its checksum, contract and how to check it.

``python -m face_sdk.weights list`` prints the table; ``python -m face_sdk.weights verify PATH [--pairs BIN]`` checks
PATH's sha256 against the table and then runs it: a recogniser (or the ElasticFace teacher) scores a few real aligned
LFW pairs (``--pairs``: an insightface ``.bin``; default ``../shared/data/protocols/insightface_small_lfw_10pairs.bin``,
its 10 same-person pairs plus 10 different-person pairs: pair ``i``'s first image with pair ``i+5``'s second — the
file holds LFW's first 10 positive pairs, six people, and pairs five apart never share one), a detector
must find the one face of the built-in demo photo (``skimage.data.astronaut()``). Exit status 0 = verified.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from face_sdk.released import RELEASED_DETECTORS, RELEASED_RECOGNIZERS, REPO_ROOT, default_weights_dir
from utils.provenance import sha256_file

DEFAULT_PAIRS = REPO_ROOT.parent / "shared" / "data" / "protocols" / "insightface_small_lfw_10pairs.bin"
MIN_PAIR_ACCURACY = 0.9  # of the 20 verification pairs, at the model's LFW threshold


@dataclass(frozen=True)
class WeightFile:
    name: str
    file: str                 # relative to the weights folder (face_sdk.released.default_weights_dir)
    kind: str                 # recognizer | detector | teacher
    arch: str
    training_data: str
    input_contract: str
    published: str
    sha256: Optional[str]     # None: not available here to hash
    obtain: str
    convert: str              # the command that converts and checks it


CATALOG: List[WeightFile] = [
    WeightFile("foamliu_mobilefacenet_ms1m", RELEASED_RECOGNIZERS["foamliu_mobilefacenet_ms1m"].file, "recognizer",
               "MobileFaceNetReLU6 (feat_dim 128)", "MS1M (insightface 112x112 ArcFace-aligned)",
               "RGB, ImageNet mean/std x 255 (--preprocess imagenet), 112x112, arcface_112x112",
               "LFW 99.48 (published); 99.05 +/- 0.33 with our aligner (docs/BENCHMARKS.md)",
               "90a00ba1d8b0b688af3deb731ed53dca582e6106805d1bc3cfdef55f570493f4",
               "github.com/foamliu/MobileFaceNet release assets (Apache-2.0)",
               "python -m face_sdk.weights verify weights/recognition/foamliu_mobilefacenet_ms1m.pt"),
    WeightFile("xiaoccer_mobilefacenet_casia", RELEASED_RECOGNIZERS["xiaoccer_mobilefacenet_casia"].file,
               "recognizer", "MobileFaceNetGDC (feat_dim 128, input 112x96)", "CASIA-WebFace, SphereFace 112x96 crops",
               "RGB, (x - 127.5) / 128, 112x96, sphereface_112x96 (an ArcFace crop's columns 8..104)",
               "LFW 99.30 (published); 98.83 +/- 0.45 with our aligner",
               "e839247cdbdfc023fb7cadeaf53a4549d50c8fc24ad154c02e35920ea8910d99",
               "github.com/Xiaoccer/MobileFaceNet_Pytorch (model/best/068.ckpt)",
               "python -m face_sdk.weights verify weights/recognition/xiaoccer_mobilefacenet_casia_epoch068.ckpt"),
    WeightFile("bubbliiiing_mobilefacenet_casia", RELEASED_RECOGNIZERS["bubbliiiing_mobilefacenet_casia"].file,
               "recognizer", "MobileFaceNetGDC (feat_dim 128)", "CASIA-WebFace, ArcFace 112x112 crops",
               "RGB, (x - 127.5) / 127.5 (--preprocess insightface), 112x112, arcface_112x112",
               "LFW 98.78 (published); 98.17 +/- 0.43 with our aligner",
               "4c08e11a0a2bbf299910210da647c7d8105c348f4c533868e1710dbcf7b22480",
               "github.com/bubbliiiing/arcface-pytorch release (MIT)",
               "python -m face_sdk.weights verify weights/recognition/bubbliiiing_arcface_mobilefacenet_casia.pth"),
    WeightFile("facexzoo_mnet025", RELEASED_DETECTORS["facexzoo_mnet025"].file, "detector",
               "RetinaFace MobileNet-0.25, LeakyReLU(0.1) (the SDK default detector)", "WIDER FACE",
               "RGB image of any size; boxes + 5 landmarks", "not published for this file",
               "c3dab9a03d12296818ba25d7d1a60ff4fb98bf42523ce5f53552ed246013b52b",
               "github.com/JDAI-CV/FaceX-Zoo face_sdk/models (Apache-2.0); a pickled module, read by "
               "face_sdk.restricted_pickle",
               "python -m face_sdk.weights verify weights/detection/facexzoo_face_detection_retina_mnet025.pkl"),
    WeightFile("biubug6_mnet025", RELEASED_DETECTORS["biubug6_mnet025"].file, "detector",
               "RetinaFace MobileNet-0.25, ReLU, small priors", "WIDER FACE",
               "RGB image of any size; boxes + 5 landmarks",
               "WIDER val easy/medium/hard 0.811/0.697/0.376 at 320x240 (published)",
               "ed6fa7d45a5179f03cb5ce82c73b0c6711372968e53782e88395acee88d319e1",
               "github.com/biubug6/Face-Detector-1MB-with-landmark weights/ (MIT)",
               "python -m face_sdk.weights verify weights/detection/biubug6_mobilenet0.25_Final.pth"),
    WeightFile("elasticface_arc_r100", "teacher/295672backbone.pth", "teacher",
               "IResNet100 (feat_dim 512), insightface keys (load unchanged)", "MS1MV2 (85,742 ids, 5.82M images)",
               "RGB, (x - 127.5) / 127.5 (--preprocess insightface), 112x112, arcface_112x112",
               "LFW 99.80, CFP-FP 98.61, AgeDB-30 98.35 (GFRO teacher training.log)",
               None, "github.com/fdbtrs/ElasticFace README: ElasticFace-Arc pretrained model (not in ../shared; "
                     "record its sha256 here once downloaded)",
               "python -m face_sdk.weights verify PATH/295672backbone.pth"),
]


def find_entry(path: Path, digest: str) -> Optional[WeightFile]:
    """The catalogue entry with this checksum, else the one with this file name."""
    return (next((e for e in CATALOG if e.sha256 == digest), None)
            or next((e for e in CATALOG if Path(e.file).name == path.name), None))


def verification_pairs(bin_path: Path) -> tuple:
    """``(crops, first, second, issame)``: the .bin's pairs plus as many pairs of pair ``i``'s first image with pair
    ``(i + N/2) mod N``'s second image, labelled different (true of the default file: see the module docstring)."""
    from data_processor.image_io import decode_image
    from data_processor.verification_bin import read_verification_bin

    images, issame = read_verification_bin(bin_path)
    crops = [decode_image(b, f"{bin_path}#{i}") for i, b in enumerate(images)]
    count = len(issame)
    first = [2 * i for i in range(count)] + [2 * i for i in range(count)]
    second = [2 * i + 1 for i in range(count)] + [2 * ((i + count // 2) % count) + 1 for i in range(count)]
    return crops, first, second, list(issame) + [False] * count


def score_pairs(recognizer: Any, bin_path: Path, threshold: float) -> Dict[str, Any]:
    crops, first, second, labels = verification_pairs(bin_path)
    embeddings = recognizer.embed(crops)
    cosines = np.sum(embeddings[first] * embeddings[second], axis=1)
    labels_arr = np.asarray(labels)
    accuracy = float(np.mean((cosines > threshold) == labels_arr))
    return {"pairs": str(bin_path), "num_pairs": len(labels), "threshold": threshold,
            "accuracy": round(accuracy, 4), "mean_cosine_same": round(float(cosines[labels_arr].mean()), 4),
            "mean_cosine_different": round(float(cosines[~labels_arr].mean()), 4),
            "ok": accuracy >= MIN_PAIR_ACCURACY}


def verify(path: str | Path, pairs: Optional[str | Path] = None, device: str = "cpu") -> Dict[str, Any]:
    """Checksum + a functional check; ``result["ok"]`` says whether both passed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weight file (see `python -m face_sdk.weights list`)")
    digest = sha256_file(path)
    entry = find_entry(path, digest)
    if entry is None:
        raise ValueError(f"{path} (sha256 {digest}) is not in the catalogue: {[e.name for e in CATALOG]}; evaluate "
                         f"other weights with test_protocol/test_lfw_adapt.sh --weights PATH --arch A --preprocess P")
    result: Dict[str, Any] = {"file": str(path), "name": entry.name, "kind": entry.kind, "sha256": digest,
                              "sha256_expected": entry.sha256,
                              "sha256_ok": None if entry.sha256 is None else digest == entry.sha256}
    if result["sha256_ok"] is False:
        result["ok"] = False
        result["error"] = "checksum differs from the catalogue: a different or corrupted file"
        return result
    if entry.kind == "detector":
        from face_sdk.demo import demo_image
        from face_sdk.detector import FaceDetector

        detections = FaceDetector.from_weights(path, device=device).detect(demo_image("astronaut"))
        result["check"] = {"image": "demo:astronaut", "faces": len(detections),
                           "best_score": round(float(detections[0].score), 4) if detections else None}
        result["ok"] = len(detections) == 1
        return result
    pairs = Path(pairs) if pairs else DEFAULT_PAIRS
    if entry.kind == "recognizer":
        from face_sdk.recognizer import load_recognizer

        recognizer = load_recognizer(path, device=device)
        threshold = float(recognizer.meta.provenance["results"]["lfw_cosine_threshold"])
    else:  # the ElasticFace teacher: an insightface IResNet100 state_dict, strict
        from data_processor.preprocess import INSIGHTFACE_SPEC
        from face_sdk.model_meta import ModelMeta
        from face_sdk.recognizer import Recognizer
        from test_protocol.model_loading import load_foreign_weights

        loaded = load_foreign_weights(path, "IResNet100", INSIGHTFACE_SPEC)
        meta = ModelMeta(name=entry.name, arch="IResNet100", kwargs={}, embedding_dim=512,
                         preprocess=INSIGHTFACE_SPEC)
        recognizer, threshold = Recognizer(loaded.model, meta, device), 0.25
    if not pairs.is_file():
        result["check"] = f"skipped: pairs file {pairs} missing (pass --pairs an insightface .bin)"
        result["ok"] = bool(result["sha256_ok"])
        return result
    result["check"] = score_pairs(recognizer, pairs, threshold)
    result["ok"] = bool(result["check"]["ok"]) and result["sha256_ok"] is not False
    return result


def catalog_rows() -> List[Dict[str, Any]]:
    rows = []
    for entry in CATALOG:
        row = asdict(entry)
        row["present"] = (default_weights_dir() / entry.file).is_file()
        rows.append(row)
    return rows
