"""``python -m face_sdk.cli`` end to end, as a user runs it (subprocess, real weights and LFW images)."""
from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO_ROOT


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "face_sdk.cli", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300)


def test_verify_on_lfw_images(shared):
    images = shared("data/lfw/images")
    shared("weights/recognition/foamliu_mobilefacenet_ms1m.pt")
    shared("weights/detection/facexzoo_face_detection_retina_mnet025.pkl")
    same = _cli("verify", str(images / "Abel_Pacheco_0001.jpg"), str(images / "Abel_Pacheco_0004.jpg"))
    assert same.returncode == 0, same.stderr
    result = json.loads(same.stdout)
    assert result["same_person"] is True and result["cosine"] >= result["threshold"]
    assert "same person" in same.stderr and len(result["faces"]) == 2
    different = _cli("verify", str(images / "Abdel_Madi_Shabneh_0001.jpg"), str(images / "Dean_Barker_0001.jpg"),
                     "--threshold", "0.3")
    assert different.returncode == 0, different.stderr
    assert json.loads(different.stdout)["same_person"] is False and json.loads(different.stdout)["threshold"] == 0.3


def test_detect_demo_image_draws_png(shared, tmp_path):
    shared("weights/detection/facexzoo_face_detection_retina_mnet025.pkl")
    run = _cli("detect", "demo:astronaut", "--draw-dir", str(tmp_path))
    assert run.returncode == 0, run.stderr
    (entry,) = json.loads(run.stdout)
    assert entry["size"] == [512, 512] and len(entry["faces"]) == 1 and entry["faces"][0]["score"] > 0.9
    assert (tmp_path / "astronaut.detections.png").stat().st_size > 1000


def test_missing_image_is_a_clear_error(tmp_path):
    run = _cli("detect", str(tmp_path / "nope.jpg"))
    assert run.returncode == 2 and "image not found" in run.stderr and "nope.jpg" in run.stderr
