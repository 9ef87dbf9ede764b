"""Occluded copy of a probe image folder (MegaFace-Mask's FaceScrub, the IJB ``-MASK`` probes) by our occlusion
module: ``occlude(image, landmarks, kind, (seed, index))`` per image, same relative paths under ``--out``.

    python -m test_protocol.megaface.build_masked --source megaface/facescrub_images \\
        --landmarks megaface/facescrub_landmarks.txt --out megaface/facescrub_masked [--kind mask] [--seed 0] \\
        [--list megaface/lists/facescrub_features_list.json]

``--landmarks``: our landmark file (relative path + 5 points per line, ``data_processor.landmarks``; e.g. written by
``tools.align_dataset``). ``--list``: take the images (and their order = the seed index) from a FaceScrub JSON list
instead of the landmark file's order. Relative paths are under ``$FACE_DATA_ROOT``.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import List, Optional, Sequence

from test_protocol.megaface.megaface import build_masked_facescrub, read_facescrub_list, resolve
from utils.cli import run_cli


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", required=True)
    parser.add_argument("--landmarks", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--kind", default="mask", help="occluder name (data_processor.occlusion.OCCLUDERS)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--list", help="facescrub_features_list.json: its paths, in its order")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    source, landmarks, out = (resolve(value, key) for key, value in
                              (("--source", args.source), ("--landmarks", args.landmarks), ("--out", args.out)))
    paths = read_facescrub_list(Path(resolve(args.list, "--list")))[0] if args.list else None
    count = build_masked_facescrub(source, landmarks, out, args.kind, args.seed, paths)
    print(f"{count} images occluded ({args.kind}, seed {args.seed}) → {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
