"""Occluded / cropped copy of LFW (LFW-MASK, LFW-SUNGLASSES, LFW-CROP, ...) from aligned images, landmarks and the
official pairs.txt. Same seed → byte-identical output. Example::

    python -m test_protocol.lfw.crop_lfw_random --source data_cache/lfw_aligned \\
        --pairs ../shared/data/lfw/pairs.txt --out data_cache/lfw_occluded/mask --occlusion mask --side both --seed 0

``--occlusion crop`` gives LFW-CROP (a random landmark-guided partial view per image); see
``test_protocol/lfw/occluded_set_builder.py`` for the output layout and the ``--side one`` policy.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from test_protocol.lfw.occluded_set_builder import crop_cli, ensure_synthetic_occluded
from utils.cli import run_cli

__all__ = ["ensure_synthetic_occluded", "main"]


def main(argv: Optional[Sequence[str]] = None) -> Path:
    return crop_cli(argv, __doc__, occlusion="mask", pairs_format="lfw", image_ext=".jpg")


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
