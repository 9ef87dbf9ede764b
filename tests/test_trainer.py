"""The Trainer: resume equals an uninterrupted run, checkpoints carry the config, torchrun DDP on CPU (gloo)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from training_mode.trainer import Trainer
from utils.checkpoint import load_checkpoint
from utils.config import load_config, merge

REPO = Path(__file__).resolve().parents[1]


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


def test_init_head_class_means_imprints_normalised_class_means(random_faces, tmp_path):
    trainer = Trainer(tiny_config(random_faces, init_head="class_means", max_steps=1), tmp_path / "run")
    try:
        backbone, weight = trainer.module.backbone.eval(), trainer.module.head.weight.detach()
        with torch.no_grad():
            samples = [trainer.dataset[i] for i in range(len(trainer.dataset))]
            images = torch.stack([sample["image"] for sample in samples])
            labels = torch.tensor([int(sample["label"]) for sample in samples])
            embeddings = torch.nn.functional.normalize(backbone(trainer.module.inputs(images)), dim=1)
        for label in range(4):
            expected = torch.nn.functional.normalize(embeddings[labels == label].mean(0), dim=0)
            assert torch.allclose(weight[label], expected, atol=1e-5)
        assert torch.allclose(weight.norm(dim=1), torch.ones(4))
    finally:
        trainer.close()
    with pytest.raises(ValueError, match="init_head must be random or class_means"):
        Trainer(tiny_config(random_faces, init_head="means"), tmp_path / "bad")


def test_freeze_bn_stats_keeps_running_statistics(random_faces, tmp_path):
    def running_means(trainer):
        return [m.running_mean.clone() for m in trainer.module.modules() if isinstance(m, torch.nn.BatchNorm2d)]

    for frozen in (True, False):
        trainer = Trainer(tiny_config(random_faces, freeze_bn_stats=frozen, max_steps=2), tmp_path / str(frozen))
        try:
            before = running_means(trainer)
            first_conv = next(p for p in trainer.module.backbone.parameters() if p.dim() == 4).detach().clone()
            trainer.fit()
            after = running_means(trainer)
            unchanged = all(torch.equal(a, b) for a, b in zip(before, after))
            assert unchanged == frozen
            assert not torch.equal(first_conv, next(p for p in trainer.module.backbone.parameters() if p.dim() == 4))
        finally:
            trainer.close()


def test_freeze_bn_stats_of_one_submodule_only(random_faces, tmp_path):
    """``freeze_bn_stats: backbone.neck`` keeps that part's statistics; the trunk's BatchNorms keep learning."""
    trainer = Trainer(tiny_config(random_faces, freeze_bn_stats="backbone.neck", max_steps=2), tmp_path / "run")
    try:
        neck = [m for m in trainer.module.backbone.neck.modules()
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        stem = trainer.module.backbone.stem.bn
        before = [m.running_mean.clone() for m in neck], stem.running_mean.clone()
        trainer.fit()
        assert neck and all(torch.equal(m.running_mean, b) for m, b in zip(neck, before[0]))
        assert not torch.equal(stem.running_mean, before[1])
    finally:
        trainer.close()
    with pytest.raises(ValueError, match="freeze_bn_stats: MobileFaceNet has no sub-module 'trunk'"):
        Trainer(tiny_config(random_faces, freeze_bn_stats="backbone.trunk", max_steps=1), tmp_path / "bad")
