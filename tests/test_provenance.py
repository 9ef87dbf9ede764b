"""Figures that cannot go stale: cache keys follow the code, the weights and the device; a reused folder is checked
against its manifest (aligned LFW: summary.json; occluded sets: manifest.json) before it is used."""
from __future__ import annotations

import importlib
import json

import numpy as np
import pytest

from benchmarks.gfro_real_faces import cached_rows, untouched_record
from data_processor.image_io import write_image
from data_processor.landmarks import ARCFACE_TEMPLATE_112
from tests.test_crop_random import write_source
from test_protocol.lfw.occluded_set_builder import BuildConfig, ensure_synthetic_occluded, reuse_problem
from tools.align_dataset import AlignSettings, ImageResult, ensure_aligned, write_reports
from tools.align_dataset import reuse_problem as aligned_reuse_problem
from utils.provenance import (StaleFolderError, file_checksums, object_modules, provenance_record, record_digest,
                              source_digest, tree_digest, verify_folder)


def test_code_digest_follows_every_byte_of_the_modules(tmp_path, monkeypatch):
    package = tmp_path / "fakepkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "scoring.py").write_text("THRESHOLD = 0.5\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    one, whole = source_digest(["fakepkg.scoring"]), source_digest(["fakepkg.*"])
    assert one == source_digest(["fakepkg.scoring"]) and whole != one
    (package / "scoring.py").write_text("THRESHOLD = 0.6\n")
    assert source_digest(["fakepkg.scoring"]) != one and source_digest(["fakepkg.*"]) != whole
    (package / "extra.py").write_text("")  # a new module of the package changes the package digest
    changed = source_digest(["fakepkg.*"])
    (package / "extra.py").unlink()
    assert changed != source_digest(["fakepkg.*"])
    with pytest.raises(ValueError, match="not found"):
        source_digest(["fakepkg.no_such_module"])


def test_cache_key_follows_code_weights_and_device(tmp_path):
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"weights v1")
    modules = ["test_protocol.verification_metrics"]
    key = record_digest(provenance_record(modules, weights=weights, device="cpu", variant="facexzoo"))
    assert key == record_digest(provenance_record(modules, weights=weights, device="cpu", variant="facexzoo"))
    weights.write_bytes(b"weights v2")
    assert record_digest(provenance_record(modules, weights=weights, device="cpu", variant="facexzoo")) != key
    weights.write_bytes(b"weights v1")
    assert record_digest(provenance_record(modules, weights=weights, device="meta", variant="facexzoo")) != key
    assert record_digest(provenance_record(modules + ["test_protocol.verification"], weights=weights, device="cpu",
                                           variant="facexzoo")) != key


def test_untouched_rows_are_reused_only_for_the_same_record(tmp_path):
    from backbone import build_backbone

    model = build_backbone({"type": "MobileFaceNet", "feat_dim": 32, "width": 0.25})
    assert "backbone.mobilefacenet" in object_modules(model.modules())
    assert not any(name.startswith("torch") for name in object_modules(model.modules()))
    weights, pairs = tmp_path / "w.pt", tmp_path / "pairs.txt"
    weights.write_bytes(b"w")
    pairs.write_text("10 1\n")
    args = (pairs, {"files_sha256": "abc"}, {"LFW-MASK": {"output_sha256": "def"}}, "facexzoo", 64)
    record = untouched_record(model, weights, "cpu", *args)
    cache = tmp_path / f"untouched_{record_digest(record)}.json"
    rows = {"LFW": {"accuracy": 99.0}}
    cache.write_text(json.dumps({"provenance": record, "rows": rows}))
    assert cached_rows(cache, untouched_record(model, weights, "cpu", *args)) == rows
    weights.write_bytes(b"retrained")
    assert cached_rows(cache, untouched_record(model, weights, "cpu", *args)) is None
    cache.write_text(json.dumps(rows))  # a cache file of the old format (rows only) is never trusted
    assert cached_rows(cache, record) is None


