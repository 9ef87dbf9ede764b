"""Occluder families: every type in exactly one family, exclude_families in the training switch, the families a run
trains on, and seen / held_out / clean for a test set's occlusion."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data_processor.datasets import ImageFolderDataset
from data_processor.image_io import write_image
from data_processor.occlusion import OCCLUDERS
from data_processor.occlusion.families import (FAMILIES, OCCLUDER_FAMILIES, families_of, family_of, family_types,
                                               seen_or_held_out)
from data_processor.train_dataset import (OCCLUSION_TYPES, OcclusionTrainDataset, build_train_dataset,
                                          resolve_probabilities, trained_families)
from utils.registry import ConfigError

DEFAULT_FAMILIES = ["geometric", "lower_accessory", "partial", "upper_accessory"]


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("family_faces")
    rng = np.random.default_rng(0)
    for identity in range(3):
        for k in range(4):
            write_image(root / f"id{identity}" / f"{k}.png", rng.integers(0, 256, (112, 112, 3), dtype=np.uint8))
    return root


def test_every_registered_type_is_in_exactly_one_family():
    listed = [kind for kinds in OCCLUDER_FAMILIES.values() for kind in kinds]
    assert len(listed) == len(set(listed)), "a type is in two families"
    assert set(listed) == set(OCCLUDERS.names()) - {"clean"}
    assert set(listed) == set(OCCLUSION_TYPES) - {"clean"}
    assert family_of("clean") is None
    for family, kinds in OCCLUDER_FAMILIES.items():
        assert family_types(family) == kinds and all(family_of(kind) == family for kind in kinds)
    assert FAMILIES == ("partial", "geometric", "upper_accessory", "lower_accessory", "object", "user_art")
    assert family_of("gfro_box") == "geometric" and family_of("crowd") == family_of("object_photo") == "object"
    with pytest.raises(ConfigError, match="has no family"):
        family_of("helmet")


def test_exclude_families_removes_their_types(image_folder):
    excluded = ("partial", "lower_accessory")
    dataset = OcclusionTrainDataset(ImageFolderDataset(str(image_folder)), mode="mixed", seed=0,
                                    exclude_families=list(excluded))
    assert not any(family_of(kind) in excluded for kind in dataset.types)
    drawn = set()
    for epoch in range(42):  # 42 epochs × 12 images = 504 samples
        dataset.set_epoch(epoch)
        for index in range(len(dataset)):
            drawn.add(OCCLUSION_TYPES[int(dataset[index]["occlusion_type"])])
    assert len(drawn) >= 6
    assert not {family_of(kind) for kind in drawn} & set(excluded), drawn
    assert dataset.trained_families == ["geometric", "upper_accessory"]


def test_unknown_or_contradicting_families_are_config_errors(image_folder):
    train = {"type": "ImageFolderDataset", "root": str(image_folder)}
    with pytest.raises(ConfigError, match=r"data.occlusion.exclude_families: unknown occluder family 'helmets'; "
                                          r"valid: partial, geometric, upper_accessory"):
        build_train_dataset({"train": train, "occlusion": {"exclude_families": ["helmets"]}})
    with pytest.raises(ConfigError, match="probabilities.mask: 0.3 for a type of family 'lower_accessory'"):
        resolve_probabilities("mixed", {"mask": 0.3}, exclude_families=["lower_accessory"])
    with pytest.raises(ConfigError, match="all their probabilities are 0 once families"):
        resolve_probabilities("partial", {"clean": 0}, exclude_families=["partial"])


def test_trained_families_of_the_switch_and_of_configs(image_folder):
    assert trained_families(None) == trained_families(False) == []
    assert trained_families(True) == trained_families({}) == DEFAULT_FAMILIES  # the switch: mixed, object/rgba at 0
    assert trained_families({"mode": "partial"}) == ["partial"]
    assert trained_families({"mode": "clean"}) == []
    assert trained_families({"mode": "synthetic"}) == ["geometric", "lower_accessory", "upper_accessory"]
    assert trained_families({"exclude_families": ["upper_accessory"]}) == ["geometric", "lower_accessory", "partial"]
    assert trained_families({"probabilities": {"crowd": 0.1}}) == ["geometric", "lower_accessory", "object",
                                                                   "partial", "upper_accessory"]
    for cfg in ({}, {"mode": "partial"}, {"exclude_families": ["partial", "geometric"]}):
        dataset = build_train_dataset({"train": {"type": "ImageFolderDataset", "root": str(image_folder)},
                                       "occlusion": cfg})
        assert dataset.trained_families == trained_families(cfg)


def test_seen_or_held_out():
    trained = trained_families(True)
    assert seen_or_held_out("mask", trained) == "seen"
    assert seen_or_held_out(["partial_upper", "partial_lower"], trained) == "seen"
    assert seen_or_held_out("object_photo", trained) == "held_out"
    assert seen_or_held_out("crowd,object_photo", trained) == "held_out"
    assert seen_or_held_out("object", trained) == "held_out"  # a family name
    assert seen_or_held_out(["mask", "crowd"], trained) == "seen"  # partly seen is never held out
    assert seen_or_held_out("mask", trained_families({"mode": "partial"})) == "held_out"
    assert seen_or_held_out("partial_random", []) == "held_out"
    for clean in (None, "clean", "none", "", []):
        assert seen_or_held_out(clean, trained) == "clean"
    assert families_of(["none", "mask", "hat", "gfro_box"]) == ["geometric", "lower_accessory", "upper_accessory"]
    with pytest.raises(ConfigError, match="has no family"):
        seen_or_held_out("helmet", trained)
    with pytest.raises(ConfigError, match="trained_families: unknown occluder family"):
        seen_or_held_out("mask", ["masks"])
