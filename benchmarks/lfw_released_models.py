"""Fidelity on real data: the three released MobileFaceNets on real LFW (all 6,000 pairs), both protocol variants.

    python -m benchmarks.lfw_released_models --shared ../shared --json out.json [--speed]

1. aligns ``<shared>/data/lfw/images`` with the face_sdk aligner (``tools.align_dataset``: RetinaFace 5 points →
   ArcFace 112×112) into ``$FACE_DATA_ROOT/lfw_aligned`` once (reused while its ``summary.json`` still matches: same
   settings, input images, detector weights, aligning code, and every crop's checksum);
2. loads each released recogniser through ``face_sdk.released.load_released_recognizer`` (its own preprocessing;
   the 112×96 SphereFace model gets the central 96 columns of the ArcFace crop, the exact same geometry);
3. extracts every image once with its flipped view and scores the official pairs with ``PairVerification`` in the
   ``facexzoo`` and ``insightface`` variants (and insightface with ``flip=norm_weighted``, the raw-output sum of
   insightface's own code); prints one table (plus the published and an independent figure).
``--speed`` also times extraction + 10-fold for the 12,000 pair-order images of the full pairs file (as a ``.bin``
holds them) with the first model, no flip. ``--pairs N`` scores only the first N/20 positives and N/20 negatives of
each fold (CI-sized runs; ``--pairs 60 --speed`` is a quick accuracy check plus the full timing).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from data_processor.image_io import read_image
from face_sdk.aligner import sphereface_from_arcface
from face_sdk.released import RELEASED_RECOGNIZERS, load_released_recognizer
from test_protocol import PAIRS_PARSERS, PROTOCOLS
from test_protocol.data_conf import data_roots
from test_protocol.evaluate import format_table
from test_protocol.extract import extract_views
from test_protocol.verification_metrics import kfold_facexzoo, kfold_insightface
from utils.checkpoint import atomic_write_text
from utils.cli import run_cli

MODELS = ("foamliu_mobilefacenet_ms1m", "xiaoccer_mobilefacenet_casia", "bubbliiiing_mobilefacenet_casia")
PUBLISHED = {"foamliu_mobilefacenet_ms1m": 99.48, "xiaoccer_mobilefacenet_casia": 99.30,
             "bubbliiiing_mobilefacenet_casia": 98.78}
INDEPENDENT_DLIB = {"foamliu_mobilefacenet_ms1m": "99.10 ± 0.43", "xiaoccer_mobilefacenet_casia": "98.73 ± 0.58",
                    "bubbliiiing_mobilefacenet_casia": "98.17 ± 0.61"}  # ../shared/DATA.md
FIDELITY_BAR = ("foamliu_mobilefacenet_ms1m", 99.0)
# the two variants with their default flips, plus insightface with the raw-output sum its verification.py computes
VARIANT_FLIPS = (("facexzoo", None), ("insightface", None), ("insightface", "norm_weighted"))


class SpherefaceCrops(Dataset):
    """ArcFace 112×112 crops read from disk, cut to the 112×96 SphereFace crop."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray:
        return np.ascontiguousarray(sphereface_from_arcface(read_image(self.paths[index])))


def ensure_aligned_lfw(images: Path, out: Path, workers: int, pairs_files: Sequence[Path] = ()) -> Dict[str, Any]:
    """Align LFW with the face_sdk aligner into ``out`` unless a verified build is there (same settings, input
    images, detector weights and aligning code; every crop checked against ``summary.json``) holding every image of
    ``pairs_files`` (none given: made from exactly the images in ``images``); returns the summary."""
    from face_sdk.released import DEFAULT_DETECTOR
    from tools.align_dataset import AlignSettings, ensure_aligned

    settings = AlignSettings("arcface_112x112", DEFAULT_DETECTOR, 0.6, 320, "center_crop", 0.75)
    needed = sorted({name for path in pairs_files for name in PAIRS_PARSERS.get("lfw")(path).images}) \
        if pairs_files else None
    return ensure_aligned(images, out, settings, "lfw", workers, needed=needed)


