"""Composable configs: a list of _base_ files merged in order, sections named by fragment (``backbone: iresnet50``),
type changes by override, and the insightface .rec presets that need only ``data.train.root``."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from backbone import build_backbone
from data_processor import DATASETS
from data_processor.record_io import RecordIODataset, write_insightface_rec
from data_processor.train_dataset import register_dataset_modules
from head import build_head
from utils.config import apply_override, available_fragments, load_config
from utils.registry import ConfigError, check_kwargs

REPO = Path(__file__).resolve().parents[1]
DEFAULT = (REPO / "configs" / "_base_" / "default.yaml").as_posix()
BACKBONE_FRAGMENTS = available_fragments("backbone")
HEAD_FRAGMENTS = available_fragments("head")
DATA_FRAGMENTS = available_fragments("data")
REC_PRESETS = ["configs/casia_arcface_rec.yaml", "configs/ms1mv2_arcface_rec.yaml", "configs/gfro/casia_gfro_rec.yaml"]


def write(path: Path, content: dict) -> Path:
    path.write_text(yaml.safe_dump(content))
    return path


def run_config(tmp_path: Path, **sections) -> dict:
    """A run config file over the default base whose sections are fragment names, composed."""
    return load_config(write(tmp_path / "run.yaml", {"_base_": DEFAULT, **sections}))


def test_fragment_lists_match_the_folders():
    assert {"iresnet50", "iresnet100", "mobilefacenet"} <= set(BACKBONE_FRAGMENTS)
    assert {"adaface", "arcface_insightface"} <= set(HEAD_FRAGMENTS)
    assert {"synthetic", "casia_rec", "ms1mv2_rec", "image_list"} <= set(DATA_FRAGMENTS)


@pytest.mark.parametrize("name", BACKBONE_FRAGMENTS)
def test_every_backbone_fragment_composes_and_builds(tmp_path, name):
    cfg = run_config(tmp_path, backbone=name)
    assert cfg["backbone"] == yaml.safe_load((REPO / "configs" / "backbone" / f"{name}.yaml").read_text())
    with torch.device("meta"):  # construction only: no memory for IResNet-200
        model = build_backbone(cfg["backbone"])
    assert model.feat_dim == cfg["backbone"]["feat_dim"]


@pytest.mark.parametrize("name", HEAD_FRAGMENTS)
def test_every_head_fragment_composes_and_builds(tmp_path, name):
    cfg = run_config(tmp_path, head=name, backbone="mobilefacenet")
    head = build_head(cfg["head"], feat_dim=cfg["backbone"]["feat_dim"], num_class=10)
    assert type(head).__name__ == cfg["head"]["type"]
    assert "margin_am" not in cfg["head"] or name in ("arcface", "arcface_insightface")  # no key left from the base


@pytest.mark.parametrize("name", DATA_FRAGMENTS)
def test_every_data_fragment_names_a_dataset_and_its_keys(tmp_path, name):
    register_dataset_modules()
    cfg = run_config(tmp_path, data={"train": name})
    train = dict(cfg["data"]["train"])
    check_kwargs(DATASETS.get(train.pop("type")), train, f"configs/data/{name}.yaml")
    assert cfg["data"]["preprocess"]["input_size"] == [112, 112]  # the rest of data comes from the base


def test_unknown_fragment_lists_the_available_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"backbone: unknown fragment 'iresnet5'.*iresnet50, iresnet50_se"):
        run_config(tmp_path, backbone="iresnet5")
    with pytest.raises(ConfigError, match=r"head: unknown fragment 'arc'.*adaface, arcface"):
        load_config(DEFAULT, ["head=arc"])


def test_base_list_merges_in_order_and_overrides_apply_last(tmp_path):
    write(tmp_path / "a.yaml", {"optim": {"type": "SGD", "lr": 0.1, "momentum": 0.9}, "backbone": "iresnet18"})
    write(tmp_path / "b.yaml", {"optim": {"lr": 0.2}, "head": "adaface"})
    child = write(tmp_path / "child.yaml", {"_base_": [DEFAULT, "a.yaml", "b.yaml"], "backbone": {"feat_dim": 256}})
    cfg = load_config(child, ["optim.lr=0.3", "backbone.dropout=0.1"])
    assert cfg["optim"]["lr"] == 0.3 and cfg["optim"]["momentum"] == 0.9
    assert cfg["backbone"] == {"type": "IResNet18", "mode": "ir", "feat_dim": 256, "dropout": 0.1}
    assert cfg["head"]["type"] == "AdaFace" and cfg["runtime"]["seed"] == 0
    with pytest.raises(ConfigError, match="_base_ 'missing.yaml' not found"):
        load_config(write(tmp_path / "bad.yaml", {"_base_": ["missing.yaml"]}))


def test_nested_fragments_and_fragment_overrides(tmp_path):
    cfg = load_config(REPO / "configs" / "gfro" / "casia_gfro_rec.yaml",
                      ["backbone.trunk=iresnet18", "head=cosface",
                       "teacher={backbone: iresnet100, weights: w.pth, strict: false}"])
    assert cfg["backbone"]["type"] == "GFROEmbedding" and cfg["backbone"]["trunk"]["type"] == "IResNet18"
    assert cfg["head"] == yaml.safe_load((REPO / "configs" / "head" / "cosface.yaml").read_text())
    assert cfg["teacher"]["backbone"]["type"] == "IResNet100"


def test_type_change_by_override_drops_the_keys_the_new_type_does_not_accept():
    preset = REPO / "configs" / "gfro" / "casia_elasticface_iresnet.yaml"
    cfg = load_config(preset, ["data.train.type=RecordIODataset", "data.train.root=/data/faces_webface_112x112"])
    assert cfg["data"]["train"] == {"type": "RecordIODataset", "root": "/data/faces_webface_112x112"}
    cfg = load_config(preset, ["data.train=casia_rec", "data.train.root=/data/webface"])
    assert cfg["data"]["train"] == {"type": "RecordIODataset", "root": "/data/webface"}
    section = {"backbone": {"type": "IResNet18", "mode": "ir_se", "width": 0.5, "feat_dim": 128}}
    apply_override(section, "backbone.type=MobileFaceNet")   # MobileFaceNet has no `mode`; width and feat_dim stay
    assert section["backbone"] == {"type": "MobileFaceNet", "width": 0.5, "feat_dim": 128}


@pytest.mark.parametrize("path", REC_PRESETS)
def test_rec_presets_need_only_the_data_root(path):
    cfg = load_config(REPO / path, ["data.train.root=/data/faces"])
    assert cfg["data"]["train"] == {"type": "RecordIODataset", "root": "/data/faces"}
    assert cfg["runtime"]["amp"] == "bf16" and cfg["data"]["preprocess"]["channel_order"] == "RGB"
    assert cfg["head"]["margin"] == 0.5 and cfg["head"]["scale"] == 64.0
    assert cfg["optim"]["lr"] == 0.1 and cfg["data"]["batch_size"] == 128
    trunk = cfg["backbone"].get("trunk", cfg["backbone"])
    assert trunk["type"] == ("IResNet100" if "ms1mv2" in path else "IResNet50")


@pytest.fixture(scope="module")
def tiny_rec(tmp_path_factory):
    """16 random 112x112 faces of 4 identities as insightface train.rec / train.idx / property."""
    folder = tmp_path_factory.mktemp("faces_webface_112x112")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (112, 112, 3), np.uint8) for _ in range(16)]
    write_insightface_rec(folder, images, [k % 4 for k in range(16)])
    assert {p.name for p in folder.iterdir()} == {"train.rec", "train.idx", "property"}
    assert len(RecordIODataset(str(folder))) == 16
    return folder


SHRINK = ["backbone=mobilefacenet", "+backbone.width=0.25", "backbone.feat_dim=32", "data.batch_size=4",
          "data.num_workers=0", "runtime.device=cpu", "runtime.amp=none", "runtime.channels_last=false",
          "runtime.max_steps=2", "runtime.log_interval=1"]


def test_casia_rec_preset_trains_on_a_small_rec(tiny_rec, tmp_path):
    from training_mode.conventional_training.train import main

    work_dir = tmp_path / "run"
    assert main(["configs/casia_arcface_rec.yaml", f"data.train.root={tiny_rec}", *SHRINK,
                 "--work-dir", str(work_dir), "--no-eval"]) == 0
    results = json.loads((work_dir / "results.json").read_text())
    assert results["steps"] == 2 and np.isfinite(results["last_loss"])
    dumped = yaml.safe_load((work_dir / "config.yaml").read_text())
    assert dumped["data"]["train"] == {"type": "RecordIODataset", "root": str(tiny_rec)}
    assert dumped["head"]["margin_am"] == "insightface"
    assert (work_dir / "export" / "model_meta.json").is_file()


def test_gfro_rec_preset_trains_on_a_small_rec(tiny_rec, tmp_path):
    from training_mode.conventional_training.train import main

    work_dir = tmp_path / "run"
    shrink = [s.replace("backbone", "backbone.trunk") if s.startswith(("backbone", "+backbone")) else s
              for s in SHRINK]
    assert main(["configs/gfro/casia_gfro_rec.yaml", f"data.train.root={tiny_rec}", *shrink,
                 "backbone.feat_dim=32", "--work-dir", str(work_dir), "--no-eval"]) == 0
    results = json.loads((work_dir / "results.json").read_text())
    assert results["steps"] == 2 and np.isfinite(results["last_loss"])
    assert results["occlusion"]["mode"] == "mixed" and results["trained_families"]
