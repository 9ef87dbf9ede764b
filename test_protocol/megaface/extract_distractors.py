"""Embed a MegaFace distractor list into an on-disk float16 store (``features.npy`` + ``manifest.json``), a block
of images at a time, so 1M distractors never sit in memory; ``MegaFaceProtocol(distractor_features=OUT)`` then
reads it (embed the 1M list once: the 10k/100k lists are looked up in it by name).

    python -m test_protocol.megaface.extract_distractors --export work_dirs/<run>/export \\
        --list megaface/lists/megaface_features_list.json_1000000_1 --root megaface/megaface_images \\
        --out megaface/features/<run>_1M [--block 10000] [--batch-size 256] [--device cuda]

Relative paths are under ``$FACE_DATA_ROOT`` as in data_conf.yaml. Prints seconds and peak memory.
"""
from __future__ import annotations

import argparse
import itertools
import logging
import time
from pathlib import Path
from typing import List, Optional, Sequence

import torch

from test_protocol.extract import extract_views
from test_protocol.megaface.feature_store import normalise_rows, peak_memory_mib, write_store
from test_protocol.megaface.megaface import read_distractor_list, resolve
from test_protocol.model_loading import load_for_evaluation
from test_protocol.protocol_base import check_images_exist
from utils.cli import run_cli
from utils.progress import progress

logger = logging.getLogger("extract_distractors")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint")
    source.add_argument("--export")
    source.add_argument("--onnx")
    parser.add_argument("--work-dirs", default="work_dirs")
    parser.add_argument("--list", required=True, help="megaface_features_list.json_<N>_1")
    parser.add_argument("--root", required=True, help="MegaFace image folder the list's paths are under")
    parser.add_argument("--out", required=True, help="store folder to write")
    parser.add_argument("--block", type=int, default=10000, help="images embedded per block (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    if args.block < 1:
        raise ValueError("--block must be ≥ 1")
    list_file, root, out = (Path(resolve(value, key)) for key, value in
                            (("--list", args.list), ("--root", args.root), ("--out", args.out)))
    names = read_distractor_list(list_file)
    check_images_exist("MegaFace distractors", root, names, list_file.name)
    loaded = load_for_evaluation(args.checkpoint, args.export, args.work_dirs, args.onnx)
    begin = time.monotonic()

    def blocks():
        for start in progress(range(0, len(names), args.block), desc="distractor blocks", unit="block"):
            paths = [str(root / name) for name in names[start:start + args.block]]
            views = extract_views(loaded.model, paths, loaded.spec, args.device, args.batch_size,
                                  num_workers=args.num_workers, progress=False)
            yield normalise_rows(views.plain.float().cpu().numpy())

    stream = blocks()
    first = next(stream)  # the embedding size comes from the first block
    write_store(out, names, itertools.chain([first], stream), first.shape[1],
                extra={"model": loaded.source, "list": str(list_file)})
    print(f"{len(names)} distractors → {out} in {time.monotonic() - begin:.1f} s, "
          f"peak memory {peak_memory_mib():.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
