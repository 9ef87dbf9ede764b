"""Align a folder of raw face images: detect → 5 landmarks → similarity warp to a template crop.

    python -m tools.align_dataset --input ../shared/data/lfw/images --output data_cache/lfw_aligned --layout lfw

Writes into ``--output``:

* the aligned crops, mirroring the input's relative paths (``--layout mirror``), or, with ``--layout lfw``, the flat
  LFW names ``NAME_####.jpg`` mapped to ``NAME/NAME_####.jpg`` (the layout LFW ``pairs.txt`` expects);
* ``landmarks.txt`` — ``relative/path x1 y1 … x5 y5`` in *aligned-crop* coordinates (``data_processor.landmarks``
  format), one line per written crop; fallback crops carry the template points and are marked in ``no_face.txt``;
* ``source_landmarks.txt`` — the detected landmarks in original image coordinates (detected faces only);
* ``no_face.txt`` — ``relative/path<TAB>reason<TAB>action`` for every image where no face was found: nothing is
  dropped silently. Policy ``--no-face center_crop`` (default) writes the central part of the image (LFW images
  are centred deep-funneled crops) resized to the template size; ``--no-face skip`` writes no crop;
* ``summary.json`` — counts, settings, and speed (images/s).

Face choice when several are found: among faces scoring at least half the best score, the one whose box centre is
closest to the image centre (the LFW convention: the labelled person is centred, bystanders sit at the edges).
Unreadable images stop nothing but are listed in ``errors.txt`` and make the command exit with status 1.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
LFW_NAME = re.compile(r"^(?P<person>.+)_(?P<number>\d{4})$")
CHUNK = 16


@dataclass(frozen=True)
class AlignSettings:
    template: str
    detector: str
    score_threshold: float
    min_short_side: int
    no_face: str
    fallback_fraction: float


@dataclass(frozen=True)
class ImageResult:
    source: str                      # relative input path
    target: Optional[str]            # relative output path (None: no crop written)
    status: str                      # "face" | "no_face" | "error"
    aligned_landmarks: Optional[np.ndarray] = None
    source_landmarks: Optional[np.ndarray] = None
    score: float = 0.0
    faces_found: int = 0
    reason: str = ""


def output_path(relative: Path, layout: str) -> Path:
    """Where the crop of ``relative`` goes: the same path, or ``NAME/NAME_####.ext`` for flat LFW names."""
    if layout == "mirror":
        return relative
    match = LFW_NAME.match(relative.stem)
    if not match or relative.parent != Path("."):
        raise ValueError(f"{relative}: --layout lfw expects flat names NAME_####.jpg")
    return Path(match["person"]) / relative.name


def list_images(root: Path) -> List[Path]:
    if not root.is_dir():
        raise FileNotFoundError(f"input folder not found: {root}")
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    return files


_WORKER: Dict[str, object] = {}


def _init_worker(settings: AlignSettings, threads: int) -> None:
    import torch

    from face_sdk.detector import FaceDetector

    torch.set_num_threads(threads)
    _WORKER["settings"] = settings
    _WORKER["detector"] = FaceDetector.from_weights(settings.detector, score_threshold=settings.score_threshold,
                                                    min_short_side=settings.min_short_side)


def _align_chunk(job: Tuple[str, str, Sequence[Tuple[str, str]]]) -> List[ImageResult]:
    """Align one chunk of ``(relative input, relative output)`` pairs; same-size images are detected as a batch."""
    from data_processor.image_io import read_image, write_image
    from face_sdk.aligner import align_face, center_crop
    from face_sdk.detector import pick_central_face

    input_root, output_root, items = Path(job[0]), Path(job[1]), job[2]
    settings: AlignSettings = _WORKER["settings"]  # type: ignore[assignment]
    detector = _WORKER["detector"]
    images: Dict[str, np.ndarray] = {}
    results: Dict[str, ImageResult] = {}
    for source, _ in items:
        try:
            images[source] = read_image(input_root / source)
        except (OSError, ValueError) as error:
            results[source] = ImageResult(source, None, "error", reason=str(error))
    by_size: Dict[Tuple[int, ...], List[str]] = {}
    for source, image in images.items():
        by_size.setdefault(image.shape, []).append(source)
    detections = {}
    for sources in by_size.values():
        for source, found in zip(sources, detector.detect_batch([images[s] for s in sources])):  # type: ignore
            detections[source] = found
    for source, target in items:
        if source in results:
            continue
        image, found = images[source], detections[source]
        face = pick_central_face(found, image.shape[:2])
        if face is not None:
            aligned = align_face(image, face.landmarks, settings.template)
            write_image(output_root / target, aligned.crop)
            results[source] = ImageResult(source, target, "face", aligned.landmarks, face.landmarks, face.score,
                                          len(found))
            continue
        reason = f"no face scoring >= {settings.score_threshold}"
        if settings.no_face == "center_crop":
            aligned = center_crop(image, settings.template, settings.fallback_fraction)
            write_image(output_root / target, aligned.crop)
            results[source] = ImageResult(source, target, "no_face", aligned.landmarks, reason=reason)
        else:
            results[source] = ImageResult(source, None, "no_face", reason=reason)
    return [results[source] for source, _ in items]


