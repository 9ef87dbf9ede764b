"""The embedded synthetic face set: determinism, landmark truth, file formats, dataset contract, difficulty."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from data_processor import DATASETS
from data_processor.datasets import read_train_list
from data_processor.image_io import read_image
from data_processor.landmarks import ARCFACE_TEMPLATE_112, read_landmark_file
from data_processor.synthetic_faces import (NUM_FOLDS, SyntheticFaceDataset, build_synthetic_faces,
                                            ensure_synthetic_faces, main, render_preview)
from data_processor.synthetic_identity import (Nuisance, identity_rng, image_rng, sample_identity,
                                               sample_nuisance)
from data_processor.synthetic_render import render_face, render_identity_image

# A small set: 6 train identities x 4 images; 20 test identities (2 per fold) x 3 images; 3 + 3 pairs per fold;
# the val split as small as the test split.
SMALL = dict(num_train_identities=6, images_per_train_identity=4, num_test_identities=20,
             images_per_test_identity=3, pairs_per_fold=3, num_val_identities=20, images_per_val_identity=3,
             val_pairs_per_fold=3)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic") / "faces"
    return root, build_synthetic_faces(root, seed=0, **SMALL)


def parse_pairs(path: Path):
    lines = path.read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    folds, per_fold = int(header[0]), int(header[1])
    assert len(header) == 2 and len(lines) == 1 + 2 * folds * per_fold
    parsed = []
    for fold in range(folds):
        block = [line.split("\t") for line in lines[1 + 2 * fold * per_fold: 1 + 2 * (fold + 1) * per_fold]]
        positives, negatives = block[:per_fold], block[per_fold:]
        assert all(len(fields) == 3 for fields in positives), f"fold {fold}: positives must be 'name i j'"
        assert all(len(fields) == 4 for fields in negatives), f"fold {fold}: negatives must be 'name1 i name2 j'"
        parsed.append(([(n, int(i), int(j)) for n, i, j in positives],
                       [(a, int(i), b, int(j)) for a, i, b, j in negatives]))
    return folds, per_fold, parsed


def test_same_seed_gives_identical_bytes_whatever_the_workers(small_set, tmp_path):
    root, manifest = small_set
    again = build_synthetic_faces(tmp_path / "again", seed=0, workers=2, **SMALL)
    assert again["sha256"] == manifest["sha256"]
    for relative in ("train/images/00003/002.png", "test/images/synth_00007/synth_00007_0002.png",
                     "test/pairs.txt", "train/landmarks.txt"):
        assert (root / relative).read_bytes() == (tmp_path / "again" / relative).read_bytes()
    stored = json.loads((root / "manifest.json").read_text())
    assert stored["sha256"] == manifest["sha256"] and stored["seed"] == 0
    assert stored["counts"]["train_images"] == 24 and stored["counts"]["test_images"] == 60
    assert stored["counts"]["val_images"] == 60 and stored["generator_version"] == 2
    assert stored["counts"]["files"] == 24 + 60 + 60 + 3 + 3 + 2   # images, three lists, three landmark files, pairs


def test_other_seed_gives_other_data(small_set, tmp_path):
    _, manifest = small_set
    other = build_synthetic_faces(tmp_path / "other", seed=1, **SMALL)
    assert other["sha256"] != manifest["sha256"]
    first, _ = render_identity_image(0, "train", 0, 0)
    second, _ = render_identity_image(1, "train", 0, 0)
    assert not np.array_equal(first, second)


def test_neutral_landmarks_are_close_to_the_arcface_template():
    # Identities vary eye spacing, eye height, nose length and mouth size by at most ~2.3 px around the template.
    for index in range(40):
        identity = sample_identity(identity_rng(0, "train", index))
        _, landmarks = render_face(identity, Nuisance())
        assert np.abs(landmarks - ARCFACE_TEMPLATE_112).max() < 3.0, (index, landmarks)


def test_landmarks_sit_on_the_drawn_features():
    background = (0.0, 0.0, 255.0)   # pure blue: nothing on a face is this colour
    for index in range(30):
        identity = sample_identity(identity_rng(3, "test", index))
        nuisance = sample_nuisance(image_rng(3, "test", index, 0))
        image, landmarks = render_face(identity, nuisance)
        assert landmarks.shape == (5, 2) and landmarks.dtype == np.float32
        assert (landmarks > 4).all() and (landmarks < 108).all(), landmarks
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
        for eye, mouth in ((0, 3), (1, 4)):
            ex, ey = np.rint(landmarks[eye]).astype(int)
            # cheek: half-way between the eye and the mouth corner (median of 5x5 ignores moles and freckles)
            cx, cy = np.rint((landmarks[eye] + landmarks[mouth]) / 2).astype(int)
            cheek = np.median(gray[cy - 2:cy + 3, cx - 2:cx + 3])
            assert gray[ey, ex] < cheek - 12, (index, eye, gray[ey, ex], cheek)
        # nose and mouth corners are on the face: on a blue backdrop with no noise they are never blue
        clean, points = render_face(identity, Nuisance(background_colours=(background, background), yaw_deg=20.0,
                                                       smile=1.0, mouth_open=1.0))
        for x, y in np.rint(points[2:]).astype(int):
            r, g, b = clean[y, x].astype(int)
            assert b - max(r, g) < 40, (index, (x, y), clean[y, x])
        eye_pixels = [clean[y, x].astype(float) for x, y in np.rint(points[:2]).astype(int)]
        assert all(np.abs(pixel - np.array(identity.skin)).sum() > 60 for pixel in eye_pixels)


def test_pairs_follow_the_lfw_view2_format(small_set):
    root, _ = small_set
    folds, per_fold, parsed = parse_pairs(root / "test" / "pairs.txt")
    assert (folds, per_fold) == (NUM_FOLDS, SMALL["pairs_per_fold"])
    seen_pairs, fold_of_name = set(), {}
    for fold, (positives, negatives) in enumerate(parsed):
        for name, i, j in positives:
            assert 1 <= i < j <= SMALL["images_per_test_identity"]
            assert (name, i, name, j) not in seen_pairs
            seen_pairs.add((name, i, name, j))
        for first, i, second, j in negatives:
            assert first < second and (first, i, second, j) not in seen_pairs
            seen_pairs.add((first, i, second, j))
        for name in {p[0] for p in positives} | {n[0] for n in negatives} | {n[2] for n in negatives}:
            assert fold_of_name.setdefault(name, fold) == fold, f"{name} appears in two folds"
        for pair in positives + negatives:
            names_numbers = [(pair[0], pair[1]), (pair[0], pair[2])] if len(pair) == 3 else [pair[:2], pair[2:]]
            for name, number in names_numbers:
                assert (root / "test" / "images" / name / f"{name}_{number:04d}.png").is_file()


def test_pairs_parse_with_the_protocol_parser(small_set):
    from test_protocol.pairs_parsers import parse_lfw_pairs

    root, _ = small_set
    pairs = parse_lfw_pairs(root / "test" / "pairs.txt", image_ext=".png")
    assert len(pairs) == 2 * NUM_FOLDS * SMALL["pairs_per_fold"] and pairs.num_folds == NUM_FOLDS
    assert pairs.issame.sum() == NUM_FOLDS * SMALL["pairs_per_fold"]
    assert all((root / "test" / "images" / image).is_file() for image in pairs.images)


def test_test_identities_are_disjoint_from_training(small_set):
    root, _ = small_set
    train_names = {p.name for p in (root / "train" / "images").iterdir()}
    test_names = {p.name for p in (root / "test" / "images").iterdir()}
    assert len(train_names) == SMALL["num_train_identities"] and len(test_names) == SMALL["num_test_identities"]
    assert not train_names & test_names and all(name.startswith("synth_") for name in test_names)
    train = [sample_identity(identity_rng(0, "train", i)) for i in range(SMALL["num_train_identities"])]
    test = [sample_identity(identity_rng(0, "test", i)) for i in range(SMALL["num_test_identities"])]
    assert all(a != b for a in train for b in test)


def test_train_list_landmarks_and_dataset_contract(small_set):
    root, manifest = small_set
    items = read_train_list(root / "train" / "train_list.txt")
    labels = sorted({label for _, label in items})
    assert labels == list(range(SMALL["num_train_identities"]))
    assert len(items) == SMALL["num_train_identities"] * SMALL["images_per_train_identity"]
    assert all((root / "train" / "images" / path).is_file() for path, _ in items)
    landmarks = read_landmark_file(root / "train" / "landmarks.txt")
    assert set(landmarks) == {path for path, _ in items}
    stamp = (root / "manifest.json").stat().st_mtime_ns
    dataset = DATASETS.build({"type": "SyntheticFaceDataset", "root": str(root), "seed": 0, **SMALL})
    assert (root / "manifest.json").stat().st_mtime_ns == stamp, "a matching set must not be rebuilt"
    assert isinstance(dataset, SyntheticFaceDataset) and dataset.manifest["sha256"] == manifest["sha256"]
    assert len(dataset) == len(items) and dataset.num_classes == SMALL["num_train_identities"]
    assert dataset.landmark_source == "generator"
    sample = dataset[5]
    assert sample["image"].dtype == torch.uint8 and sample["image"].shape == (3, 112, 112)
    assert sample["label"].dtype == torch.long and int(sample["label"]) == items[5][1]
    assert sample["landmarks"].dtype == torch.float32 and sample["landmarks"].shape == (5, 2)
    assert np.allclose(sample["landmarks"].numpy(), landmarks[items[5][0]])
    test_split = SyntheticFaceDataset(root=str(root), split="test", seed=0, **SMALL)
    assert len(test_split) == 60 and test_split.num_classes == SMALL["num_test_identities"]


def test_stored_landmarks_equal_the_rendered_ones(small_set):
    root, _ = small_set
    landmarks = read_landmark_file(root / "test" / "landmarks.txt")
    image, points = render_identity_image(0, "test", 4, 1)   # synth_00004, second image (file number 2)
    assert np.array_equal(read_image(root / "test" / "images" / "synth_00004" / "synth_00004_0002.png"), image)
    assert np.allclose(landmarks["synth_00004/synth_00004_0002.png"], points, atol=0.006)


def test_ensure_rebuilds_only_when_parameters_change(tmp_path):
    tiny = dict(SMALL, num_train_identities=2, images_per_train_identity=2, images_per_test_identity=2,
                pairs_per_fold=1)
    first = ensure_synthetic_faces(tmp_path / "set", **tiny)
    stamp = (tmp_path / "set" / "manifest.json").stat().st_mtime_ns
    assert ensure_synthetic_faces(tmp_path / "set", **tiny) == first
    assert (tmp_path / "set" / "manifest.json").stat().st_mtime_ns == stamp
    changed = ensure_synthetic_faces(tmp_path / "set", **dict(tiny, num_train_identities=3))
    assert changed["sha256"] != first["sha256"] and changed["counts"]["train_identities"] == 3
    assert not (tmp_path / "set" / "train" / "images" / "00003").exists()
    harder = ensure_synthetic_faces(tmp_path / "set", **dict(tiny, num_train_identities=3,
                                                            difficulty={"yaw_deg": 25.0}))
    assert harder["parameters"]["difficulty"]["yaw_deg"] == 25.0 and harder["sha256"] != changed["sha256"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"], "no staging folders may be left behind"


def test_bad_parameters_and_foreign_folders_are_refused(tmp_path):
    with pytest.raises(ValueError, match="num_test_identities: must be at least 20"):
        build_synthetic_faces(tmp_path / "a", **dict(SMALL, num_test_identities=5))
    with pytest.raises(ValueError, match="unknown key.*'yaw'"):
        build_synthetic_faces(tmp_path / "a", difficulty={"yaw": 3}, **SMALL)
    with pytest.raises(ValueError, match="fold 1: 2 identities allow only 2 positive / 4 negative pairs, 3 requested"):
        build_synthetic_faces(tmp_path / "a", **dict(SMALL, images_per_test_identity=2, pairs_per_fold=3))
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"not ours")
    with pytest.raises(FileExistsError, match="not a synthetic-faces folder"):
        build_synthetic_faces(foreign, **SMALL)
    assert (foreign / "holiday.jpg").read_bytes() == b"not ours"


def test_identities_are_learnable_but_not_trivial():
    """Nearest class mean on raw pixels (32x32 grey, mean-removed, cosine), 20 identities, 6 images to build each
    mean and 2 held out. Measured over seeds 0-4: 0.45-0.73 (chance 0.05). Identity is in the pixels (well above
    3x chance) but nuisance keeps it from being solved by template matching (a learnable-only-with-effort set)."""
    features = np.zeros((20, 8, 32 * 32), dtype=np.float32)
    for identity in range(20):
        for image_index in range(8):
            image, _ = render_identity_image(0, "train", identity, image_index)
            small = cv2.resize(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), (32, 32), interpolation=cv2.INTER_AREA)
            vector = small.astype(np.float32).ravel()
            vector -= vector.mean()
            features[identity, image_index] = vector / np.linalg.norm(vector)
    means = features[:, :6].mean(axis=1)
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    predicted = (features[:, 6:].reshape(-1, 32 * 32) @ means.T).argmax(axis=1)
    accuracy = float(np.mean(predicted == np.repeat(np.arange(20), 2)))
    assert 3 * (1 / 20) < accuracy < 0.9, accuracy


def test_preview_and_cli(small_set, tmp_path, capsys):
    root, _ = small_set
    preview = render_preview(root, tmp_path / "preview.png", n_identities=3, n_images=4)
    assert read_image(preview).shape == (3 * 112, 4 * 112, 3)
    assert main(["--out", str(root), "--seed", "0", "--train-identities", "6", "--train-images", "4",
                 "--test-identities", "20", "--test-images", "3", "--pairs-per-fold", "3", "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert "6 train identities / 24 images" in printed and "20 test identities / 60 images" in printed
