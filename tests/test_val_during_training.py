"""Validation during training (``eval.interval_steps``): val sets only, every N steps on rank 0, history + TensorBoard,
and ``checkpoints/best.pt`` only when ``eval.select`` names a validation metric."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_processor.synthetic_faces import build_synthetic_faces
from training_mode.trainer import Trainer, write_results
from utils.checkpoint import load_checkpoint
from utils.config import load_config, merge
from utils.registry import ConfigError

REPO = Path(__file__).resolve().parents[1]
TINY = dict(num_train_identities=4, images_per_train_identity=4, num_test_identities=20, images_per_test_identity=2,
            pairs_per_fold=1, num_val_identities=20, images_per_val_identity=2, val_pairs_per_fold=2)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("valdata") / "data"
    build_synthetic_faces(root / "synthetic_faces", seed=0, **TINY)
    patch = pytest.MonkeyPatch()
    patch.setenv("FACE_DATA_ROOT", str(root))
    yield root
    patch.undo()


def tiny_config(data_root: Path, **eval_cfg) -> dict:
    return merge(load_config(REPO / "configs" / "_base_" / "default.yaml"), {
        "data": {"train": {"type": "SyntheticFaceDataset", "root": str(data_root / "synthetic_faces"), **TINY},
                 "batch_size": 8, "num_workers": 0},
        "backbone": {"type": "MobileFaceNet", "feat_dim": 32, "width": 0.25},
        "eval": {"batch_size": 16, **eval_cfg},
        "runtime": {"device": "cpu", "max_steps": 4, "log_interval": 2},
    })


def run(cfg: dict, run_dir: Path) -> dict:
    trainer = Trainer(cfg, run_dir)
    try:
        fit_info = trainer.fit()
        write_results(run_dir, [], fit_info)
    finally:
        trainer.close()
    return fit_info


def test_validates_every_interval_and_keeps_best(data_root, tmp_path):
    cfg = tiny_config(data_root, interval_steps=2, val_protocols=[{"set": "SYNTH-VAL"}],
                      select={"set": "SYNTH-VAL", "metric": "accuracy", "mode": "max"})
    run_dir = tmp_path / "run"
    run(cfg, run_dir)
    history = json.loads((run_dir / "val_history.json").read_text())
    assert [entry["step"] for entry in history] == [2, 4]
    assert all(row["set"] == "SYNTH-VAL" and row["split"] == "val" for entry in history for row in entry["rows"])
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert [event.step for event in events.Scalars("val/SYNTH-VAL/accuracy")] == [2, 4]
    accuracies = [entry["rows"][0]["accuracy"] for entry in history]
    best_step = history[accuracies.index(max(accuracies))]["step"]
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert best["global_step"] == best_step and {"model", "optimizer", "scheduler", "rng"} <= set(best)
    validation = json.loads((run_dir / "results.json").read_text())["validation"]
    assert validation["checkpoint_rule"] == "best" and validation["best"]["step"] == best_step
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["global_step"] == 4


def test_without_select_the_rule_stays_last(data_root, tmp_path):
    run_dir = tmp_path / "run"
    fit_info = run(tiny_config(data_root, interval_steps=4, val_protocols=[{"set": "SYNTH-VAL"}]), run_dir)
    assert [entry["step"] for entry in json.loads((run_dir / "val_history.json").read_text())] == [4]
    assert fit_info["validation"]["checkpoint_rule"] == "last" and fit_info["validation"]["best"] is None
    assert not (run_dir / "checkpoints" / "best.pt").exists()


@pytest.mark.parametrize("entry, message", [
    ({"set": "SYNTH-MASK"}, "val sets only; SYNTH-MASK is split test"),
    ({"set": "LFW-BIN"}, "val sets only; LFW-BIN is split test"),
    ({"name": "MY", "pairs_file": "/nowhere/val.bin", "parser": "bin"}, "add 'split: val'"),
])
def test_a_test_set_is_refused_before_training(data_root, tmp_path, entry, message):
    with pytest.raises(ConfigError, match=message):
        Trainer(tiny_config(data_root, interval_steps=2, val_protocols=[{"set": "SYNTH-VAL"}, entry]),
                tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_bin_given_directly_with_split_val_is_accepted():
    from training_mode.trainer import validation_config

    entry = {"name": "MY-VAL", "pairs_file": "/data/val.bin", "parser": "bin", "split": "val"}
    assert validation_config({"interval_steps": 5, "val_protocols": [entry]}) == (5, [entry], None)
    with pytest.raises(ConfigError, match="eval.select.set"):
        validation_config({"interval_steps": 5, "val_protocols": [entry], "select": {"set": "SYNTH-VAL"}})


def test_interval_zero_changes_nothing_and_validation_leaves_training_alone(data_root, tmp_path):
    run_dir = tmp_path / "run"
    fit_info = run(tiny_config(data_root, val_protocols=[{"set": "SYNTH-MASK"}]), run_dir)  # off: not even checked
    assert not (run_dir / "val_history.json").exists() and "validation" not in fit_info
    assert "validation" not in json.loads((run_dir / "results.json").read_text())
    validated = run(tiny_config(data_root, interval_steps=1, val_protocols=[{"set": "SYNTH-VAL"}]), tmp_path / "val")
    assert [row["loss"] for row in validated["history"]] == [row["loss"] for row in fit_info["history"]]
