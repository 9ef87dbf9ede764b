"""Occluded / cropped copy of CALFW (default: CALFW-SUNGLASSES, GFRO's ``CALFW_LFW`` set).

Default pairs format: GFRO's LFW-format conversion (``Name/Name_%04d.jpg``, e.g. ``gfro_CALFW_pairs.txt``); the
official two-line ``pairs_CALFW.txt`` works with ``--pairs-format calfw``. Example::

    python -m test_protocol.lfw.crop_calfw_random --source data_cache/calfw_aligned \\
        --pairs ../shared/data/protocols/gfro_CALFW_pairs.txt --out data_cache/calfw_occluded/sunglasses
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from test_protocol.lfw.occluded_set_builder import crop_cli
from utils.cli import run_cli


def main(argv: Optional[Sequence[str]] = None) -> Path:
    return crop_cli(argv, __doc__, occlusion="sunglasses", pairs_format="lfw", image_ext=".jpg")


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
