"""Evaluate anyone's weights: ``test_lfw_adapt --weights X --arch A --preprocess P [--bin a.bin]``.

The ../shared check: a released MobileFaceNet scored by the one-line command (on a .bin this test writes from real
aligned LFW pairs, and on the same pairs as an image folder) gives exactly the accuracy of its converter path.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from backbone import build_backbone
from data_processor.image_io import encode_image
from data_processor.preprocess import (
    FACEXZOO_SPEC,
    INSIGHTFACE_SPEC,
    PREPROCESS_PRESETS,
    PreprocessSpec,
    parse_preprocess,
)
from data_processor.verification_bin import write_verification_bin
from test_protocol import test_lfw_adapt
from test_protocol.model_loading import WeightsMismatchError, load_foreign_weights, strip_wrapper_prefixes

TINY = {"type": "MobileFaceNet", "feat_dim": 16, "width": 0.25}


def tiny_model():
    torch.manual_seed(0)
    return build_backbone(dict(TINY)).eval()


def test_presets_and_spec_strings():
    assert PREPROCESS_PRESETS["insightface"] == INSIGHTFACE_SPEC == PreprocessSpec("RGB", (127.5,), (127.5,))
    assert PREPROCESS_PRESETS["facexzoo"] == FACEXZOO_SPEC == PreprocessSpec("BGR", (127.5,), (128.0,))
    assert parse_preprocess("insightface") == INSIGHTFACE_SPEC
    spec = parse_preprocess("facexzoo,channel_order=RGB,input_size=112x96,template=sphereface_112x96")
    assert spec == PreprocessSpec("RGB", (127.5,), (128.0,), (112, 96), "sphereface_112x96")
    assert parse_preprocess("mean=1/2/3,std=4") == PreprocessSpec("RGB", (1, 2, 3), (4,))
    assert parse_preprocess('{"channel_order": "BGR"}') == PreprocessSpec("BGR")
    with pytest.raises(ValueError, match="unknown preset 'vggface'"):
        parse_preprocess("vggface")
    with pytest.raises(ValueError, match="key=value"):
        parse_preprocess("insightface,colour=RGB")


def test_prefixes_are_removed_only_when_every_key_has_them():
    state = OrderedDict([("module.backbone.a", torch.zeros(1)), ("module.backbone.b", torch.zeros(1))])
    assert strip_wrapper_prefixes(state)[:2] == ({"a": state["module.backbone.a"], "b": state["module.backbone.b"]},
                                                 ["module.", "backbone."])
    mixed = {"features.weight": torch.zeros(1), "conv1.weight": torch.zeros(1)}  # IResNet's own features.* BN
    assert list(strip_wrapper_prefixes(mixed)[0]) == ["features.weight", "conv1.weight"]
    checkpoint = {"backbone.a": torch.zeros(1), "head.weight": torch.zeros(1)}
    stripped, _, dropped = strip_wrapper_prefixes(checkpoint)
    assert list(stripped) == ["a"] and dropped == ["head.weight"]


@pytest.mark.parametrize("prefix,entry", [("module.", None), ("backbone.", "state_dict"), ("features.", "model")])
def test_wrapped_weights_load_exactly(tmp_path, prefix, entry):
    model = tiny_model()
    state = {prefix + k: v for k, v in model.state_dict().items()}
    torch.save({entry: state, "epoch": 3} if entry else state, tmp_path / "w.pth")
    loaded = load_foreign_weights(tmp_path / "w.pth", "MobileFaceNet", INSIGHTFACE_SPEC,
                                  {"feat_dim": 16, "width": 0.25})
    x = torch.randn(2, 3, 112, 112)
    assert torch.equal(loaded.model(x), model(x))
    assert loaded.load_report["status"] == "all keys loaded" and loaded.load_report["prefixes_removed"][0] == prefix


def test_mismatch_is_an_error_listing_keys_unless_non_strict(tmp_path):
    state = dict(tiny_model().state_dict())
    dropped = next(k for k in state if k.endswith(".weight"))
    del state[dropped]
    state["extra.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "w.pth")
    kwargs = {"feat_dim": 16, "width": 0.25}
    with pytest.raises(WeightsMismatchError) as error:
        load_foreign_weights(tmp_path / "w.pth", "MobileFaceNet", INSIGHTFACE_SPEC, kwargs)
    assert dropped in str(error.value) and "extra.weight" in str(error.value) and "--non-strict" in str(error.value)
    loaded = load_foreign_weights(tmp_path / "w.pth", "MobileFaceNet", INSIGHTFACE_SPEC, kwargs, strict=False)
    report = loaded.load_report
    assert report["missing"] == [dropped] and report["unexpected"] == ["extra.weight"]
    assert report["status"].startswith("NON-STRICT") and report["loaded"] == report["expected"] - 1
    with pytest.raises(WeightsMismatchError, match=r"shape mismatch 6: \[.neck.bn_embedding.bias \(16,\) != \(32,\)"):
        torch.save(tiny_model().state_dict(), tmp_path / "ok.pth")
        load_foreign_weights(tmp_path / "ok.pth", "MobileFaceNet", INSIGHTFACE_SPEC, {"feat_dim": 32, "width": 0.25})


def test_cli_weights_and_bin_on_a_written_bin(tmp_path, capsys):
    model = tiny_model()
    torch.save({"module." + k: v for k, v in model.state_dict().items()}, tmp_path / "w.pth")
    rng = np.random.default_rng(0)
    faces = [rng.integers(0, 255, (112, 112, 3), np.uint8) for _ in range(4)]
    # 20 pairs, image 2i and 2i+1; same pairs show one face twice
    images, issame = [], []
    for i in range(20):
        a, b = (i % 4, i % 4) if i % 2 == 0 else (i % 4, (i + 1) % 4)
        images += [encode_image(faces[a], ".png"), encode_image(faces[b], ".png")]
        issame.append(a == b)
    write_verification_bin(tmp_path / "tiny.bin", images, issame)
    code = test_lfw_adapt.main(["--weights", str(tmp_path / "w.pth"), "--arch", "MobileFaceNet", "--arch-kwargs",
                                '{"feat_dim": 16, "width": 0.25}', "--preprocess", "facexzoo", "--bin",
                                str(tmp_path / "tiny.bin"), "--device", "cpu", "--json", str(tmp_path / "r.json"),
                                "--report", str(tmp_path / "report")])
    assert code == 0
    payload = json.loads((tmp_path / "r.json").read_text())
    assert [(r["set"] if "set" in r else r["name"], r["variant"]) for r in payload["rows"]] == \
        [("tiny", "facexzoo"), ("tiny", "insightface")]
    assert all(r["auc"] == 1.0 and r["num_pairs"] == 20 for r in payload["rows"])
    assert payload["load_report"]["prefixes_removed"] == ["module."]
    assert payload["preprocess"] == FACEXZOO_SPEC.to_dict()
    assert "tiny" in capsys.readouterr().out
    assert "weights: all keys loaded" in (tmp_path / "report" / "report.md").read_text()


def test_cli_argument_errors(tmp_path):
    with pytest.raises(SystemExit):
        test_lfw_adapt.parse_args(["--weights", "x.pth"])  # no --arch / --preprocess
    with pytest.raises(SystemExit):
        test_lfw_adapt.parse_args(["--arch", "IResNet50"])
    with pytest.raises(FileNotFoundError, match="--bin .*nope.bin: no such file"):
        test_lfw_adapt.main(["--weights", "x.pth", "--arch", "IResNet50", "--preprocess", "insightface",
                             "--bin", str(tmp_path / "nope.bin")])


def test_downloadable_benchmark_sets_are_in_data_conf(tmp_path, monkeypatch):
    from test_protocol.data_conf import load_data_conf
    from test_protocol.evaluate import build_protocols

    monkeypatch.setenv("FACE_DATA_ROOT", str(tmp_path))
    bins = ["LFW-BIN", "CFP-FF-BIN", "CFP-FP-BIN", "AGEDB-30-BIN", "CALFW-BIN", "CPLFW-BIN", "VGG2-FP-BIN"]
    entries = load_data_conf(None, bins + ["CALFW", "CPLFW", "AGEDB-30"])
    assert all(e["parser"] == "bin" and e["pairs_file"].startswith(str(tmp_path)) for e in entries[:len(bins)])
    assert [e["parser"] for e in entries[len(bins):]] == ["calfw", "cplfw", "agedb_mat"]
    rows = build_protocols(entries)
    assert all(isinstance(r, dict) and r["status"].startswith("not available") for r in rows)


# ---------------------------------------------------------------- ../shared: one-line path == converter path
@pytest.mark.shared
@pytest.mark.slow
def test_released_models_one_line_equals_converter_path(shared, aligned_lfw_subset, tmp_path):
    from face_sdk.released import RELEASED_RECOGNIZERS, load_released_recognizer
    from test_protocol import PROTOCOLS
    from test_protocol.evaluate import evaluate_model

    releases = [("bubbliiiing_mobilefacenet_casia", "MobileFaceNetGDC", "insightface"),
                ("foamliu_mobilefacenet_ms1m", "MobileFaceNetReLU6", "imagenet")]
    files = {name: shared("weights/" + RELEASED_RECOGNIZERS[name].file) for name, _, _ in releases}
    aligned, subset = aligned_lfw_subset(20)  # 10 folds x (1 same + 1 different), real LFW
    folder = {"name": "LFW20", "root": str(aligned), "pairs_file": str(subset), "parser": "lfw", "variant": "both"}
    protocol = PROTOCOLS.build({"type": "PairVerification", **{k: v for k, v in folder.items() if k != "variant"}})
    paths = protocol.image_paths()
    order = np.stack([protocol.pairs.first, protocol.pairs.second], axis=1).reshape(-1)
    write_verification_bin(tmp_path / "lfw20.bin", [Path(paths[i]).read_bytes() for i in order],
                           protocol.pairs.issame.tolist())  # the crops' own bytes: identical pixels
    (tmp_path / "conf.yaml").write_text(
        f"sets:\n  LFW20:\n    root: {aligned}\n    pairs_file: {subset}\n    parser: lfw\n")
    figures = {}
    for name, arch, preset in releases:
        model, meta = load_released_recognizer(files[name])  # the converter path
        assert parse_preprocess(preset) == meta.preprocess
        reference = evaluate_model(model, meta.preprocess, [folder], "cpu", 64)
        out = tmp_path / f"{name}.json"
        assert test_lfw_adapt.main(["--weights", str(files[name]), "--arch", arch, "--arch-kwargs",
                                    '{"feat_dim": 128}', "--preprocess", preset, "--data-conf",
                                    str(tmp_path / "conf.yaml"), "--sets", "LFW20", "--bin",
                                    str(tmp_path / "lfw20.bin"), "--device", "cpu", "--json", str(out)]) == 0
        payload = json.loads(out.read_text())
        assert payload["load_report"]["converter"].endswith(name) and payload["load_report"]["missing"] == []
        rows = payload["rows"]
        assert [(r["set"], r["variant"]) for r in rows] == [("LFW20", "facexzoo"), ("LFW20", "insightface"),
                                                           ("lfw20", "facexzoo"), ("lfw20", "insightface")]
        for row in rows:
            ref = next(r for r in reference if r["variant"] == row["variant"])
            assert row["num_pairs"] == ref["num_pairs"] == 20
            assert row["accuracy"] == ref["accuracy"] and row["auc"] == pytest.approx(ref["auc"], abs=1e-9), (row, ref)
        figures[name] = {"converter": {r["variant"]: r["accuracy"] for r in reference},
                         "one_line": {(r["set"], r["variant"]): r["accuracy"] for r in rows}}
        assert min(r["accuracy"] for r in rows) >= 85.0, figures
    print(figures)
