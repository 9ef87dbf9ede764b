"""Seen / held-out everywhere: a run records its trained occluder families (results.json, model_meta.json,
checkpoints) and every evaluation row — the Trainer's and test_lfw_adapt's, one code path — says its split, whether
the set's occluders are clean / seen / held_out for the model, and carries hidden-fraction bins."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_processor.synthetic_faces import build_synthetic_faces
from data_processor.train_dataset import trained_families
from test_protocol.evaluate import format_table
from test_protocol.robustness import binned_accuracy
from test_protocol.test_lfw_adapt import main as adapt_main
from training_mode.trainer import Trainer, write_results
from utils.checkpoint import load_checkpoint
from utils.config import load_config, merge

REPO = Path(__file__).resolve().parents[1]
TINY = dict(num_train_identities=4, images_per_train_identity=4, num_test_identities=20, images_per_test_identity=3,
            pairs_per_fold=3, num_val_identities=20, images_per_val_identity=3, val_pairs_per_fold=3)
SETS = ["SYNTH", "SYNTH-CROP", "SYNTH-MASK", "SYNTH-VAL-ART"]
EXPECTED = {"SYNTH": ("clean", [], "test"), "SYNTH-CROP": ("seen", ["partial"], "test"),
            "SYNTH-MASK": ("held_out", ["lower_accessory"], "test"),
            "SYNTH-VAL-ART": ("held_out", ["user_art"], "val")}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A one-step run with mode partial on tiny embedded faces under its own $FACE_DATA_ROOT, exported and
    evaluated on a clean, a seen, a held-out and a validation set."""
    base = tmp_path_factory.mktemp("heldout")
    data_root = base / "data"
    build_synthetic_faces(data_root / "synthetic_faces", seed=0, **TINY)
    patch = pytest.MonkeyPatch()
    patch.setenv("FACE_DATA_ROOT", str(data_root))
    cfg = merge(load_config(REPO / "configs" / "_base_" / "default.yaml"), {
        "data": {"train": {"type": "SyntheticFaceDataset", "root": str(data_root / "synthetic_faces"), **TINY},
                 "occlusion": {"mode": "partial", "seed": 0}, "batch_size": 8, "num_workers": 0},
        "backbone": {"type": "MobileFaceNet", "feat_dim": 32, "width": 0.25},
        "training_mode": {"type": "ConventionalTraining", "input_key": "noisy"},
        "eval": {"protocols": [{"set": name} for name in SETS]},
        "runtime": {"device": "cpu", "max_steps": 1, "log_interval": 1},
    })
    run_dir = base / "run"
    trainer = Trainer(cfg, run_dir)
    try:
        fit_info = trainer.fit()
        export = trainer.export()
        rows = trainer.evaluate()
        write_results(run_dir, rows, fit_info)
    finally:
        trainer.close()
    yield run_dir, export, rows, base
    patch.undo()


def check_rows(rows, expect_bins: bool = True):
    by_set = {row["set"]: row for row in rows}
    assert set(by_set) == set(EXPECTED)
    for name, (tag, families, split) in EXPECTED.items():
        row = by_set[name]
        assert (row["occluders"], row["occluder_families"], row["split"]) == (tag, families, split), name
        if tag == "clean":
            assert "hidden_fraction_bins" not in row
        elif expect_bins:
            bins = row["hidden_fraction_bins"]
            assert sum(b["pairs"] for b in bins) == row["num_pairs"]
            assert binned_accuracy(bins) == pytest.approx(row["accuracy"])


def test_run_records_trained_families_everywhere(trained_run):
    run_dir, export, _, _ = trained_run
    assert json.loads((run_dir / "results.json").read_text())["trained_families"] == ["partial"]
    assert json.loads((export / "model_meta.json").read_text())["trained_families"] == ["partial"]
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["trained_families"] == ["partial"]
    from face_sdk.model_meta import read_model_meta

    assert read_model_meta(export / "model_meta.json").provenance["trained_families"] == ["partial"]


