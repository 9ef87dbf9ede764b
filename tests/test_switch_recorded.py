"""The occlusion switch is recorded: whatever the settings come from (the switch at the top of
data_processor/train_dataset.py, the config, the command line), the resolved values land in the run's config.yaml,
every checkpoint, model_meta.json and results.json, and config.yaml reruns the same whatever the switch says later.

The test edits a COPY of the switch file, as a user edits theirs, and trains through a subprocess that imports the
copy as ``data_processor.train_dataset``; the real file is never written."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from data_processor.train_dataset import OCCLUSION_TYPES, resolve_probabilities, resolved_occlusion
from utils.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
SWITCH = REPO / "data_processor" / "train_dataset.py"
EDITS = {'OCCLUSION_MODE = "mixed"': 'OCCLUSION_MODE = "partial"',
         'OCCLUSION_FILL = "mean"': 'OCCLUSION_FILL = "noise"',
         "FLIP_PROBABILITY = 0.5 ": "FLIP_PROBABILITY = 0.25"}
RUNNER = textwrap.dedent("""
    import importlib.util, sys
    spec = importlib.util.spec_from_file_location("data_processor.train_dataset", sys.argv[1])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    import data_processor
    data_processor.train_dataset = module
    from training_mode.conventional_training.train import main
    raise SystemExit(main(sys.argv[2:]))
""")


def edited_switch(folder: Path) -> Path:
    source = SWITCH.read_text(encoding="utf-8")
    for old, new in EDITS.items():
        assert source.count(old) == 1, f"switch line {old!r} not found once in {SWITCH}"
        source = source.replace(old, new)
    path = folder / "train_dataset.py"
    path.write_text(source, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def switched_run(random_faces, tmp_path_factory):
    base = tmp_path_factory.mktemp("switch")
    digest = hashlib.sha256(SWITCH.read_bytes()).hexdigest()
    switch = edited_switch(base)
    config = base / "run.yaml"
    config.write_text(yaml.safe_dump({
        "_base_": (REPO / "configs" / "_base_" / "default.yaml").as_posix(),
        "data": {"train": {"type": "ImageFolderDataset", "root": str(random_faces / "images")},
                 "occlusion": {"seed": 3},            # the config: only the seed; mode, fill, flip from the switch
                 "batch_size": 4, "num_workers": 0},
        "backbone": {"type": "MobileFaceNet", "width": 0.25, "feat_dim": 32},
        "runtime": {"device": "cpu", "amp": "none", "max_steps": 1, "log_interval": 1},
    }))
    run_dir = base / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", RUNNER, str(switch), str(config), "+data.occlusion.probabilities={partial_upper: 0.5}",
         "--work-dir", str(run_dir), "--no-eval"],  # the command line: one weight
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert hashlib.sha256(SWITCH.read_bytes()).hexdigest() == digest  # the real switch is untouched
    return run_dir


def expected_occlusion() -> dict:
    types, probabilities = resolve_probabilities("partial", {"partial_upper": 0.5})
    return {"mode": "partial", "fill": "noise", "flip_probability": 0.25, "seed": 3, "exclude_families": [],
            "num_views": 1, "probabilities": dict(zip(types, probabilities))}


def check(recorded: dict) -> None:
    expected = expected_occlusion()
    assert set(recorded) == set(expected)
    for key in ("mode", "fill", "flip_probability", "seed", "exclude_families", "num_views"):
        assert recorded[key] == expected[key], key
    assert recorded["probabilities"] == pytest.approx(expected["probabilities"])
    assert sum(recorded["probabilities"].values()) == pytest.approx(1.0)


def test_switch_edit_reaches_every_record_of_the_run(switched_run):
    run_dir = switched_run
    check(json.loads((run_dir / "results.json").read_text())["occlusion"])
    check(json.loads((run_dir / "export" / "model_meta.json").read_text())["extra"]["occlusion"])
    checkpoints = sorted((run_dir / "checkpoints").glob("*.pt"))
    assert checkpoints
    for path in checkpoints:
        state = load_checkpoint(path)
        check(state["occlusion"])
        assert state["trained_families"] == ["partial"]
        assert state["config"]["data"]["occlusion"]["mode"] == "partial"
    occlusion = yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["occlusion"]
    assert occlusion["mode"] == "partial" and occlusion["fill"] == "noise" and occlusion["flip_probability"] == 0.25
    assert set(occlusion["probabilities"]) == set(OCCLUSION_TYPES)  # pinned: every type, 0 where not drawn
    assert occlusion["probabilities"]["mask"] == 0.0


def test_config_yaml_reruns_the_same_under_the_unedited_switch(switched_run):
    dumped = yaml.safe_load((switched_run / "config.yaml").read_text())
    check(resolved_occlusion(dumped["data"]))  # this process has the real switch (mixed, mean, 0.5)
    plain = resolved_occlusion({"occlusion": {"seed": 3}})
    assert plain["mode"] == "mixed" and plain["fill"] == "mean" and plain["flip_probability"] == 0.5


def test_resolved_occlusion_sources():
    assert resolved_occlusion({"occlusion": None}) is None and resolved_occlusion({}) is None
    assert resolved_occlusion({"occlusion": True})["mode"] == "mixed"
    assert resolved_occlusion({"occlusion": {}, "flip": 0.3})["flip_probability"] == 0.3
    resolved = resolved_occlusion({"occlusion": {"exclude_families": ["object", "geometric"], "fill": "zero"}})
    assert resolved["exclude_families"] == ["geometric", "object"] and resolved["fill"] == "zero"
    assert "block" not in resolved["probabilities"]
