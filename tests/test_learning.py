"""Learning on the embedded synthetic faces: training lifts pair accuracy far above chance; too little training
stays clearly below 100 %. Figures, not just "it ran"."""
from pathlib import Path

import pytest
import torch

from data_processor.synthetic_faces import build_synthetic_faces
from test_protocol.evaluate import evaluate_model
from training_mode.trainer import Trainer
from utils.config import load_config, merge

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_faces(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    build_synthetic_faces(root, num_train_identities=40, images_per_train_identity=12, num_test_identities=40,
                          images_per_test_identity=6, pairs_per_fold=15, seed=3)
    return root


def train_and_score(faces, run_dir, steps: int) -> float:
    cfg = merge(load_config(REPO / "configs" / "embedded_arcface.yaml"), {
        "data": {"train": {"type": "ImageListDataset", "root": str(faces / "train" / "images"),
                           "list_file": str(faces / "train" / "train_list.txt")},
                 "batch_size": 32, "num_workers": 0},
        "backbone": {"type": "MobileFaceNet", "width": 0.5, "feat_dim": 128},
        "schedule": {"type": "cosine", "epochs": 4, "warmup_epochs": 0.5, "min_lr_ratio": 0.05},
        "runtime": {"device": "cpu", "max_steps": steps, "log_interval": 10},
    })
    trainer = Trainer(cfg, run_dir)
    try:
        if steps:
            trainer.fit()
        protocol = {"name": "SMALL", "root": str(faces / "test" / "images"),
                    "pairs_file": str(faces / "test" / "pairs.txt"), "parser": "lfw", "image_ext": ".png"}
        rows = evaluate_model(trainer.module.embedding_model(), trainer.spec, [protocol], torch.device("cpu"))
    finally:
        trainer.close()
    return rows[0]["accuracy"]


def test_training_beats_chance_and_untrained(small_faces, tmp_path):
    untrained = train_and_score(small_faces, tmp_path / "untrained", steps=0)
    trained = train_and_score(small_faces, tmp_path / "trained", steps=60)
    print(f"pair accuracy: untrained {untrained:.1f} %, trained 60 steps {trained:.1f} %")
    assert trained >= 75.0, trained          # chance is 50 %
    assert trained >= untrained + 5.0, (untrained, trained)
    assert untrained < 95.0, untrained       # an untrained network does not solve the task