def test_trainer_rows_say_seen_for_crop_and_held_out_for_mask(trained_run):
    _, _, rows, _ = trained_run
    check_rows(rows)
    table = format_table(rows)
    header = table.splitlines()[0].split()
    assert header[:4] == ["set", "split", "occluders", "variant"]
    assert "held_out" in table and "seen" in table and " val " in table


@pytest.mark.parametrize("source", ["export", "checkpoint"])
def test_test_lfw_adapt_tags_rows_the_same_way(trained_run, source, capsys):
    run_dir, export, trainer_rows, base = trained_run
    model = ["--export", str(export)] if source == "export" else [
        "--checkpoint", str(run_dir / "checkpoints" / "last.pt")]
    out = base / f"adapt_{source}.json"
    adapt_main([*model, "--sets", ",".join(SETS), "--variant", "facexzoo", "--device", "cpu", "--json", str(out)])
    payload = json.loads(out.read_text())
    assert payload["trained_families"] == ["partial"]
    check_rows(payload["rows"])
    by_set = {row["set"]: row for row in trainer_rows}
    for row in payload["rows"]:
        assert row["accuracy"] == pytest.approx(by_set[row["set"]]["accuracy"])
        assert row.get("hidden_fraction_bins") == by_set[row["set"]].get("hidden_fraction_bins")
    assert "held_out" in capsys.readouterr().out


def test_a_model_without_recorded_families_is_unknown_on_occluded_sets(trained_run, tmp_path):
    _, export, _, _ = trained_run
    meta = json.loads((export / "model_meta.json").read_text())
    del meta["trained_families"]
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "backbone.pt").write_bytes((export / "backbone.pt").read_bytes())
    (bare / "model_meta.json").write_text(json.dumps(meta))
    adapt_main(["--export", str(bare), "--sets", "SYNTH,SYNTH-MASK", "--variant", "insightface", "--device", "cpu",
                "--json", str(tmp_path / "out.json")])
    rows = {row["set"]: row for row in json.loads((tmp_path / "out.json").read_text())["rows"]}
    assert rows["SYNTH"]["occluders"] == "clean" and rows["SYNTH-MASK"]["occluders"] == "unknown"
    assert binned_accuracy(rows["SYNTH-MASK"]["hidden_fraction_bins"]) == pytest.approx(rows["SYNTH-MASK"]["accuracy"])


def test_presets_train_partial_by_default_and_never_on_user_art():
    for path in [*sorted((REPO / "configs" / "gfro").glob("*.yaml")), REPO / "configs" / "embedded_arcface.yaml"]:
        cfg = load_config(path)
        families = trained_families(cfg["data"].get("occlusion"))
        assert "user_art" not in families, path.name
        assert "user_art" not in trained_families(merge(cfg["data"].get("occlusion") or {}, {"mode": "mixed"}))
    for name in ("embedded_cpu", "celeba_finetune_mobilefacenet"):
        cfg = load_config(REPO / "configs" / "gfro" / f"{name}.yaml")
        assert trained_families(cfg["data"]["occlusion"]) == ["partial"] and cfg["data"]["flip"] == 0.5
        seen = load_config(REPO / "configs" / "gfro" / f"{name}.yaml", ["data.occlusion.mode=mixed"])
        assert {"partial", "geometric", "lower_accessory", "upper_accessory"} <= set(
            trained_families(seen["data"]["occlusion"]))
    arcface = load_config(REPO / "configs" / "embedded_arcface.yaml")
    assert arcface["data"]["flip"] == 0.5 and trained_families(arcface["data"].get("occlusion")) == []
    embedded = load_config(REPO / "configs" / "gfro" / "embedded_cpu.yaml")
    listed = {protocol["set"] for protocol in embedded["eval"]["protocols"]}
    assert {"SYNTH", "SYNTH-CROP", "SYNTH-BLOCK", "SYNTH-MASK", "SYNTH-SUNGLASSES", "SYNTH-GLASSES", "SYNTH-HAT",
            "SYNTH-SCARF", "SYNTH-HAND", "SYNTH-OBJECT", "SYNTH-CROWD"} <= listed
