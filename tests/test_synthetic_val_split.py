"""The embedded val split: identities disjoint from train and test, deterministic, train/test bytes unchanged, and
the data_conf validation sets (SYNTH-VAL, -CROP, -BLOCK, -ART) built from it."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from data_processor.synthetic_faces import (VAL_STREAM_OFFSET, SyntheticFaceDataset, build_synthetic_faces)
from data_processor.synthetic_identity import identity_rng, sample_identity
from test_protocol.data_conf import load_data_conf, set_config

TINY = dict(num_train_identities=6, images_per_train_identity=3, num_test_identities=20, images_per_test_identity=3,
            pairs_per_fold=3, num_val_identities=20, images_per_val_identity=3, val_pairs_per_fold=3)
VAL_SETS = {"SYNTH-VAL": [], "SYNTH-VAL-CROP": ["partial"], "SYNTH-VAL-BLOCK": ["geometric"],
            "SYNTH-VAL-ART": ["user_art"]}


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("val_split") / "synthetic_faces"
    return root, build_synthetic_faces(root, seed=0, **TINY)


def digests(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.png"))}


def test_val_identities_are_disjoint_from_train_and_test(tiny_set):
    root, manifest = tiny_set
    assert manifest["counts"]["val_identities"] == 20 and manifest["counts"]["val_images"] == 60
    val_names = {line.split("/")[0] for line in (root / "val" / "val_list.txt").read_text().split()[::2]}
    test_names = {p.name for p in (root / "test" / "images").iterdir()}
    train_names = {p.name for p in (root / "train" / "images").iterdir()}
    assert len(val_names) == 20 and not val_names & (test_names | train_names)
    # different people, not only different names: identity parameters and pixels never coincide
    val_ids = [sample_identity(identity_rng(0, "test", VAL_STREAM_OFFSET + i)) for i in range(20)]
    others = ([sample_identity(identity_rng(0, "test", i)) for i in range(20)]
              + [sample_identity(identity_rng(0, "train", i)) for i in range(6)])
    assert not any(repr(v) == repr(o) for v in val_ids for o in others)
    val_pixels = set(digests(root / "val" / "images").values())
    assert not val_pixels & set(digests(root / "test" / "images").values())
    assert not val_pixels & set(digests(root / "train" / "images").values())
    # LFW View-2 pairs over val identities only, each fold's identities its own
    lines = (root / "val" / "pairs.txt").read_text().splitlines()
    assert lines[0] == "10\t3" and len(lines) == 1 + 10 * 6
    folds = [set() for _ in range(10)]
    for k, line in enumerate(lines[1:]):
        fields = line.split("\t")
        folds[k // 6].update(f for f in fields if f.startswith("val_"))
    assert all(a.isdisjoint(b) for i, a in enumerate(folds) for b in folds[i + 1:])


def test_val_split_is_deterministic_and_leaves_train_and_test_bytes_alone(tiny_set, tmp_path):
    root, manifest = tiny_set
    again = build_synthetic_faces(tmp_path / "again", seed=0, workers=2, **TINY)
    assert again["sha256"] == manifest["sha256"] and again["generator_version"] == 2
    for name in ("val/pairs.txt", "val/landmarks.txt", "val/val_list.txt"):
        assert (root / name).read_bytes() == (tmp_path / "again" / name).read_bytes()
    assert digests(root / "val") == digests(tmp_path / "again" / "val")
    without = build_synthetic_faces(tmp_path / "without", seed=0, **dict(TINY, num_val_identities=0))
    assert not (tmp_path / "without" / "val").exists() and without["counts"]["val_images"] == 0
    for split in ("train", "test"):
        assert digests(root / split) == digests(tmp_path / "without" / split)
    assert (root / "test" / "pairs.txt").read_bytes() == (tmp_path / "without" / "test" / "pairs.txt").read_bytes()
    with pytest.raises(ValueError, match="num_val_identities"):
        build_synthetic_faces(tmp_path / "bad", **dict(TINY, num_val_identities=5))


def test_synthetic_dataset_val_split(tiny_set):
    root, manifest = tiny_set
    dataset = SyntheticFaceDataset(root=str(root), split="val", seed=0, **TINY)
    assert len(dataset) == 60 and dataset.pairs_file == root / "val" / "pairs.txt"
    assert dataset.manifest["sha256"] == manifest["sha256"]


def test_data_conf_val_sets_build_deterministically(tiny_set, tmp_path, monkeypatch):
    root, _ = tiny_set
    data_root = tmp_path / "data"
    data_root.mkdir()
    (data_root / "synthetic_faces").symlink_to(root, target_is_directory=True)
    monkeypatch.setenv("FACE_DATA_ROOT", str(data_root))
    entries = {entry["name"]: entry for entry in load_data_conf(None, list(VAL_SETS))}
    assert all(entry["split"] == "val" for entry in entries.values())
    assert all("split" not in entry for entry in load_data_conf(None, ["SYNTH", "SYNTH-MASK"]))
    first = {}
    for name, families in VAL_SETS.items():
        config = set_config(name)
        assert Path(config["pairs_file"]).is_file() and config["split"] == "val"
        folder = Path(config["pairs_file"]).parent
        if families:
            manifest = json.loads((folder / "manifest.json").read_text())
            assert (folder / "hidden_fraction.txt").is_file() and "hidden_fraction.txt" in manifest["files"]
            from data_processor.occlusion.families import families_of

            assert families_of(manifest["kinds"]) == families
            lines = (folder / "hidden_fraction.txt").read_text().splitlines()
            fractions = [float(line.split()[1]) for line in lines]
            assert len(fractions) == manifest["counts"]["occluded_images"] > 0
            assert all(0.0 < f <= 1.0 for f in fractions)
            first[name] = manifest["output_sha256"]
    for name in first:  # a rebuild from scratch gives the same bytes
        folder = Path(set_config(name)["pairs_file"]).parent
        (folder / "hidden_fraction.txt").unlink()   # an older build without it is rebuilt on use
        assert Path(set_config(name)["pairs_file"]).is_file()
        assert json.loads((folder / "manifest.json").read_text())["output_sha256"] == first[name]
