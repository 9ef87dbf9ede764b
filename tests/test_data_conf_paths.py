"""A user's data_conf.yaml may name data wherever it lives: absolute paths are used as they are, relative ones stay
under $FACE_DATA_ROOT, ${SHARED_ROOT} under $SHARED_ROOT."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from data_processor.image_io import write_image
from test_protocol import PROTOCOLS
from test_protocol.data_conf import load_data_conf, protocol_config
from utils.registry import ConfigError

FIXTURES = Path(__file__).parent / "fixtures" / "protocols"


def test_absolute_paths_are_accepted_relative_ones_stay_under_face_data_root(tmp_path, monkeypatch):
    elsewhere = tmp_path / "my_disk" / "lfw_copy"  # outside $FACE_DATA_ROOT and $SHARED_ROOT
    for name in ("Alice", "Bob", "Carol"):
        for i in (1, 2):
            write_image(elsewhere / "images" / name / f"{name}_{i:04d}.png", np.zeros((8, 8, 3), np.uint8))
    (elsewhere / "pairs.txt").write_bytes((FIXTURES / "lfw_pairs_6.txt").read_bytes())
    conf = tmp_path / "data_conf.yaml"
    conf.write_text(yaml.safe_dump({"sets": {
        "MINE": {"root": str(elsewhere / "images"), "pairs_file": str(elsewhere / "pairs.txt"), "image_ext": ".png"},
        "HOME": {"root": "~/faces/images", "pairs_file": "~/faces/pairs.txt"},
        "CACHED": {"root": "lfw_aligned", "pairs_file": "${SHARED_ROOT}/data/lfw/pairs.txt"},
    }}, sort_keys=False))
    monkeypatch.setenv("FACE_DATA_ROOT", str(tmp_path / "data_cache"))
    monkeypatch.setenv("SHARED_ROOT", str(tmp_path / "shared"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    mine, home, cached = load_data_conf(conf)
    assert mine["root"] == str(elsewhere / "images") and mine["pairs_file"] == str(elsewhere / "pairs.txt")
    assert home["root"] == str(tmp_path / "home" / "faces" / "images")
    assert cached["root"] == str(tmp_path / "data_cache" / "lfw_aligned")
    assert cached["pairs_file"] == str(tmp_path / "shared" / "data" / "lfw" / "pairs.txt")

    protocol = PROTOCOLS.build({"type": "PairVerification", **protocol_config(mine)})
    paths = protocol.image_paths()
    assert len(paths) == 6 and all(Path(p).is_file() and Path(p).is_relative_to(elsewhere) for p in paths)


def test_other_dollar_forms_are_still_errors(tmp_path):
    conf = tmp_path / "data_conf.yaml"
    conf.write_text(yaml.safe_dump({"sets": {"X": {"root": "$HOME/faces", "pairs_file": "p.txt"}}}))
    with pytest.raises(ConfigError, match=r"sets\.X\.root: a path is absolute, relative to \$FACE_DATA_ROOT"):
        load_data_conf(conf)
