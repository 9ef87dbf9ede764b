"""The Trainer: resume equals an uninterrupted run, checkpoints carry the config, torchrun DDP on CPU (gloo)."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from data_processor.image_io import write_image
from training_mode.trainer import Trainer
from utils.checkpoint import load_checkpoint
from utils.config import load_config, merge

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def random_faces(tmp_path_factory):
    """48 random 112×112 images of 4 identities in a FaceX-Zoo train list."""
    root = tmp_path_factory.mktemp("faces")
    rng = np.random.default_rng(0)
    lines = []
    for k in range(48):
        path = f"id{k % 4}/{k:03d}.png"
        write_image(root / "images" / path, rng.integers(0, 255, (112, 112, 3), np.uint8))
        lines.append(f"{path} {k % 4}")
    (root / "train_list.txt").write_text("\n".join(lines) + "\n")
    return root


def tiny_config(faces: Path, **runtime) -> dict:
    cfg = load_config(REPO / "configs" / "_base_" / "default.yaml")
    return merge(cfg, {
        "data": {"train": {"type": "ImageListDataset", "root": str(faces / "images"),
                           "list_file": str(faces / "train_list.txt")},
                 "batch_size": 8, "num_workers": 0},
        "backbone": {"type": "MobileFaceNet", "feat_dim": 64},
        "schedule": {"type": "multistep", "epochs": 2, "milestones": [1], "warmup_epochs": 0.5},
        "runtime": {"device": "cpu", "log_interval": 2, **runtime},
    })


def run_losses(trainer: Trainer) -> list:
    try:
        return [row["loss"] for row in trainer.fit()["history"]]
    finally:
        trainer.close()


def test_resume_equals_uninterrupted(random_faces, tmp_path):
    full = run_losses(Trainer(tiny_config(random_faces), tmp_path / "full"))
    assert len(full) == 12  # 48 images / batch 8 = 6 steps × 2 epochs

    first = run_losses(Trainer(tiny_config(random_faces, max_steps=8), tmp_path / "split"))
    assert first == pytest.approx(full[:8], rel=1e-6)
    checkpoint = load_checkpoint(tmp_path / "split" / "checkpoints" / "last.pt")
    assert checkpoint["global_step"] == 8 and checkpoint["epoch"] == 1 and checkpoint["step_in_epoch"] == 2
    assert checkpoint["config"]["backbone"] == {"type": "MobileFaceNet", "feat_dim": 64}
    assert {"optimizer", "scheduler", "scaler", "rng", "model"} <= set(checkpoint)

    resumed = run_losses(Trainer(tiny_config(random_faces), tmp_path / "split", resume="auto"))
    assert len(resumed) == 4
    assert resumed == pytest.approx(full[8:], rel=1e-5, abs=1e-6)
    assert (tmp_path / "split" / "config.yaml").is_file()


def test_export_and_num_class_from_data(random_faces, tmp_path):
    trainer = Trainer(tiny_config(random_faces, max_steps=1), tmp_path / "run")
    try:
        assert trainer.num_class == 4 and trainer.module.head.weight.shape[0] == 4
        trainer.fit()
        export = trainer.export()
    finally:
        trainer.close()
    meta = yaml.safe_load((export / "model_meta.json").read_text())
    assert meta["arch"] == "MobileFaceNet" and meta["embedding_dim"] == 64
    assert meta["preprocess"]["channel_order"] == "BGR"
    state = load_checkpoint(export / "backbone.pt")
    assert not any(k.startswith(("backbone.", "module.")) for k in state)

    started = Trainer(tiny_config(random_faces, init_weights={"weights": str(export)}), tmp_path / "finetune")
    try:
        loaded = started.module.backbone.state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in state.items())
    finally:
        started.close()
    with pytest.raises(FileNotFoundError, match="init_weights.weights"):
        Trainer(tiny_config(random_faces, init_weights={"weights": str(tmp_path / "nope.pt")}), tmp_path / "x")


def test_head_num_class_in_config_is_rejected(random_faces, tmp_path):
    cfg = tiny_config(random_faces)
    cfg["head"]["num_class"] = 72778
    with pytest.raises(ValueError, match="head.num_class is set by the toolbox"):
        Trainer(cfg, tmp_path / "run")


def test_torchrun_two_process_gloo(random_faces, tmp_path):
    config = tmp_path / "ddp.yaml"
    config.write_text(yaml.safe_dump(tiny_config(random_faces, max_steps=2)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "LOCAL_RANK"))}
    env["OMP_NUM_THREADS"] = "1"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "training_mode.conventional_training.train", str(config), "--work-dir", str(tmp_path / "ddp"),
         "--no-eval"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "batch 8 × 2 ranks" in result.stdout + result.stderr
    checkpoint = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.pt")
    assert checkpoint["global_step"] == 2
    assert not any(k.startswith("module.") for k in checkpoint["model"])
