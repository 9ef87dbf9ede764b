"""Atomic checkpoints, weights_only loading, prefix handling, RNG state round trip."""
import random

import numpy as np
import pytest
import torch

from utils.checkpoint import (atomic_torch_save, export_backbone, load_backbone_weights, load_checkpoint,
                              normalise_state_dict_keys, strip_prefix)
from utils.seed import capture_rng_state, restore_rng_state


def test_round_trip_weights_only(tmp_path):
    state = {"model": {"w": torch.randn(3, 3)}, "epoch": 2, "config": {"a": [1, 2], "b": None}}
    atomic_torch_save(state, tmp_path / "ck.pt")
    loaded = load_checkpoint(tmp_path / "ck.pt")
    assert torch.equal(loaded["model"]["w"], state["model"]["w"]) and loaded["config"] == state["config"]
    assert not list(tmp_path.glob("*.tmp"))


def test_refuses_arbitrary_pickles(tmp_path):
    torch.save({"obj": object.__new__(torch.nn.Linear)}, tmp_path / "bad.pt")
    with pytest.raises(RuntimeError, match="weights_only=True"):
        load_checkpoint(tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_prefixes_and_strict_loading(tmp_path):
    model = torch.nn.Linear(2, 2)
    wrapped = {f"module.backbone.{k}": v for k, v in model.state_dict().items()}
    clean = strip_prefix(normalise_state_dict_keys(wrapped), "backbone.")
    load_backbone_weights(torch.nn.Linear(2, 2), clean)
    with pytest.raises(RuntimeError, match="missing.*unexpected"):
        load_backbone_weights(torch.nn.Linear(2, 2), {"weight": torch.zeros(2, 2), "extra": torch.zeros(1)})
    export_backbone(model, {"arch": "Linear"}, tmp_path / "export")
    assert (tmp_path / "export" / "model_meta.json").is_file()
    assert set(load_checkpoint(tmp_path / "export" / "backbone.pt")) == {"weight", "bias"}


def test_rng_state_survives_weights_only(tmp_path):
    state = capture_rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    atomic_torch_save({"rng": state}, tmp_path / "rng.pt")
    restore_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
