"""test_lfw_adapt end to end on a tiny generated set: export, training checkpoint, newest run, JSON and report."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from backbone import build_backbone
from data_processor.image_io import write_image
from data_processor.preprocess import PreprocessSpec
from test_protocol.data_conf import load_data_conf, resolve_path
from test_protocol.test_lfw_adapt import main
from utils.checkpoint import atomic_torch_save, export_backbone
from utils.registry import ConfigError

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "protocols"
BACKBONE = {"type": "MobileFaceNet", "feat_dim": 32, "width": 0.25}
PREPROCESS = PreprocessSpec().to_dict()


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    """$FACE_DATA_ROOT with one tiny LFW-layout set (TINY) and a data_conf naming it plus an absent set (GONE)."""
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    for name in ("Alice", "Bob", "Carol"):
        base = rng.integers(0, 256, (1, 1, 3))
        for i in (1, 2):
            noisy = np.clip(base + rng.normal(0, 10, (112, 112, 3)), 0, 255).astype(np.uint8)
            write_image(root / "tiny" / "images" / name / f"{name}_{i:04d}.png", noisy)
    (root / "tiny" / "pairs.txt").write_bytes((FIXTURES / "lfw_pairs_6.txt").read_bytes())
    conf = {"sets": {
        "TINY": {"root": "tiny/images", "pairs_file": "tiny/pairs.txt", "parser": "lfw", "image_ext": ".png"},
        "GONE": {"root": "gone/images", "pairs_file": "gone/pairs.txt", "parser": "lfw"},
    }}
    (tmp_path / "data_conf.yaml").write_text(yaml.safe_dump(conf, sort_keys=False))
    monkeypatch.setenv("FACE_DATA_ROOT", str(root))
    return tmp_path


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_backbone(dict(BACKBONE)).eval()


def write_export(folder: Path) -> Path:
    backbone_cfg = dict(BACKBONE)
    meta = {"arch": backbone_cfg.pop("type"), "kwargs": backbone_cfg, "embedding_dim": 32, "preprocess": PREPROCESS}
    return export_backbone(make_model(), meta, folder)


def write_training_checkpoint(path: Path) -> Path:
    model = make_model()
    state = {f"backbone.{k}": v for k, v in model.state_dict().items()}
    state["head.weight"] = torch.zeros(3, 32)
    atomic_torch_save({"config": {"backbone": dict(BACKBONE), "data": {"preprocess": PREPROCESS}}, "model": state},
                      path)
    return path


def test_data_conf_paths_resolve_against_the_environment(data_root, monkeypatch):
    monkeypatch.setenv("SHARED_ROOT", "/elsewhere/shared")
    roots = {"FACE_DATA_ROOT": Path("/data"), "SHARED_ROOT": Path("/elsewhere/shared")}
    assert resolve_path("lfw_aligned", roots, "x") == "/data/lfw_aligned"
    assert resolve_path("${SHARED_ROOT}/data/lfw/pairs.txt", roots, "x") == "/elsewhere/shared/data/lfw/pairs.txt"
    assert resolve_path("/abs/path", roots, "x") == "/abs/path"  # a user's data lives wherever they keep it
    with pytest.raises(ConfigError, match=r"got '\$HOME/x'"):
        resolve_path("$HOME/x", roots, "x")
    with pytest.raises(ConfigError, match=r"unknown variable \$\{HOME\}"):
        resolve_path("${HOME}/x", roots, "x")
    entries = load_data_conf(data_root / "data_conf.yaml", ["TINY"])
    assert entries[0]["root"] == str(data_root / "data" / "tiny" / "images")
    with pytest.raises(ConfigError, match="unknown set"):
        load_data_conf(data_root / "data_conf.yaml", ["LFW"])


def test_shipped_data_conf_has_no_absolute_paths():
    raw = yaml.safe_load((REPO / "test_protocol" / "data_conf.yaml").read_text())["sets"]
    assert {"SYNTH", "SYNTH-MASK", "SYNTH-SUNGLASSES", "SYNTH-CROP", "LFW", "LFW-MASK", "LFW-SUNGLASSES", "LFW-CROP",
            "CALFW-SUNGLASSES", "CPLFW", "CPLFW-CROP", "MEGLASS"} <= set(raw)
    for entry in raw.values():
        for key in ("root", "pairs_file", "lists_dir"):
            assert key not in entry or not Path(entry[key]).is_absolute()
    assert len(load_data_conf()) == len(raw)


def test_training_checkpoint_and_json(data_root, capsys):
    checkpoint = write_training_checkpoint(data_root / "last.pt")
    main(["--checkpoint", str(checkpoint), "--data-conf", str(data_root / "data_conf.yaml"),
          "--json", str(data_root / "out.json"), "--device", "cpu"])
    table = capsys.readouterr().out
    assert "TINY" in table and "facexzoo" in table and "insightface" in table
    assert "GONE" in table and "not available" in table
    payload = json.loads((data_root / "out.json").read_text())
    rows = payload["rows"]
    assert [(row["set"], row["variant"]) for row in rows] == [("TINY", "facexzoo"), ("TINY", "insightface"),
                                                              ("GONE", "facexzoo"), ("GONE", "insightface")]
    assert rows[0]["checkpoint"] == str(checkpoint) and "last checkpoint" in payload["rule"]


def test_newest_run_prefers_its_export(data_root, capsys):
    work_dirs = data_root / "work_dirs"
    write_training_checkpoint(work_dirs / "old" / "checkpoints" / "last.pt")
    os.utime(work_dirs / "old" / "checkpoints" / "last.pt", (1, 1))
    write_training_checkpoint(work_dirs / "new" / "checkpoints" / "last.pt")
    write_export(work_dirs / "new" / "export")
    main(["--work-dirs", str(work_dirs), "--data-conf", str(data_root / "data_conf.yaml"), "--sets", "TINY",
          "--variant", "insightface", "--json", str(data_root / "out.json")])
    rows = json.loads((data_root / "out.json").read_text())["rows"]
    assert len(rows) == 1 and rows[0]["checkpoint"] == str(work_dirs / "new" / "export" / "backbone.pt")


def test_no_run_is_a_clear_error(data_root):
    with pytest.raises(FileNotFoundError, match="no trained run under .*bash run.sh"):
        main(["--work-dirs", str(data_root / "nothing"), "--data-conf", str(data_root / "data_conf.yaml")])


def test_shell_script_with_export_and_report(data_root):
    """The .sh as a user runs it (a fresh process), writing the markdown report with its PNGs."""
    export = write_export(data_root / "export")
    env = {**os.environ, "FACE_DATA_ROOT": str(data_root / "data")}
    result = subprocess.run(["bash", "test_protocol/test_lfw_adapt.sh", "--export", str(export), "--data-conf",
                             str(data_root / "data_conf.yaml"), "--report", str(data_root / "report")],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "TINY" in result.stdout and "insightface" in result.stdout and "checkpoint rule" in result.stderr
    report = (data_root / "report" / "report.md").read_text()
    assert "| TINY | test | clean | facexzoo |" in report and "roc_facexzoo.png" in report
    for png in ("roc_facexzoo.png", "roc_insightface.png", "accuracy_by_set.png"):
        assert (data_root / "report" / png).read_bytes()[:4] == b"\x89PNG"


def test_eval_protocols_can_name_data_conf_sets(tmp_path, monkeypatch):
    """``{set: NAME}`` in eval.protocols resolves the shipped data_conf entry (here: absent → not available)."""
    from test_protocol.evaluate import evaluate_model

    monkeypatch.setenv("FACE_DATA_ROOT", str(tmp_path))
    rows = evaluate_model(make_model(), PreprocessSpec(), [{"set": "LFW-MASK", "variant": "both"},
                                                           {"set": "MEGLASS"}], "cpu")
    assert [(row["set"], row["variant"]) for row in rows] == [("LFW-MASK", "facexzoo"), ("LFW-MASK", "insightface"),
                                                              ("MEGLASS", "-")]
    assert rows[0]["status"] == f"not available: {tmp_path / 'lfw_occluded' / 'mask' / 'images'} missing"


def test_onnx_export_is_scored_like_its_pytorch_weights(data_root):
    pytest.importorskip("onnxruntime")
    from utils.export_onnx import main as export_main

    export = write_export(data_root / "export")
    assert export_main(["--export-dir", str(export), "--out", str(data_root / "onnx"), "--no-parity"]) == 0
    common = ["--data-conf", str(data_root / "data_conf.yaml"), "--sets", "TINY", "--variant", "insightface"]
    main(["--export", str(export), *common, "--json", str(data_root / "torch.json")])
    main(["--onnx", str(data_root / "onnx"), *common, "--json", str(data_root / "onnx.json")])
    (torch_row,), (onnx_row,) = (json.loads((data_root / f"{name}.json").read_text())["rows"]
                                 for name in ("torch", "onnx"))
    assert onnx_row["checkpoint"] == str(data_root / "onnx" / "model.onnx")
    assert onnx_row["accuracy"] == torch_row["accuracy"] and onnx_row["auc"] == pytest.approx(torch_row["auc"])


def test_onnx_without_its_meta_is_a_clear_error(data_root):
    (data_root / "lonely").mkdir()
    (data_root / "lonely" / "model.onnx").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="model_meta.json is missing"):
        main(["--onnx", str(data_root / "lonely"), "--data-conf", str(data_root / "data_conf.yaml")])
