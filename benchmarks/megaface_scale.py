"""MegaFace at scale on synthetic features: N random unit distractors in a float16 memory-mapped store, FaceScrub-like
probes with planted mates, the full CMC + TAR@FAR=1e-6 through ``test_protocol.megaface``; prints seconds and
peak memory (``resource.getrusage``).

    python -m benchmarks.megaface_scale --distractors 1000000 [--identities 250 --images 4 --dim 512]
        [--chunk 65536] [--device cpu|cuda] [--work /tmp/megaface_scale]

Planted data: identity ``a`` has a random centre ``c_a``; its images are ``normalise(c_a + noise · g)``; distractors
are independent random unit vectors, so (dim 512) genuine scores are ≈ 1/(1+noise²) and distractor scores ≈ N(0,
1/512): rank-1 is expected to be 100 % at the default noise.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import torch

from test_protocol.megaface.feature_store import open_store, peak_memory_mib, write_store
from test_protocol.megaface.megaface import evaluate_megaface
from utils.cli import run_cli


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--distractors", type=int, default=1000000)
    parser.add_argument("--identities", type=int, default=250)
    parser.add_argument("--images", type=int, default=4, help="images per probe identity")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--noise", type=float, default=1.0)
    parser.add_argument("--chunk", type=int, default=65536)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--work", default="/tmp/megaface_scale", help="where the distractor store is written")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the figures here")
    return parser.parse_args(argv)


def distractor_chunks(count: int, dim: int, chunk: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    for start in range(0, count, chunk):
        yield torch.randn(min(chunk, count - start), dim, generator=generator).numpy()


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.distractors < 1 or args.identities < 1 or args.images < 2:
        raise ValueError("--distractors and --identities must be ≥ 1, --images ≥ 2")
    begin = time.monotonic()
    names = [f"d/{i:07d}.jpg" for i in range(args.distractors)]
    store_dir = write_store(Path(args.work) / f"distractors_{args.distractors}_{args.dim}", names,
                            distractor_chunks(args.distractors, args.dim, args.chunk, args.seed), args.dim)
    write_seconds = time.monotonic() - begin
    store = open_store(store_dir)
    rng = np.random.default_rng(args.seed + 1)
    centres = rng.standard_normal((args.identities, args.dim)) / np.sqrt(args.dim)
    labels = np.repeat(np.arange(args.identities), args.images)
    probes = centres[labels] + args.noise * rng.standard_normal((labels.size, args.dim)) / np.sqrt(args.dim)
    start = time.monotonic()
    metrics = evaluate_megaface(probes, probes, labels, store.features, chunk=args.chunk, device=args.device)
    search_seconds = time.monotonic() - start
    figures = {
        "distractors": args.distractors, "probes": int(labels.size), "dim": args.dim, "device": args.device,
        "store_bytes": (store_dir / "features.npy").stat().st_size, "write_seconds": round(write_seconds, 2),
        "search_seconds": round(search_seconds, 2), "total_seconds": round(time.monotonic() - begin, 2),
        "peak_memory_mib": round(peak_memory_mib(), 1), "rank1": 100.0 * float(metrics["cmc"][0]),
        "rank10": 100.0 * float(metrics["cmc"][-1]),
        "tar@far=1e-6": None if metrics["tar"][1e-6] is None else 100.0 * metrics["tar"][1e-6],
        "trials": metrics["num_trials"],
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