def subset_pairs_file(pairs_file: Path, count: int, out: Path) -> Path:
    """The first ``count/20`` positive and negative lines of each of the 10 folds, with a matching header."""
    lines = pairs_file.read_text(encoding="utf-8").splitlines()
    folds, per_fold = (int(v) for v in lines[0].split())
    keep = count // (2 * folds)
    if keep < 1 or keep > per_fold:
        raise ValueError(f"--pairs must be between {2 * folds} and {2 * folds * per_fold}, got {count}")
    body = lines[1:]
    chosen = []
    for fold in range(folds):
        start = fold * 2 * per_fold
        chosen += body[start:start + keep] + body[start + per_fold:start + per_fold + keep]
    out.write_text("\n".join([f"{folds}\t{keep}"] + chosen) + "\n", encoding="utf-8")
    return out


def evaluate_released(name: str, aligned: Path, pairs_file: Path, weights_dir: Path, device: str,
                      batch_size: int) -> List[Dict[str, Any]]:
    """Rows for ``VARIANT_FLIPS`` for one released model, from one extraction (plain + flipped views)."""
    model, meta = load_released_recognizer(name, weights_dir)
    protocols = [PROTOCOLS.build({"type": "PairVerification", "name": "LFW", "root": str(aligned),
                                  "pairs_file": str(pairs_file), "variant": variant, "flip": flip})
                 for variant, flip in VARIANT_FLIPS]
    paths = protocols[0].image_paths()
    images = SpherefaceCrops(paths) if meta.template == "sphereface_112x96" else paths
    start = time.perf_counter()
    views = extract_views(model, images, meta.preprocess, device, batch_size, with_flip=True, desc=name)
    extract_seconds = time.perf_counter() - start
    rows = []
    for protocol in protocols:
        protocol.process(range(len(views)), views)
        start = time.perf_counter()
        row = protocol.compute(checkpoint=str(weights_dir / RELEASED_RECOGNIZERS[name].file))
        rows.append({**row, "model": name, "published": PUBLISHED[name], "independent_dlib": INDEPENDENT_DLIB[name],
                     "images": len(paths), "extract_seconds_with_flip": round(extract_seconds, 1),
                     "kfold_seconds": round(time.perf_counter() - start, 2)})
    return rows


