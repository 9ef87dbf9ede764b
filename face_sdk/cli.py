"""Command line: ``python -m face_sdk.cli {detect,align,embed,verify} IMAGE... [options]`` → JSON on stdout.

IMAGE is a file path or ``demo:astronaut`` (an embedded real photo, scikit-image's ``astronaut``); ``detect`` and
``align`` without an image (or with ``--demo``) use that photo. Examples::

    python -m face_sdk.cli detect            # the built-in demo photo
    python -m face_sdk.cli detect demo:astronaut --draw-dir work_dirs/sdk
    python -m face_sdk.cli align photo.jpg --out-dir work_dirs/crops
    python -m face_sdk.cli embed a.jpg b.jpg --model foamliu_mobilefacenet_ms1m --out emb.npy
    python -m face_sdk.cli verify a.jpg b.jpg [--threshold 0.35]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from data_processor.image_io import write_image
from face_sdk.demo import load_image_argument
from face_sdk.detector import FaceDetector
from face_sdk.pipeline import FacePipeline, FaceResult, draw_detections
from face_sdk.recognizer import load_recognizer
from face_sdk.released import DEFAULT_DETECTOR, RELEASED_DETECTORS, RELEASED_RECOGNIZERS
from utils.cli import run_cli

DEFAULT_MODEL = "foamliu_mobilefacenet_ms1m"
DEMO_DEFAULT = "demo:astronaut"


def _image_stem(argument: str) -> str:
    return argument.split(":", 1)[1] if argument.startswith("demo:") else Path(argument).stem


def _face_json(face: FaceResult, crop_path: Optional[Path] = None) -> Dict[str, Any]:
    out: Dict[str, Any] = face.detection.to_dict()
    out["aligned_landmarks"] = [[round(float(x), 2), round(float(y), 2)] for x, y in face.aligned.landmarks]
    if crop_path is not None:
        out["crop"] = str(crop_path)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m face_sdk.cli", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--detector", default=DEFAULT_DETECTOR,
                        help=f"released detector {sorted(RELEASED_DETECTORS)} or weights file")
    common.add_argument("--score-threshold", type=float, default=0.6, help="minimum face score")
    common.add_argument("--min-short-side", type=int, default=320, help="upscale smaller images to this short side")
    common.add_argument("--device", default="cpu")
    model = argparse.ArgumentParser(add_help=False)
    model.add_argument("--model", default=DEFAULT_MODEL,
                       help=f"released recogniser {sorted(RELEASED_RECOGNIZERS)}, weights file or export folder")
    detect = sub.add_parser("detect", parents=[common], help="boxes, scores and 5 landmarks per face")
    detect.add_argument("images", nargs="*", help=f"image files (none: {DEMO_DEFAULT})")
    detect.add_argument("--demo", action="store_true", help=f"also run on the built-in photo {DEMO_DEFAULT}")
    detect.add_argument("--draw-dir", type=Path, help="write <stem>.detections.png with the faces drawn")
    align = sub.add_parser("align", parents=[common], help="aligned crops of every face")
    align.add_argument("images", nargs="*", help=f"image files (none: {DEMO_DEFAULT})")
    align.add_argument("--demo", action="store_true", help=f"also run on the built-in photo {DEMO_DEFAULT}")
    align.add_argument("--out-dir", type=Path, required=True, help="where <stem>_<face>.png crops are written")
    align.add_argument("--template", default="arcface_112x112", help="alignment template")
    embed = sub.add_parser("embed", parents=[common, model], help="embedding of the main face of each image")
    embed.add_argument("images", nargs="+")
    embed.add_argument("--out", type=Path, help="also save the embeddings [N, D] as .npy")
    verify = sub.add_parser("verify", parents=[common, model], help="same person or not (cosine of main faces)")
    verify.add_argument("images", nargs=2)
    verify.add_argument("--threshold", type=float,
                        help="cosine threshold (default: the model's LFW threshold from its model meta)")
    return parser


def _detector(args: argparse.Namespace) -> FaceDetector:
    return FaceDetector.from_weights(args.detector, device=args.device, score_threshold=args.score_threshold,
                                     min_short_side=args.min_short_side)


def run(args: argparse.Namespace) -> Any:
    if args.command in ("detect", "align") and (args.demo or not args.images):
        args.images = list(args.images) + [DEMO_DEFAULT]
    missing = [a for a in args.images if not a.startswith("demo:") and not Path(a).is_file()]
    if missing:  # fail before loading any model
        raise FileNotFoundError(f"image not found: {', '.join(missing)}")
    detector = _detector(args)
    if args.command == "detect":
        results: List[Dict[str, Any]] = []
        for argument in args.images:
            image = load_image_argument(argument)
            detections = detector.detect(image)
            entry: Dict[str, Any] = {"image": argument, "size": list(image.shape[:2]),
                                     "faces": [d.to_dict() for d in detections]}
            if args.draw_dir is not None:
                drawing = args.draw_dir / f"{_image_stem(argument)}.detections.png"
                write_image(drawing, draw_detections(image, detections))
                entry["drawing"] = str(drawing)
            results.append(entry)
        return results
    if args.command == "align":
        pipeline = FacePipeline(detector, template=args.template)
        results = []
        for argument in args.images:
            faces = pipeline.align(load_image_argument(argument))
            entries = []
            for index, face in enumerate(faces):
                crop_path = args.out_dir / f"{_image_stem(argument)}_{index}.png"
                write_image(crop_path, face.aligned.crop)
                entries.append(_face_json(face, crop_path))
            results.append({"image": argument, "template": args.template, "faces": entries})
        return results
    recognizer = load_recognizer(args.model, device=args.device)
    pipeline = FacePipeline(detector, recognizer)
    if args.command == "embed":
        faces = pipeline.embed_faces([pipeline.main_face(load_image_argument(a), a) for a in args.images])
        embeddings = np.stack([f.embedding for f in faces])
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            np.save(args.out, embeddings)
        return [{"image": a, **_face_json(f), "embedding": [round(float(v), 6) for v in f.embedding]}
                for a, f in zip(args.images, faces)]
    threshold = args.threshold
    if threshold is None:
        threshold = recognizer.meta.provenance.get("results", {}).get("lfw_cosine_threshold")
        if threshold is None:
            raise ValueError(f"model {args.model} has no LFW threshold in its model meta; pass --threshold")
    images = [load_image_argument(a) for a in args.images]
    result = pipeline.verify(images[0], images[1], threshold, sources=args.images)
    return {"images": list(args.images), "model": recognizer.meta.name or recognizer.meta.arch,
            "cosine": round(result.score, 4), "threshold": result.threshold, "same_person": result.same,
            "faces": [_face_json(f) for f in result.faces]}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    output = run(args)  # bad input raises; run as a command, utils.cli.run_cli prints it as one 'error:' line
    json.dump(output, sys.stdout, indent=2)
    sys.stdout.write("\n")
    if args.command == "verify":
        verdict = "same person" if output["same_person"] else "different people"
        print(f"cosine {output['cosine']:.4f} at threshold {output['threshold']:.4f}: {verdict}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