def align_folder(input_root: Path, output_root: Path, settings: AlignSettings, layout: str = "mirror",
                 workers: int = 1, progress: bool = True) -> Tuple[List[ImageResult], float]:
    """Align every image under ``input_root``; returns the per-image results (input order) and the seconds taken."""
    from tqdm import tqdm

    files = list_images(input_root)
    targets = [output_path(f, layout) for f in files]
    if len(set(targets)) != len(targets):
        raise ValueError(f"{input_root}: several inputs map to the same output path with layout {layout!r}")
    pairs = [(str(f), str(t)) for f, t in zip(files, targets)]
    jobs = [(str(input_root), str(output_root), pairs[i:i + CHUNK]) for i in range(0, len(pairs), CHUNK)]
    output_root.mkdir(parents=True, exist_ok=True)
    results: List[ImageResult] = []
    start = time.perf_counter()
    bar = tqdm(total=len(pairs), unit="img", disable=not progress, desc="align")
    if workers <= 1:
        _init_worker(settings, threads=2)
        for job in jobs:
            results.extend(_align_chunk(job))
            bar.update(len(job[2]))
    else:
        with get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(settings, 1)) as pool:
            for chunk in pool.imap(_align_chunk, jobs):
                results.extend(chunk)
                bar.update(len(chunk))
    bar.close()
    return results, time.perf_counter() - start


def write_reports(output_root: Path, results: Sequence[ImageResult], settings: AlignSettings, layout: str,
                  seconds: float, input_root: Path) -> Dict[str, object]:
    from data_processor.landmarks import write_landmark_file

    write_landmark_file(output_root / "landmarks.txt",
                        {r.target: r.aligned_landmarks for r in results if r.target is not None})
    write_landmark_file(output_root / "source_landmarks.txt",
                        {r.target or r.source: r.source_landmarks for r in results if r.status == "face"})
    action = f"{settings.no_face} (crop written)" if settings.no_face == "center_crop" else "skipped (no crop)"
    no_face = [r for r in results if r.status == "no_face"]
    errors = [r for r in results if r.status == "error"]
    (output_root / "no_face.txt").write_text("".join(f"{r.source}\t{r.reason}\t{action}\n" for r in no_face),
                                             encoding="utf-8")
    if errors:
        (output_root / "errors.txt").write_text("".join(f"{r.source}\t{r.reason}\n" for r in errors),
                                                encoding="utf-8")
    summary: Dict[str, object] = {
        "input": str(input_root), "images": len(results), "faces": sum(r.status == "face" for r in results),
        "no_face": len(no_face), "errors": len(errors),
        "several_faces_found": sum(r.faces_found > 1 for r in results), "no_face_policy": settings.no_face,
        "layout": layout, "template": settings.template, "detector": settings.detector,
        "score_threshold": settings.score_threshold, "min_short_side": settings.min_short_side,
        "fallback_fraction": settings.fallback_fraction, "seconds": round(seconds, 1),
        "images_per_second": round(len(results) / max(seconds, 1e-9), 2),
    }
    (output_root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def main(argv: Optional[Iterable[str]] = None) -> int:
    from face_sdk.released import DEFAULT_DETECTOR

    parser = argparse.ArgumentParser(prog="python -m tools.align_dataset", description=__doc__.split("\n")[0])
    parser.add_argument("--input", type=Path, required=True, help="folder of raw images (searched recursively)")
    parser.add_argument("--output", type=Path, required=True, help="folder for crops and reports")
    parser.add_argument("--template", default="arcface_112x112", help="alignment template (data_processor.landmarks)")
    parser.add_argument("--layout", choices=("mirror", "lfw"), default="mirror")
    parser.add_argument("--workers", type=int, default=1, help="processes (each runs its own detector)")
    parser.add_argument("--detector", default=DEFAULT_DETECTOR, help="released detector name or weights file")
    parser.add_argument("--score-threshold", type=float, default=0.6)
    parser.add_argument("--min-short-side", type=int, default=320, help="upscale small images before detection")
    parser.add_argument("--no-face", choices=("center_crop", "skip"), default="center_crop",
                        help="what to write for images without a detected face (always listed in no_face.txt)")
    parser.add_argument("--fallback-fraction", type=float, default=0.85,
                        help="centre-crop fallback: fraction of the short side kept (on LFW the mean detected "
                             "landmarks fit the template with the central 86%%)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(list(argv) if argv is not None else None)

    settings = AlignSettings(args.template, args.detector, args.score_threshold, args.min_short_side, args.no_face,
                             args.fallback_fraction)
    results, seconds = align_folder(args.input, args.output, settings, args.layout, args.workers, not args.quiet)
    summary = write_reports(args.output, results, settings, args.layout, seconds, args.input)
    print(json.dumps(summary, indent=2))
    errors = [r for r in results if r.status == "error"]
    for r in errors:
        print(f"error: {r.source}: {r.reason}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
