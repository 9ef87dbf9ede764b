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
* ``summary.json`` — counts, settings, speed (images/s) and provenance: the sha256 of every file written
  (``files``; ``files_sha256`` over them), of every input image (``inputs``; ``input_sha256``), of the detector
  weights and of the aligning code (``code_sha256`` over ``CODE_MODULES``). ``ensure_aligned`` reuses a folder only
  when all of these still match (inputs and outputs re-hashed) and it holds the crops needed, and rebuilds it
  otherwise.

Face choice when several are found: among faces scoring at least half the best score, the one whose box centre is
closest to the image centre (the LFW convention: the labelled person is centred, bystanders sit at the edges).
Unreadable images stop nothing but are listed in ``errors.txt`` and make the command exit with status 1.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from utils.cli import run_cli
from utils.progress import progress as progress_bar
from utils.provenance import (checksums_digest, file_checksums, first_few, read_manifest, sha256_file, source_digest,
                              verify_checksums)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
LFW_NAME = re.compile(r"^(?P<person>.+)_(?P<number>\d{4})$")
CHUNK = 16
# the code an aligned folder depends on (its digest is recorded in summary.json; a change means a rebuild)
CODE_MODULES = ("tools.align_dataset", "face_sdk.aligner", "face_sdk.detector", "face_sdk.priors",
                "face_sdk.retinaface", "face_sdk.released", "face_sdk.weights", "face_sdk.restricted_pickle",
                "data_processor.landmarks", "data_processor.image_io")
SETTINGS_KEYS = ("template", "detector", "score_threshold", "min_short_side", "no_face_policy", "fallback_fraction",
                 "layout")


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
    files = list_images(input_root)
    targets = [output_path(f, layout) for f in files]
    if len(set(targets)) != len(targets):
        raise ValueError(f"{input_root}: several inputs map to the same output path with layout {layout!r}")
    pairs = [(str(f), str(t)) for f, t in zip(files, targets)]
    jobs = [(str(input_root), str(output_root), pairs[i:i + CHUNK]) for i in range(0, len(pairs), CHUNK)]
    output_root.mkdir(parents=True, exist_ok=True)
    results: List[ImageResult] = []
    start = time.perf_counter()
    bar = progress_bar(total=len(pairs), unit="img", disable=not progress, desc="align")
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
        **provenance(input_root, [r.source for r in results], settings.detector),
    }
    files = file_checksums(output_root, exclude=("summary.json",))
    summary.update(files_sha256=checksums_digest(files), files=files)
    (output_root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def detector_weights_path(detector: str) -> Path:
    """The weights file a released detector name (or a path) stands for."""
    from face_sdk.released import RELEASED_DETECTORS, default_weights_dir

    if detector in RELEASED_DETECTORS:
        return default_weights_dir() / RELEASED_DETECTORS[detector].file
    return Path(detector)


def provenance(input_root: Path, sources: Iterable[str], detector: str) -> Dict[str, object]:
    """What an aligned folder depends on besides its settings: each input image's sha256 (``inputs``, and
    ``input_sha256`` over them), the detector weights' and the aligning code's (``CODE_MODULES``)."""
    inputs = file_checksums(input_root, sources)
    return {"input_sha256": checksums_digest(inputs), "detector_sha256": sha256_file(detector_weights_path(detector)),
            "code_sha256": source_digest(CODE_MODULES), "inputs": inputs}


def settings_record(settings: AlignSettings, layout: str) -> Dict[str, object]:
    return {"template": settings.template, "detector": settings.detector, "score_threshold": settings.score_threshold,
            "min_short_side": settings.min_short_side, "no_face_policy": settings.no_face,
            "fallback_fraction": settings.fallback_fraction, "layout": layout}


def reuse_problem(output_root: Path, settings: AlignSettings, layout: str, input_root: Path,
                  needed: Optional[Iterable[str]] = None) -> Optional[str]:
    """Why ``output_root`` cannot be reused (None: it can). It must have a summary.json with the same settings,
    detector weights and aligning code; every input image it was made from must still have the same bytes under
    ``input_root``; every crop and report must match the summary's checksums; and it must hold the crops ``needed``
    (relative output paths, e.g. the images of the pairs to score) — or, without ``needed``, have been made from
    exactly the images now under ``input_root``."""
    summary, problem = read_manifest(output_root / "summary.json")
    if summary is None:
        return problem
    if not isinstance(summary.get("files"), dict) or not isinstance(summary.get("inputs"), dict):
        return "summary.json has no per-file checksums (written by an older version)"
    wanted = settings_record(settings, layout)
    changed = [key for key in SETTINGS_KEYS if summary.get(key) != wanted[key]]
    if changed:
        return f"other settings: {', '.join(f'{k} {summary.get(k)!r} (wanted {wanted[k]!r})' for k in changed)}"
    if summary.get("detector_sha256") != sha256_file(detector_weights_path(settings.detector)):
        return "the detector weights changed since it was built"
    if summary.get("code_sha256") != source_digest(CODE_MODULES):
        return f"the aligning code changed since it was built ({', '.join(CODE_MODULES)})"
    if needed is None:
        current = {f.as_posix() for f in list_images(input_root)}
        if current != set(summary["inputs"]):
            return (f"made from {len(summary['inputs'])} input images, {input_root} now has {len(current)} "
                    f"({len(current - set(summary['inputs']))} not aligned)")
    changed_inputs = verify_checksums(input_root, summary["inputs"])
    if changed_inputs:
        return f"the input images changed since it was built: {first_few(changed_inputs)}"
    problems = verify_checksums(output_root, summary["files"])
    if problems:
        return f"does not match its summary.json: {first_few(problems)}"
    absent = sorted(set(needed or ()) - set(summary["files"]))
    if absent:
        return f"{len(absent)} needed image(s) are not in it, first: {absent[:3]}"
    return None


def ensure_aligned(input_root: Path, output_root: Path, settings: AlignSettings, layout: str = "mirror",
                   workers: int = 1, progress: bool = True, needed: Optional[Iterable[str]] = None
                   ) -> Dict[str, object]:
    """The summary of ``output_root``, aligned from ``input_root`` unless a verified build with the same settings,
    inputs, detector and code that holds the ``needed`` crops is already there (see ``reuse_problem``). A rebuild
    aligns every image of ``input_root`` into a sibling folder that replaces the old one only when complete; a
    non-empty folder without a summary.json is never replaced."""
    needed = None if needed is None else list(needed)
    problem = reuse_problem(output_root, settings, layout, input_root, needed)
    if problem is None:
        return json.loads((output_root / "summary.json").read_text(encoding="utf-8"))
    if output_root.is_dir() and any(output_root.iterdir()) and not (output_root / "summary.json").is_file():
        raise FileExistsError(f"{output_root} is not empty and has no summary.json (not an aligned folder written by "
                              f"tools.align_dataset); move it away or choose another folder")
    if output_root.exists():
        print(f"re-aligning {output_root}: {problem}", file=sys.stderr, flush=True)
    staging = output_root.with_name(output_root.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    results, seconds = align_folder(input_root, staging, settings, layout, workers, progress)
    summary = write_reports(staging, results, settings, layout, seconds, input_root)
    if output_root.exists():
        shutil.rmtree(output_root)
    staging.rename(output_root)
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
    print(json.dumps({k: v for k, v in summary.items() if k not in ("files", "inputs")}, indent=2))
    errors = [r for r in results if r.status == "error"]
    for r in errors:
        print(f"error: {r.source}: {r.reason}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