def time_pair_order_extraction(name: str, aligned: Path, pairs_file: Path, weights_dir: Path, device: str,
                               batch_size: int) -> Dict[str, Any]:
    """Extraction (no flip) of the 2·N pair-order images, as a ``.bin`` holds them, plus 10-fold scoring."""
    model, meta = load_released_recognizer(name, weights_dir)
    pairs = PROTOCOLS.build({"type": "PairVerification", "name": "LFW", "root": str(aligned),
                             "pairs_file": str(pairs_file)})
    unique = pairs.image_paths()
    paths = [unique[i] for i in np.stack([pairs.pairs.first, pairs.pairs.second], axis=1).reshape(-1)]
    images = SpherefaceCrops(paths) if meta.template == "sphereface_112x96" else paths
    start = time.perf_counter()
    embeddings = F.normalize(extract_views(model, images, meta.preprocess, device, batch_size,
                                           desc=f"speed {name}").plain, dim=1)
    extract_seconds = time.perf_counter() - start
    cosine = (embeddings[0::2] * embeddings[1::2]).sum(dim=1).double().numpy()
    timings = {"model": name, "images": len(paths), "extract_seconds": round(extract_seconds, 1),
               "images_per_second": round(len(paths) / extract_seconds, 1)}
    for variant, kfold, scores in (("facexzoo", kfold_facexzoo, cosine),
                                   ("insightface", kfold_insightface, 2.0 - 2.0 * cosine)):
        start = time.perf_counter()
        accuracy, _ = kfold(scores, pairs.pairs.issame, pairs.num_folds)
        timings[f"kfold_seconds_{variant}"] = round(time.perf_counter() - start, 3)
        timings[f"accuracy_no_flip_{variant}"] = round(100.0 * float(accuracy.mean()), 2)
    timings["total_seconds_facexzoo"] = round(extract_seconds + timings["kfold_seconds_facexzoo"], 1)
    return timings


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPU threads, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lfw_released_models",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared"), help="the shared data folder")
    parser.add_argument("--aligned", type=Path, help="aligned LFW folder (default: $FACE_DATA_ROOT/lfw_aligned)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated released model names")
    parser.add_argument("--pairs", type=int, default=6000, help="pairs to score (default: all 6,000)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2, help="alignment processes")
    parser.add_argument("--speed", action="store_true", help="also time the 12,000 pair-order images (first model)")
    parser.add_argument("--json", type=Path, help="write rows, timings and settings here")
    args = parser.parse_args(argv)

    lfw = args.shared / "data" / "lfw"
    weights_dir = args.shared / "weights"
    aligned = args.aligned or data_roots()["FACE_DATA_ROOT"] / "lfw_aligned"
    with tempfile.TemporaryDirectory() as tmp:
        pairs_file = lfw / "pairs.txt"
        if args.pairs != 6000:
            pairs_file = subset_pairs_file(pairs_file, args.pairs, Path(tmp) / "pairs.txt")
        start = time.perf_counter()
        alignment = ensure_aligned_lfw(lfw / "images", aligned, args.workers,
                                       [pairs_file, lfw / "pairs.txt"] if args.speed else [pairs_file])
        align_seconds = time.perf_counter() - start
        print(f"aligned LFW: {aligned} ({alignment['faces']} faces detected, {alignment['no_face']} centre-crop "
              f"fallbacks of {alignment['images']} images)")
        rows = []
        for name in args.models.split(","):
            rows += evaluate_released(name, aligned, pairs_file, weights_dir, args.device, args.batch_size)
        speed = (time_pair_order_extraction(args.models.split(",")[0], aligned, lfw / "pairs.txt", weights_dir,
                                            args.device, args.batch_size) if args.speed else None)
    print(format_table([{**row, "set": f"LFW {row['model']}"} for row in rows]))
    print(f"\n{'model':<34} {'variant':<12} {'flip':<14} {'accuracy':<22} published  independent (dlib)")
    for row in rows:
        accuracy = f"{row['accuracy']:.2f} ± {row['spread']:.2f} ({row['spread_kind']})"
        print(f"{row['model']:<34} {row['variant']:<12} {row['flip']:<14} {accuracy:<22} {row['published']:<10.2f} "
              f"{row['independent_dlib']}")
    if speed:
        print(f"\nspeed ({speed['model']}, {speed['images']} pair-order images, no flip): extraction "
              f"{speed['extract_seconds']} s ({speed['images_per_second']} img/s) + 10-fold "
              f"{speed['kfold_seconds_facexzoo']} s (facexzoo) / {speed['kfold_seconds_insightface']} s (insightface)")
    bar_model, bar = FIDELITY_BAR
    bar_rows = [row["accuracy"] for row in rows if row["model"] == bar_model]
    best = max(bar_rows) if bar_rows and args.pairs == 6000 else None
    if best is not None:
        print(f"\nfidelity bar: {bar_model} >= {bar:.1f} %: {'met' if best >= bar else 'NOT met'} ({best:.2f} %)")
    if args.json:
        arguments = sys.argv[1:] if argv is None else list(argv)
        payload = {"command": "python -m benchmarks.lfw_released_models " + " ".join(arguments),
                   "machine": machine(), "load_average_1_5_15_at_end": os.getloadavg(),
                   "device": args.device, "alignment": alignment,
                   "align_seconds_this_run": round(align_seconds, 1), "rows": rows, "speed": speed}
        atomic_write_text(args.json, json.dumps(payload, indent=2) + "\n")
    return 0 if best is None or best >= bar else 1


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
