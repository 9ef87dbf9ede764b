"""Occlusion speed: samples per second per CPU core, per occlusion type and for the whole training sample.

    python -m benchmarks.occlusion_speed [--repeats 3] [--iterations 300] [--loader-workers 2] [--json out.json]

Single-process figures run with one OpenCV / torch thread (what one DataLoader worker gets) and count process CPU
time (samples per CPU-second = per core, unaffected by other jobs on the machine), best of ``--repeats``.
"training sample" = OcclusionTrainDataset.__getitem__ in the default mixed mode: JPEG decode + occlusion + flip +
tensors, i.e. the real per-worker cost. Faces: CelebA from ../shared when present, else synthetic faces written to
a temporary folder. The last table runs a DataLoader with ``--loader-workers`` workers to check the scaling.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

import cv2
import numpy as np
import torch

from data_processor.datasets import ImageFolderDataset
from data_processor.image_io import read_image, write_image
from data_processor.landmarks import ARCFACE_TEMPLATE_112
from data_processor.train_dataset import OCCLUSION_TYPES, OcclusionTrainDataset
from utils.cli import run_cli

REPO_ROOT = Path(__file__).resolve().parents[1]


def best_rate(function: Callable[[int], object], iterations: int, repeats: int) -> float:
    """Calls per CPU-second of ``function(i)`` (process CPU time, so other jobs on a shared machine do not count),
    best of ``repeats`` runs of ``iterations`` calls."""
    best = float("inf")
    for repeat in range(repeats):
        start = time.process_time()
        for i in range(iterations):
            function(repeat * iterations + i)
        best = min(best, time.process_time() - start)
    return iterations / max(best, 1e-9)


def face_folder(shared: Path, scratch: Path) -> Path:
    celeba = shared / "data" / "celeba_subset_112" / "images"
    if celeba.is_dir():
        return celeba
    from data_processor.synthetic_render import render_identity_image

    for identity in range(20):
        for k in range(10):
            image, _ = render_identity_image(0, "train", identity, k)
            write_image(scratch / f"{identity:03d}" / f"{k}.jpg", image)
    return scratch


def per_type_rates(image: np.ndarray, iterations: int, repeats: int) -> Dict[str, float]:
    from data_processor.occlusion import occlude
    from tools.occlusion_examples import demo_rgba_occluder

    from data_processor.occlusion.objects import DonorPool

    rgba = demo_rgba_occluder()
    donors = DonorPool([ARCFACE_TEMPLATE_112] * 2, ["donor_a", "donor_b"], images=[image[:, ::-1].copy(), image])
    extra = {"rgba": {"occluder": rgba}, "crowd": {"donors": donors, "identity": "target"}}
    rates = {}
    for kind in OCCLUSION_TYPES:
        params = extra.get(kind, {})
        rates[kind] = best_rate(lambda i: occlude(image, ARCFACE_TEMPLATE_112, kind, (0, i), **params),
                                iterations, repeats)
    return rates


def loader_rate(dataset: OcclusionTrainDataset, workers: int, batches: int, batch_size: int) -> float:
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                                         drop_last=True, persistent_workers=False)
    iterator = iter(loader)
    next(iterator)  # workers started and warm
    start = time.perf_counter()
    count = 0
    for _ in range(batches):
        count += len(next(iterator)["label"])
    return count / (time.perf_counter() - start)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", default=str(REPO_ROOT.parent / "shared"))
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--loader-workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--loader-batches", type=int, default=40)
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as scratch:
        folder = face_folder(Path(args.shared), Path(scratch))
        base = ImageFolderDataset(str(folder))
        image = read_image(base.root / base.items[0][0])
        rates = per_type_rates(image, args.iterations, args.repeats)
        dataset = OcclusionTrainDataset(base, mode="mixed", seed=0)
        sample_rate = best_rate(lambda i: dataset[i % len(dataset)], args.iterations, args.repeats)
        decode_rate = best_rate(lambda i: base[i % len(base)], args.iterations, args.repeats)
        parallel = loader_rate(dataset, args.loader_workers, args.loader_batches, 64)
    mixed = np.array([rates[name] for name in dataset.types])
    expected_occlusion = 1.0 / float(np.sum(dataset.probabilities / mixed))
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores visible",
        "faces": "CelebA 112x112 (../shared)" if "celeba" in str(folder) else "synthetic",
        "per_type_samples_per_s_per_core": {name: round(rate) for name, rate in rates.items()},
        "mixed_occlusion_only_per_core": round(expected_occlusion),
        "training_sample_per_core": round(sample_rate),
        "decode_only_per_core": round(decode_rate),
        "dataloader_workers": args.loader_workers,
        "dataloader_samples_per_s": round(parallel),
        "projected_16_cores": round(16 * sample_rate),
    }
    print("| type | samples/s/core |\n|---|---:|")
    for name, rate in rates.items():
        print(f"| {name} | {rate:,.0f} |")
    print(f"\nmixed mode, occlusion only (probability-weighted): {expected_occlusion:,.0f} samples/s/core")
    print(f"training sample (decode + occlusion + flip + tensors): {sample_rate:,.0f} samples/s/core "
          f"(decode only: {decode_rate:,.0f})")
    print(f"DataLoader, {args.loader_workers} workers: {parallel:,.0f} samples/s")
    print(f"projected 16 cores: {16 * sample_rate:,.0f} samples/s = {32 * sample_rate:,.0f} images/s of GFRO input "
          f"(clean + noisy)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
