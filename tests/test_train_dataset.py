"""The occlusion switch of data_processor/train_dataset.py: modes and probabilities, the untouched clean view, joint
flip, per-(seed, epoch, index) reproducibility, landmark files, config errors."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from data_processor.datasets import ImageFolderDataset
from data_processor.image_io import read_image, write_image
from data_processor.record_io import write_insightface_rec
from data_processor.landmarks import ARCFACE_TEMPLATE_112, write_landmark_file
from data_processor.occlusion import PARTIAL_VIEWS, SYNTHETIC_OCCLUDERS
from data_processor.train_dataset import (FLIP_ORDER, OCCLUSION_TYPES, OcclusionTrainDataset, build_train_dataset,
                                          resolve_probabilities)
from utils.registry import ConfigError

SHIFT = np.array([6.0, 4.0], dtype=np.float32)  # landmark-file faces sit off the template


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """4 identities × 3 noise images (112×112 PNG) + a landmark file with shifted template points."""
    root = tmp_path_factory.mktemp("faces")
    rng = np.random.default_rng(0)
    landmarks = {}
    for identity in range(4):
        for k in range(3):
            relative = f"id{identity}/{k}.png"
            write_image(root / "images" / relative, rng.integers(0, 256, (112, 112, 3), dtype=np.uint8))
            landmarks[relative] = ARCFACE_TEMPLATE_112 + SHIFT
    write_landmark_file(root / "landmarks.txt", landmarks)
    return root


def folder_cfg(root: Path, landmarks: bool = False) -> dict:
    cfg = {"type": "ImageFolderDataset", "root": str(root / "images")}
    if landmarks:
        cfg["landmarks_file"] = str(root / "landmarks.txt")
    return cfg


def only(types: dict, mode_types) -> dict:
    """Probabilities giving ``types`` their weight and every other type of the mode 0."""
    return {name: types.get(name, 0.0) for name in mode_types}


def test_occlusion_types_start_with_clean_and_cover_every_family():
    assert OCCLUSION_TYPES[0] == "clean"
    assert set(PARTIAL_VIEWS) | set(SYNTHETIC_OCCLUDERS) <= set(OCCLUSION_TYPES)
    assert len(set(OCCLUSION_TYPES)) == len(OCCLUSION_TYPES)


def test_sample_keys_shapes_and_untouched_clean_view(image_folder):
    base = ImageFolderDataset(str(image_folder / "images"))
    dataset = OcclusionTrainDataset(base, mode="mixed", seed=1, flip_probability=0.0)
    assert dataset.num_classes == 4 and len(dataset) == 12 and dataset.landmark_source == "template"
    for index in range(len(dataset)):
        sample = dataset[index]
        reference = base[index]
        assert torch.equal(sample["image"], reference["image"])
        assert sample["noisy"].shape == (3, 112, 112) and sample["noisy"].dtype == torch.uint8
        assert sample["visibility"].shape == (1, 112, 112) and sample["visibility"].dtype == torch.float32
        assert sample["occlusion_type"].dtype == torch.long and sample["label"] == reference["label"]
        changed = (sample["noisy"] != sample["image"]).any(dim=0)
        assert not (changed & (sample["visibility"][0] == 1)).any()
        if OCCLUSION_TYPES[int(sample["occlusion_type"])] != "clean":
            assert (sample["visibility"] == 0).any()


def test_clean_mode_gives_the_image_itself(image_folder):
    dataset = build_train_dataset({"train": folder_cfg(image_folder), "occlusion": {"mode": "clean"}})
    for index in range(len(dataset)):
        sample = dataset[index]
        assert torch.equal(sample["noisy"], sample["image"])
        assert (sample["visibility"] == 1).all() and int(sample["occlusion_type"]) == 0


@pytest.mark.parametrize("mode,family", [("partial", PARTIAL_VIEWS), ("synthetic", SYNTHETIC_OCCLUDERS)])
def test_modes_draw_types_with_the_configured_probabilities(image_folder, mode, family):
    from data_processor.train_dataset import MODE_TYPES

    wanted = {"clean": 0.2, family[0]: 0.5, family[1]: 0.3}
    dataset = OcclusionTrainDataset(ImageFolderDataset(str(image_folder / "images")), mode=mode,
                                    probabilities=only(wanted, MODE_TYPES[mode]), seed=3)
    counts = Counter()
    for epoch in range(42):  # 504 draws
        dataset.set_epoch(epoch)
        counts.update(OCCLUSION_TYPES[int(dataset[i]["occlusion_type"])] for i in range(len(dataset)))
    total = sum(counts.values())
    assert set(counts) == set(wanted)
    for name, probability in wanted.items():
        assert abs(counts[name] / total - probability) < 0.07, (name, counts)


def test_mode_restricts_types_and_renormalises(image_folder):
    types, probabilities = resolve_probabilities("partial", {"clean": 1.0})
    assert types[0] == "clean" and set(types[1:]) == set(PARTIAL_VIEWS)
    assert np.isclose(probabilities.sum(), 1.0)
    types, _ = resolve_probabilities("synthetic", None)
    assert not set(types) & set(PARTIAL_VIEWS) and "rgba" not in types  # rgba has weight 0 by default


def test_flip_keeps_clean_noisy_visibility_and_landmarks_aligned(image_folder):
    base = ImageFolderDataset(str(image_folder / "images"), landmarks_file=str(image_folder / "landmarks.txt"))
    probabilities = only({"sunglasses": 1.0}, OCCLUSION_TYPES)
    plain = OcclusionTrainDataset(base, mode="synthetic", probabilities=probabilities, seed=5, flip_probability=0.0)
    flipped = OcclusionTrainDataset(base, mode="synthetic", probabilities=probabilities, seed=5,
                                    flip_probability=1.0)
    for index in range(4):
        a, b = plain[index], flipped[index]
        assert not a["flipped"] and b["flipped"]
        for key in ("image", "noisy", "visibility"):
            assert torch.equal(b[key], a[key].flip(-1)), key
        expected = a["landmarks"][FLIP_ORDER].clone()
        expected[:, 0] = 111 - expected[:, 0]
        assert torch.allclose(b["landmarks"], expected)
        # sunglasses stay on the (flipped) eye landmarks
        for sample in (a, b):
            eyes = sample["landmarks"][:2].round().long()
            assert (sample["visibility"][0, eyes[:, 1], eyes[:, 0]] == 0).all()
        assert b["landmarks"][0, 0] < b["landmarks"][1, 0]  # left eye still on the image left


def test_landmarks_come_from_the_file_and_drive_the_occluders(image_folder):
    occlusion = {"mode": "synthetic", "probabilities": only({"mask": 1.0}, OCCLUSION_TYPES),
                 "flip_probability": 0.0}
    dataset = build_train_dataset({"train": folder_cfg(image_folder, landmarks=True), "occlusion": occlusion})
    assert dataset.landmark_source == "file"
    for index in range(len(dataset)):
        sample = dataset[index]
        points = sample["landmarks"].numpy()
        assert np.allclose(points, ARCFACE_TEMPLATE_112 + SHIFT, atol=0.01)
        rows, cols = np.round(points[:, 1]).astype(int), np.round(points[:, 0]).astype(int)
        visible = sample["visibility"][0].numpy()[rows, cols]
        assert visible[:2].all() and not visible[2:].any()


def test_same_seed_epoch_index_gives_the_same_sample(image_folder):
    make = lambda seed: build_train_dataset({"train": folder_cfg(image_folder), "occlusion": {"seed": seed}})  # noqa: E731
    first, second, other = make(7), make(7), make(8)
    for dataset in (first, second, other):
        dataset.set_epoch(2)
    for index in (5, 0, 11, 3):  # any order
        a, b = first[index], second[index]
        for key in ("image", "noisy", "visibility", "occlusion_type", "landmarks", "flipped"):
            assert torch.equal(a[key], b[key]), key
    assert any(not torch.equal(first[i]["noisy"], other[i]["noisy"]) for i in range(6))
    before = [first[i]["noisy"].clone() for i in range(len(first))]
    first.set_epoch(3)
    assert any(not torch.equal(first[i]["noisy"], before[i]) for i in range(len(first)))
    first.set_epoch(2)
    assert all(torch.equal(first[i]["noisy"], before[i]) for i in range(len(first)))


def test_worker_count_does_not_change_the_batches(image_folder):
    import cv2

    cv2.setNumThreads(4)  # a live OpenCV thread pool in the parent: forked workers must still not deadlock
    cv2.GaussianBlur(np.zeros((1024, 1024, 3), np.uint8), (0, 0), 9)
    dataset = build_train_dataset({"train": folder_cfg(image_folder), "occlusion": {"seed": 2}})
    assert cv2.getNumThreads() == 1
    dataset.set_epoch(1)
    single = next(iter(DataLoader(dataset, batch_size=12, num_workers=0)))
    parallel = next(iter(DataLoader(dataset, batch_size=12, num_workers=2, timeout=120)))
    for key in ("image", "noisy", "visibility", "occlusion_type", "landmarks"):
        assert torch.equal(single[key], parallel[key]), key


def test_multiple_views_stack_on_a_view_dimension(image_folder):
    dataset = OcclusionTrainDataset(ImageFolderDataset(str(image_folder / "images")), num_views=3, seed=0)
    sample = dataset[1]
    assert sample["noisy"].shape == (3, 3, 112, 112)
    assert sample["visibility"].shape == (3, 1, 112, 112)
    assert sample["occlusion_type"].shape == (3,)
    for view in range(3):
        changed = (sample["noisy"][view] != sample["image"]).any(dim=0)
        assert not (changed & (sample["visibility"][view, 0] == 1)).any()


def test_build_train_dataset_wraps_only_when_occlusion_is_set(image_folder):
    plain = build_train_dataset({"train": folder_cfg(image_folder), "occlusion": None})
    assert isinstance(plain, ImageFolderDataset)
    defaults = build_train_dataset({"train": folder_cfg(image_folder), "occlusion": True})
    assert isinstance(defaults, OcclusionTrainDataset) and defaults.mode == "mixed"
    assert callable(getattr(defaults, "set_epoch"))


def test_config_errors_name_the_key(image_folder):
    train = folder_cfg(image_folder)
    cases = [
        ({"mode": "weird"}, "data.occlusion.mode"),
        ({"probabilities": {"helmet": 1.0}}, "unknown type 'helmet'"),
        ({"probabilities": {"mask": -1}}, "probabilities.mask"),
        ({"mode": "clean", "probabilities": {"clean": 0}}, "all their probabilities are 0"),
        ({"colour": "red"}, "unknown config key"),
        ({"probabilities": {"rgba": 1.0}}, "rgba_dir is not set"),
        ({"params": {"mask": {"colour": "red"}}}, "data.occlusion.params.mask"),
        ({"flip_probability": 2}, "flip_probability"),
        ("yes", "expected a mapping"),
    ]
    for occlusion, message in cases:
        with pytest.raises(ConfigError, match=message):
            build_train_dataset({"train": train, "occlusion": occlusion})
    with pytest.raises(ConfigError, match="missing the 'train' section"):
        build_train_dataset({"occlusion": {}})


def test_per_type_params_reach_the_occluder(image_folder):
    dataset = OcclusionTrainDataset(ImageFolderDataset(str(image_folder / "images")), mode="synthetic",
                                    probabilities=only({"block": 1.0}, OCCLUSION_TYPES),
                                    params={"block": {"area_ratio": [0.5, 0.5], "fill": "zero"}}, seed=0)
    for index in range(4):
        sample = dataset[index]
        assert abs(float((sample["visibility"] == 0).float().mean()) - 0.5) < 0.03


def test_every_dataset_format_can_be_wrapped(image_folder, tmp_path):
    names = sorted(p.relative_to(image_folder / "images").as_posix() for p in (image_folder / "images").rglob("*.png"))
    list_file = tmp_path / "train_list.txt"
    list_file.write_text("".join(f"{name} {int(name[2])}\n" for name in names))
    configs = [folder_cfg(image_folder),
               {"type": "ImageListDataset", "root": str(image_folder / "images"), "list_file": str(list_file),
                "landmarks_file": str(image_folder / "landmarks.txt")}]
    images = [read_image(image_folder / "images" / name) for name in names]
    write_insightface_rec(tmp_path / "rec", images, [int(name[2]) for name in names])
    configs.append({"type": "RecordIODataset", "root": str(tmp_path / "rec")})
    for cfg in configs:
        dataset = build_train_dataset({"train": cfg, "occlusion": {"mode": "mixed", "seed": 0}})
        assert dataset.num_classes == 4 and len(dataset) == 12, cfg["type"]
        assert dataset.landmark_source == ("file" if "landmarks_file" in cfg else "template")
        sample = dataset[0]
        assert sample["noisy"].shape == sample["image"].shape == (3, 112, 112)
        changed = (sample["noisy"] != sample["image"]).any(dim=0)
        assert not (changed & (sample["visibility"][0] == 1)).any()


# ---- data.flip: a data option of its own, with or without occlusion ----------------------------------------------
def test_flip_without_occlusion_mirrors_image_and_landmarks(image_folder):
    import cv2

    from data_processor.datasets import FlipDataset

    cfg = {"train": folder_cfg(image_folder, landmarks=True), "occlusion": None, "flip": 0.5}
    dataset, again = build_train_dataset(cfg), build_train_dataset(cfg)
    base = ImageFolderDataset(str(image_folder / "images"), landmarks_file=str(image_folder / "landmarks.txt"))
    assert isinstance(dataset, FlipDataset) and dataset.num_classes == 4 and dataset.landmark_source == "file"
    assert dataset.trained_families == []
    flips = []
    for index in range(len(dataset)):
        sample, plain = dataset[index], base[index]
        assert torch.equal(sample["image"], again[index]["image"])  # reproducible
        flips.append(bool(sample["flipped"]))
        if sample["flipped"]:
            expected = cv2.flip(np.ascontiguousarray(plain["image"].numpy().transpose(1, 2, 0)), 1)
            assert np.array_equal(sample["image"].numpy().transpose(1, 2, 0), expected)
            points = plain["landmarks"][FLIP_ORDER].clone()
            points[:, 0] = 111 - points[:, 0]
            assert torch.allclose(sample["landmarks"], points)
            assert sample["landmarks"][0, 0] < sample["landmarks"][1, 0]
        else:
            assert torch.equal(sample["image"], plain["image"])
    assert 0 < sum(flips) < len(flips)
    dataset.set_epoch(1)
    assert [bool(dataset[i]["flipped"]) for i in range(len(dataset))] != flips  # another epoch, other flips
    assert isinstance(build_train_dataset({**cfg, "flip": 0.0}), ImageFolderDataset)
    assert isinstance(build_train_dataset({**cfg, "flip": None}), ImageFolderDataset)  # unset: as before, no flip
    seeded = build_train_dataset({**cfg, "flip": {"probability": 0.5, "seed": 3}})
    assert seeded.seed == 3 and seeded.probability == 0.5


def test_flip_with_occlusion_is_the_occlusion_wrappers_joint_flip(image_folder):
    train = folder_cfg(image_folder)
    never = build_train_dataset({"train": train, "occlusion": {"seed": 1}, "flip": 0.0})
    always = build_train_dataset({"train": train, "occlusion": {"seed": 1}, "flip": 1.0})
    assert isinstance(always, OcclusionTrainDataset) and always.flip_probability == 1.0
    for index in range(3):
        a, b = never[index], always[index]
        assert not a["flipped"] and b["flipped"]
        for key in ("image", "noisy", "visibility"):
            assert torch.equal(b[key], a[key].flip(-1)), key
    default = build_train_dataset({"train": train, "occlusion": {}})
    assert default.flip_probability == 0.5  # unset: the switch's FLIP_PROBABILITY, as before


def test_flip_config_errors(image_folder):
    train = folder_cfg(image_folder)
    cases = [({"flip": 1.5}, "data.flip: expected a probability"),
             ({"flip": "yes"}, "data.flip: expected a probability"),
             ({"flip": {"p": 0.5}}, "data.flip: expected a probability or"),
             ({"flip": {"probability": 0.5, "seed": -1}}, "data.flip.seed"),
             ({"flip": 0.5, "occlusion": {"flip_probability": 0.2}}, "disagree"),
             ({"flip": {"probability": 0.5, "seed": 1}, "occlusion": {}}, "drop data.flip.seed")]
    for extra, message in cases:
        with pytest.raises(ConfigError, match=message):
            build_train_dataset({"train": train, "occlusion": None, **extra})
