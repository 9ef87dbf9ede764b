"""Speed of the face SDK on this CPU: detection, alignment and embedding throughput on real LFW images.

    python -m benchmarks.face_sdk_speed [--images ../shared/data/lfw/images] [--count 200] [--threads 2]

Prints images/s for: detection alone (batch 1 and batched same-size images), alignment alone, detection +
alignment together, and embedding (batched) for each released recogniser. Each figure is given two ways: wall-clock
images/s, and images per *CPU-second of this process* (``time.process_time``), which other jobs sharing the machine
do not affect (it is the rate of one core when ``--threads 1``). The load average is printed too.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch

from data_processor.image_io import read_image
from face_sdk.aligner import align_face
from face_sdk.detector import FaceDetector, pick_central_face
from face_sdk.released import DEFAULT_DETECTOR, RELEASED_DETECTORS, RELEASED_RECOGNIZERS, default_weights_dir
from utils.cli import run_cli


class Rate:
    """Images per wall-clock second and per CPU-second of this process."""

    def __init__(self, count: int, run: Callable[[], None], repeats: int = 1) -> None:
        run()  # warm-up (allocations, prior caches)
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(repeats):
            run()
        self.wall = count * repeats / (time.perf_counter() - wall)
        self.cpu = count * repeats / max(time.process_time() - cpu, 1e-9)

    def __str__(self) -> str:
        return f"{self.wall:.1f} img/s wall, {self.cpu:.1f} img/CPU-s"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.face_sdk_speed", description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=Path, default=default_weights_dir().parent / "data" / "lfw" / "images")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--detectors", default=",".join(RELEASED_DETECTORS))
    parser.add_argument("--min-short-side", type=int, default=320)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    files = sorted(args.images.glob("*.jpg"))[: args.count]
    if not files:
        raise FileNotFoundError(f"no .jpg images in {args.images}")
    images: List[np.ndarray] = [read_image(f) for f in files]
    size = images[0].shape
    print(f"{len(images)} images {size[1]}x{size[0]} from {args.images}; torch threads {args.threads}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for name in args.detectors.split(","):
        detector = FaceDetector.from_weights(name, min_short_side=args.min_short_side)
        single = Rate(len(images), lambda: [detector.detect(im) for im in images])
        same_size = [im for im in images if im.shape == size]
        batched = Rate(len(same_size), lambda: [detector.detect_batch(same_size[i:i + 16])
                                                for i in range(0, len(same_size), 16)])
        faces = [pick_central_face(detector.detect(im), im.shape[:2]) for im in images]
        pairs = [(im, f) for im, f in zip(images, faces) if f is not None]
        align = Rate(len(pairs), lambda: [align_face(im, f.landmarks) for im, f in pairs], repeats=5)
        both = Rate(len(same_size), lambda: [
            [align_face(im, pick_central_face(found, im.shape[:2]).landmarks)
             for im, found in zip(same_size[i:i + 16], detector.detect_batch(same_size[i:i + 16])) if found]
            for i in range(0, len(same_size), 16)])
        tag = " (default)" if name == DEFAULT_DETECTOR else ""
        print(f"detector {name}{tag}, short side >= {args.min_short_side}, faces found {len(pairs)}/{len(images)}")
        print(f"  detect, batch 1:               {single}")
        print(f"  detect, batch 16:              {batched}")
        print(f"  align only:                    {align}")
        print(f"  detect (batch 16) + align:     {both}")
    crops = np.stack([align_face(im, f.landmarks).crop for im, f in pairs])
    from face_sdk.recognizer import load_recognizer

    for name in RELEASED_RECOGNIZERS:
        recognizer = load_recognizer(name, batch_size=64)
        print(f"recogniser {name}, embed batch 64: {Rate(len(crops), lambda: recognizer.embed(crops))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
