"""Occluded / cropped test-set builders (test_protocol/lfw/crop_*_random.py): determinism, layout, side policies,
manifest, entry points and errors, on a tiny LFW-layout set written here."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from data_processor.image_io import read_image, write_image
from data_processor.landmarks import ARCFACE_TEMPLATE_112, read_landmark_file, write_landmark_file
from data_processor.occlusion import PARTIAL_VIEWS
from test_protocol.lfw import crop_calfw_random, crop_cplfw_random, crop_lfw_random
from test_protocol.lfw.occluded_set_builder import (BuildConfig, assign_occluded, build_occluded_set,
                                                    ensure_synthetic_occluded, tree_digest)

NAMES = ("Ann", "Bob", "Cid", "Dee", "Eve", "Fay")
# 2 folds x (2 same + 2 different); the pair graph is a forest, so "one side" can make every pair mixed
PAIRS = """2\t2
Ann\t1\t2
Bob\t1\t2
Ann\t1\tCid\t1
Bob\t2\tDee\t1
Cid\t1\t2
Dee\t1\t2
Eve\t1\tFay\t1
Eve\t2\tFay\t2
"""


def write_source(root: Path, ext: str = ".jpg", with_images_dir: bool = False) -> Path:
    """``root`` with NAME/NAME_000k<ext> noise faces (or under images/), landmarks.txt and pairs.txt."""
    images = root / "images" if with_images_dir else root
    rng = np.random.default_rng(0)
    landmarks = {}
    for name in NAMES:
        for k in (1, 2):
            relative = f"{name}/{name}_{k:04d}{ext}"
            write_image(images / relative, rng.integers(0, 256, (112, 112, 3), dtype=np.uint8))
            landmarks[relative] = ARCFACE_TEMPLATE_112 + rng.uniform(-2, 2, (5, 2)).astype(np.float32)
    write_landmark_file(root / "landmarks.txt", landmarks)
    (root / "pairs.txt").write_text(PAIRS, encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return write_source(tmp_path_factory.mktemp("lfw_aligned"))


def build(source: Path, out: Path, **overrides) -> Path:
    options = dict(source=str(source), pairs=str(source / "pairs.txt"), occlusion="mask", side="both", seed=0)
    options.update(overrides)
    workers = options.pop("workers", 1)
    return build_occluded_set(BuildConfig(**options), out, workers=workers)


def occluded_names(out: Path) -> dict:
    rows = (line.split() for line in (out / "occlusions.txt").read_text().splitlines())
    return {name: kind for name, kind in rows}


def test_same_seed_gives_byte_identical_output_and_another_seed_differs(source, tmp_path):
    first = build(source, tmp_path / "a", seed=3)
    second = build(source, tmp_path / "b", seed=3)
    other = build(source, tmp_path / "c", seed=4)
    assert tree_digest(first) == tree_digest(second)
    images = sorted(p.relative_to(first) for p in (first / "images").rglob("*.jpg"))
    assert len(images) == 12
    differing = sum((first / p).read_bytes() != (other / p).read_bytes() for p in images)
    assert differing >= 10


def test_layout_pairs_lists_landmarks_and_manifest(source, tmp_path):
    out = build(source, tmp_path / "mask", seed=1)
    assert (out / "pairs.txt").read_bytes() == (source / "pairs.txt").read_bytes()
    names = [f"{n}/{n}_{k:04d}.jpg" for n in NAMES for k in (1, 2)]
    assert (out / "image_list.txt").read_text().split() == sorted(names)
    landmarks = read_landmark_file(out / "landmarks.txt")
    source_landmarks = read_landmark_file(source / "landmarks.txt")
    assert set(landmarks) == set(names)
    assert all(np.allclose(landmarks[n], source_landmarks[n], atol=0.01) for n in names)
    assert set(occluded_names(out).values()) == {"mask"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["seed"] == 1 and manifest["config"]["occlusion"] == "mask"
    assert manifest["counts"] == {"pairs": 8, "images": 12, "occluded_images": 12,
                                  "pairs_by_occluded_sides": {"0": 0, "1": 0, "2": 8}, "kinds": {"mask": 12}}
    assert manifest["output_sha256"] == tree_digest(out, exclude=("manifest.json",))
    assert len(manifest["source"]["pairs_sha256"]) == 64 and len(manifest["source"]["images_sha256"]) == 64
    examples = read_image(out / "examples.png")
    assert examples.shape[0] > 112 * 4 and examples.shape[1] > 112 * 4
    for name in names:  # occluded: same size, different pixels, nose/mouth hidden under the mask colour
        original, occluded = read_image(source / name), read_image(out / "images" / name)
        assert occluded.shape == original.shape and not np.array_equal(original, occluded)


def test_side_one_occludes_exactly_one_image_of_every_pair(source, tmp_path):
    out = build(source, tmp_path / "one", side="one", occlusion="sunglasses")
    kinds = occluded_names(out)
    occluded = {name for name, kind in kinds.items() if kind != "none"}
    for name, kind in kinds.items():
        same_bytes = (out / "images" / name).read_bytes() == (source / name).read_bytes()
        assert same_bytes == (kind == "none"), name
    pairs = []
    for line in PAIRS.splitlines()[1:]:
        fields = line.split("\t")
        if len(fields) == 3:
            pairs.append((f"{fields[0]}/{fields[0]}_{int(fields[1]):04d}.jpg",
                          f"{fields[0]}/{fields[0]}_{int(fields[2]):04d}.jpg"))
        else:
            pairs.append((f"{fields[0]}/{fields[0]}_{int(fields[1]):04d}.jpg",
                          f"{fields[2]}/{fields[2]}_{int(fields[3]):04d}.jpg"))
    assert all((a in occluded) != (b in occluded) for a, b in pairs)
    assert sum(b in occluded for _, b in pairs) >= len(pairs) / 2  # the second image is preferred
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["pairs_by_occluded_sides"] == {"0": 0, "1": 8, "2": 0}


def test_side_none_is_a_byte_identical_copy(source, tmp_path):
    out = build(source, tmp_path / "none", side="none")
    for path in (source).rglob("*.jpg"):
        relative = path.relative_to(source)
        assert (out / "images" / relative).read_bytes() == path.read_bytes()
    assert set(occluded_names(out).values()) == {"none"}


def test_one_side_policy_on_an_odd_cycle():
    # triangle 0-1-2 plus a pendant 3: at most 3 of the 4 pairs can be mixed
    first, second = np.array([0, 1, 2, 2]), np.array([1, 2, 0, 3])
    occluded = assign_occluded(first, second, 4, "one")
    mixed = sum(occluded[a] != occluded[b] for a, b in zip(first, second))
    assert mixed == 3
    assert np.array_equal(occluded, assign_occluded(first, second, 4, "one"))
    with pytest.raises(ValueError, match="--side"):
        assign_occluded(first, second, 4, "left")


def test_crop_alias_uses_partial_views_with_the_fill(source, tmp_path):
    out = build(source, tmp_path / "crop", occlusion="crop", fill="zero")
    kinds = set(occluded_names(out).values())
    assert kinds <= set(PARTIAL_VIEWS) and len(kinds) >= 3
    image = read_image(out / "images" / "Ann/Ann_0001.jpg")
    assert (image.reshape(-1, 3).max(axis=1) < 12).mean() > 0.2  # black fill (JPEG-rounded)


def test_worker_count_does_not_change_the_output(source, tmp_path):
    single = build(source, tmp_path / "w1", occlusion="synthetic", seed=9)
    double = build(source, tmp_path / "w2", occlusion="synthetic", seed=9, workers=2)
    assert tree_digest(single) == tree_digest(double)


def test_entry_points_share_one_builder(source, tmp_path, capsys):
    common = ["--source", str(source), "--pairs", str(source / "pairs.txt"), "--seed", "0"]
    lfw = crop_lfw_random.main(common + ["--out", str(tmp_path / "lfw")])
    calfw = crop_calfw_random.main(common + ["--out", str(tmp_path / "calfw")])
    cplfw = crop_cplfw_random.main(common + ["--out", str(tmp_path / "cplfw"), "--side", "one"])
    assert "wrote" in capsys.readouterr().out
    assert set(occluded_names(lfw).values()) == {"mask"}
    assert set(occluded_names(calfw).values()) == {"sunglasses"}
    assert set(occluded_names(cplfw).values()) - {"none"} <= set(PARTIAL_VIEWS)
    params = crop_lfw_random.main(common + ["--out", str(tmp_path / "blocks"), "--occlusion", "block",
                                            "--params", '{"block": {"area_ratio": [0.3, 0.3]}}'])
    assert json.loads((params / "manifest.json").read_text())["config"]["params"] == {
        "block": {"area_ratio": [0.3, 0.3]}}
    with pytest.raises(FileExistsError, match="--overwrite"):
        crop_lfw_random.main(common + ["--out", str(tmp_path / "lfw")])
    digest = tree_digest(lfw)
    again = crop_lfw_random.main(common + ["--out", str(tmp_path / "lfw"), "--overwrite"])
    assert tree_digest(again) == digest


def test_declared_template_replaces_the_landmark_file(tmp_path):
    root = write_source(tmp_path / "src")
    (root / "landmarks.txt").unlink()
    with pytest.raises(FileNotFoundError, match="--template"):
        build(root, tmp_path / "out")
    out = build(root, tmp_path / "out", template="arcface_112x112")
    landmarks = read_landmark_file(out / "landmarks.txt")
    assert np.allclose(landmarks["Ann/Ann_0001.jpg"], ARCFACE_TEMPLATE_112, atol=0.01)
    assert json.loads((out / "manifest.json").read_text())["source"]["landmarks_sha256"] is None


def test_errors_name_the_file(tmp_path):
    root = write_source(tmp_path / "src")
    (root / "Eve" / "Eve_0002.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="pairs.txt: 1 image"):
        build(root, tmp_path / "out")
    root = write_source(tmp_path / "src2")
    lines = (root / "landmarks.txt").read_text().splitlines()
    (root / "landmarks.txt").write_text("\n".join(lines[1:]) + "\n")
    with pytest.raises(ValueError, match="landmarks.txt: no landmarks for 1 image"):
        build(root, tmp_path / "out")
    with pytest.raises(ValueError, match="unknown kind"):
        build(root, tmp_path / "out", occlusion="helmet")


def test_ensure_synthetic_occluded_builds_the_data_conf_layout(tmp_path):
    source = write_source(tmp_path / "synthetic_faces" / "test", ext=".png", with_images_dir=True)
    out_root = tmp_path / "synthetic_occluded"
    built = ensure_synthetic_occluded(source, out_root)
    assert [p.name for p in built] == ["mask", "sunglasses", "crop"]
    for kind in ("mask", "sunglasses", "crop"):
        assert (out_root / kind / "images" / "Ann" / "Ann_0001.png").is_file()
        assert (out_root / kind / "pairs.txt").read_bytes() == (source / "pairs.txt").read_bytes()
    stamp = (out_root / "mask" / "manifest.json").stat().st_mtime_ns
    ensure_synthetic_occluded(source, out_root)  # up to date: nothing rebuilt
    assert (out_root / "mask" / "manifest.json").stat().st_mtime_ns == stamp
