"""Cropped / occluded copy of CPLFW (default: CPLFW-CROP, a random landmark-guided partial view per image).

Default pairs format: GFRO's LFW-format conversion (``Name/Name_%04d.jpg``, e.g. ``gfro_CPLFW_pairs.txt``); the
official two-line ``pairs_CPLFW.txt`` works with ``--pairs-format cplfw``. Example::

    python -m test_protocol.lfw.crop_cplfw_random --source data_cache/cplfw_aligned \\
        --pairs ../shared/data/protocols/gfro_CPLFW_pairs.txt --out data_cache/cplfw_occluded/crop
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from test_protocol.lfw.occluded_set_builder import crop_cli
from utils.cli import run_cli


def main(argv: Optional[Sequence[str]] = None) -> Path:
    return crop_cli(argv, __doc__, occlusion="crop", pairs_format="lfw", image_ext=".jpg")


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
