"""benchmarks/gfro_real_faces.py: the before/after arithmetic, and a smoke run of the whole machinery on real data
(20 LFW pairs aligned here, occluded sets built from those pairs only, 2 training steps)."""
from __future__ import annotations

import json

import pytest

from benchmarks.gfro_real_faces import comparison, ensure_occluded_sets, main


def test_comparison_deltas_and_occluded_mean() -> None:
    before = {"LFW": {"accuracy": 99.0}, "LFW-MASK": {"accuracy": 80.0}, "LFW-SUNGLASSES": {"accuracy": 90.0},
              "LFW-CROP": {"accuracy": 70.0}}
    after = {"LFW": {"accuracy": 98.7}, "LFW-MASK": {"accuracy": 86.0}, "LFW-SUNGLASSES": {"accuracy": 91.0},
             "LFW-CROP": {"accuracy": 75.0}}
    table = comparison(before, after)
    assert table["LFW"]["delta"] == pytest.approx(-0.3)
    assert table["occluded mean"] == {"untouched": 80.0, "fine_tuned": 84.0, "delta": 4.0}
    assert list(table) == ["LFW", "LFW-MASK", "LFW-SUNGLASSES", "LFW-CROP", "occluded mean"]


@pytest.mark.shared
def test_smoke_two_steps_twenty_pairs(shared, aligned_lfw_subset, tmp_path, monkeypatch) -> None:
    pairs = shared("data/lfw/pairs.txt")
    shared("data/celeba_subset_112/images")
    weights = shared("weights/recognition/foamliu_mobilefacenet_ms1m.pt")
    aligned, subset = aligned_lfw_subset(20)
    shared_root = pairs.parents[2]
    monkeypatch.setenv("FACE_SDK_WEIGHTS_DIR", str(weights.parents[1]))
    occluded = tmp_path / "occluded"
    manifests = ensure_occluded_sets(aligned, subset, occluded, "both", 1)
    assert sorted(manifests) == ["LFW-CROP", "LFW-MASK", "LFW-SUNGLASSES"]
    assert all(m["counts"]["pairs_by_occluded_sides"] == {"0": 0, "1": 0, "2": 20} for m in manifests.values())

    out = tmp_path / "out.json"
    code = main(["--shared", str(shared_root), "--pairs", "20", "--max-steps", "2", "--set", "data.batch_size=8",
                 "--set", "data.num_workers=0",
                 "--set", "runtime.init_head=random",  # imprinting is covered by test_trainer.py
                 "--work-dir", str(tmp_path / "run"), "--occluded-root", str(occluded),
                 "--aligned", str(aligned), "--batch-size", "64", "--json", str(out)])
    assert code == 0  # the bar is only judged on all 6,000 pairs
    payload = json.loads(out.read_text())
    assert payload["pairs"] == 20 and payload["bar"] is None
    assert payload["training"]["steps"] == 2 and payload["training"]["classes"] == 298
    assert (tmp_path / "run" / "export" / "model_meta.json").is_file()
    assert (tmp_path / "run" / "before_after.png").read_bytes()[:4] == b"\x89PNG"
    assert set(payload["comparison"]) == {"LFW", "LFW-MASK", "LFW-SUNGLASSES", "LFW-CROP", "occluded mean"}
    assert payload["comparison"]["LFW"]["untouched"] >= 80.0  # the release is a ~99 % model; 20 pairs are easy
    for row in payload["rows_untouched"] + payload["rows_fine_tuned"]:
        assert row["num_pairs"] == 20 and row["variant"] == "facexzoo"
    # the untouched release's rows are stored beside the run folder, keyed by everything they depend on
    (cache,) = tmp_path.glob("untouched_foamliu_mobilefacenet_ms1m_*.json")
    stored = json.loads(cache.read_text())
    assert list(stored["rows"].values()) == payload["rows_untouched"]
    assert stored["provenance"] == payload["untouched_provenance"]
    assert {"code_sha256", "weights_sha256", "device"} <= set(stored["provenance"])