def test_verify_folder_names_the_tampered_file(tmp_path):
    for name in ("a.txt", "sub/b.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    checksums = file_checksums(tmp_path)
    verify_folder(tmp_path, checksums)
    (tmp_path / "sub" / "b.txt").write_text("tampered")
    with pytest.raises(StaleFolderError, match=r"sub/b.txt: changed"):
        verify_folder(tmp_path, checksums)
    (tmp_path / "a.txt").unlink()
    with pytest.raises(StaleFolderError, match=r"a.txt: missing"):
        verify_folder(tmp_path, checksums)


def test_reused_occluded_set_is_verified_and_rebuilt(tmp_path):
    source = write_source(tmp_path / "synthetic_faces" / "test", ext=".png", with_images_dir=True)
    out_root = tmp_path / "synthetic_occluded"
    (mask,) = ensure_synthetic_occluded(source, out_root, kinds=("mask",))
    manifest = json.loads((mask / "manifest.json").read_text())
    assert manifest["output_sha256"] == tree_digest(mask, exclude=("manifest.json",))
    assert set(manifest["files"]) >= {"images/Ann/Ann_0001.png", "pairs.txt", "landmarks.txt"}
    config = BuildConfig(source=str(source), pairs=str(source / "pairs.txt"), occlusion="mask", image_ext=".png")
    assert reuse_problem(mask, config) is None
    image = mask / "images" / "Ann" / "Ann_0001.png"
    original = image.read_bytes()
    write_image(image, np.zeros((112, 112, 3), np.uint8))  # tampered after the build
    assert "images/Ann/Ann_0001.png: changed" in reuse_problem(mask, config)
    ensure_synthetic_occluded(source, out_root, kinds=("mask",))  # rebuilt, not reused
    assert image.read_bytes() == original and reuse_problem(mask, config) is None
    # the source it was built from changed: the build is stale too
    write_image(source / "images" / "Bob" / "Bob_0002.png", np.full((112, 112, 3), 7, np.uint8))
    assert "source images" in reuse_problem(mask, config)


def test_reused_aligned_folder_is_verified_against_its_summary(tmp_path):
    raw, aligned, detector = tmp_path / "raw", tmp_path / "aligned", tmp_path / "detector.pth"
    write_image(raw / "Ann_0001.jpg", np.full((150, 150, 3), 90, np.uint8))
    detector.write_bytes(b"detector weights")
    write_image(aligned / "Ann" / "Ann_0001.jpg", np.full((112, 112, 3), 90, np.uint8))
    settings = AlignSettings("arcface_112x112", str(detector), 0.6, 320, "center_crop", 0.75)
    result = ImageResult("Ann_0001.jpg", "Ann/Ann_0001.jpg", "face", ARCFACE_TEMPLATE_112, ARCFACE_TEMPLATE_112,
                         0.99, 1)
    summary = write_reports(aligned, [result], settings, "lfw", 1.0, raw)
    assert set(summary["files"]) == {"Ann/Ann_0001.jpg", "landmarks.txt", "source_landmarks.txt", "no_face.txt"}
    assert {"code_sha256", "detector_sha256", "input_sha256", "files_sha256"} <= set(summary)
    assert aligned_reuse_problem(aligned, settings, "lfw", raw) is None
    assert ensure_aligned(raw, aligned, settings, "lfw")["files_sha256"] == summary["files_sha256"]  # reused as is
    # more raw images than were aligned: reusable for pairs whose images it holds, not as "the whole input"
    write_image(raw / "Bob_0001.jpg", np.full((150, 150, 3), 60, np.uint8))
    assert "not aligned" in aligned_reuse_problem(aligned, settings, "lfw", raw)
    assert aligned_reuse_problem(aligned, settings, "lfw", raw, needed=["Ann/Ann_0001.jpg"]) is None
    assert "needed image(s) are not in it" in aligned_reuse_problem(aligned, settings, "lfw", raw,
                                                                    needed=["Bob/Bob_0001.jpg"])
    (raw / "Bob_0001.jpg").unlink()

    crop = aligned / "Ann" / "Ann_0001.jpg"
    original = crop.read_bytes()
    write_image(crop, np.zeros((112, 112, 3), np.uint8))
    assert "Ann/Ann_0001.jpg: changed" in aligned_reuse_problem(aligned, settings, "lfw", raw)
    crop.write_bytes(original)
    detector.write_bytes(b"other detector weights")
    assert "the detector weights" in aligned_reuse_problem(aligned, settings, "lfw", raw)
    detector.write_bytes(b"detector weights")
    write_image(raw / "Ann_0001.jpg", np.full((150, 150, 3), 91, np.uint8))
    assert "the input images" in aligned_reuse_problem(aligned, settings, "lfw", raw)
    other = AlignSettings("arcface_112x112", str(detector), 0.5, 320, "center_crop", 0.75)
    assert "score_threshold" in aligned_reuse_problem(aligned, other, "lfw", raw)

    foreign = tmp_path / "foreign"
    (foreign / "x.txt").parent.mkdir()
    (foreign / "x.txt").write_text("someone else's files")
    with pytest.raises(FileExistsError, match="no summary.json"):
        ensure_aligned(raw, foreign, settings, "lfw")
