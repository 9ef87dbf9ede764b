"""The weights catalogue: ``python -m face_sdk.weights list|verify`` and ``face_sdk.cli detect`` without a photo."""
from __future__ import annotations

import json

import pytest

from face_sdk import cli, weights
from face_sdk.catalog import CATALOG, find_entry, verify
from utils.provenance import sha256_file
from face_sdk.released import RELEASED_DETECTORS, RELEASED_RECOGNIZERS


def test_catalogue_covers_every_released_file():
    files = {entry.file for entry in CATALOG}
    assert {r.file for r in RELEASED_RECOGNIZERS.values()} <= files
    assert {d.file for d in RELEASED_DETECTORS.values()} <= files
    assert any(entry.kind == "teacher" and "IResNet100" in entry.arch for entry in CATALOG)
    for entry in CATALOG:
        assert entry.sha256 is None or len(entry.sha256) == 64
        assert entry.convert.startswith("python -m face_sdk.weights verify")
        assert entry.input_contract and entry.training_data and entry.published and entry.obtain


def test_list_prints_the_catalogue(capsys):
    assert weights.main(["list"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in rows] == [entry.name for entry in CATALOG]


def test_a_wrong_file_under_a_known_name_fails_the_checksum(tmp_path, capsys):
    fake = tmp_path / "foamliu_mobilefacenet_ms1m.pt"
    fake.write_bytes(b"not the release")
    assert find_entry(fake, sha256_file(fake)).name == "foamliu_mobilefacenet_ms1m"
    assert weights.main(["verify", str(fake)]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["sha256_ok"] is False and result["ok"] is False and "checksum" in result["error"]


def test_unknown_and_missing_files_are_errors(tmp_path):
    other = tmp_path / "mine.pth"
    other.write_bytes(b"x")
    with pytest.raises(ValueError, match="not in the catalogue.*--weights PATH --arch"):
        verify(other)
    with pytest.raises(FileNotFoundError):
        verify(tmp_path / "absent.pth")


@pytest.mark.shared
@pytest.mark.parametrize("name", sorted(RELEASED_RECOGNIZERS))
def test_released_recognisers_verify_on_real_pairs(shared, name):
    shared("data/protocols/insightface_small_lfw_10pairs.bin")
    path = shared("weights/" + RELEASED_RECOGNIZERS[name].file)
    result = verify(path)
    assert result["sha256_ok"] is True and result["name"] == name and result["ok"] is True, result
    assert result["check"]["num_pairs"] == 20 and result["check"]["accuracy"] >= 0.9
    assert result["check"]["mean_cosine_same"] > result["check"]["mean_cosine_different"] + 0.3


@pytest.mark.shared
@pytest.mark.parametrize("name", sorted(RELEASED_DETECTORS))
def test_released_detectors_verify_on_the_demo_photo(shared, name):
    result = verify(shared("weights/" + RELEASED_DETECTORS[name].file))
    assert result["sha256_ok"] is True and result["ok"] is True and result["check"]["faces"] == 1, result


@pytest.mark.shared
def test_detect_without_an_image_uses_the_demo_photo(shared, capsys):
    shared("weights/detection")
    assert cli.main(["detect"]) == 0
    output = json.loads(capsys.readouterr().out)
    assert [entry["image"] for entry in output] == ["demo:astronaut"] and len(output[0]["faces"]) == 1
