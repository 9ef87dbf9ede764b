"""tools/align_dataset.py: crops, landmark file in crop coordinates, no-face list and LFW layout."""
from __future__ import annotations

import json

import numpy as np
import pytest

from data_processor.image_io import read_image, write_image
from data_processor.landmarks import ARCFACE_TEMPLATE_112, read_landmark_file
from tools.align_dataset import main, output_path


def test_lfw_layout_mapping():
    from pathlib import Path

    assert output_path(Path("Abel_Pacheco_0004.jpg"), "lfw") == Path("Abel_Pacheco/Abel_Pacheco_0004.jpg")
    assert output_path(Path("a/b.png"), "mirror") == Path("a/b.png")
    with pytest.raises(ValueError, match="NAME_####"):
        output_path(Path("astronaut.jpg"), "lfw")


@pytest.mark.parametrize("policy", ["center_crop", "skip"])
def test_align_folder_with_a_face_and_a_blank(shared, tmp_path, capsys, policy):
    from face_sdk.demo import demo_image

    shared("weights/detection/facexzoo_face_detection_retina_mnet025.pkl")
    raw, out = tmp_path / "raw", tmp_path / "aligned"
    write_image(raw / "Eileen_Collins_0001.png", demo_image("astronaut"))
    write_image(raw / "Blank_Wall_0001.png", np.full((150, 150, 3), 128, dtype=np.uint8))
    status = main(["--input", str(raw), "--output", str(out), "--layout", "lfw", "--no-face", policy, "--quiet"])
    assert status == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 2 and summary["faces"] == 1 and summary["no_face"] == 1
    crop = read_image(out / "Eileen_Collins" / "Eileen_Collins_0001.png")
    assert crop.shape == (112, 112, 3)
    landmarks = read_landmark_file(out / "landmarks.txt")
    # detected landmarks, expressed in the aligned crop: near the template they were fitted to (a smiling face)
    residual = np.linalg.norm(landmarks["Eileen_Collins/Eileen_Collins_0001.png"] - ARCFACE_TEMPLATE_112, axis=1)
    assert residual.max() < 10.0 and residual.mean() < 6.0
    no_face = (out / "no_face.txt").read_text().splitlines()
    assert len(no_face) == 1 and no_face[0].startswith("Blank_Wall_0001.png\tno face")
    blank_crop = out / "Blank_Wall" / "Blank_Wall_0001.png"
    if policy == "center_crop":
        assert read_image(blank_crop).shape == (112, 112, 3) and "Blank_Wall/Blank_Wall_0001.png" in landmarks
    else:
        assert not blank_crop.exists() and "Blank_Wall/Blank_Wall_0001.png" not in landmarks
    assert "Blank_Wall_0001.png" not in (out / "source_landmarks.txt").read_text()
