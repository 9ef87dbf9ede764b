"""Restricted unpickler and released-weight converters (face_sdk.restricted_pickle, face_sdk.weights/released)."""
from __future__ import annotations

import os
import pickle
import subprocess

import pytest
import torch
from torch import nn

from face_sdk.restricted_pickle import ModuleStub, load_pickled_module_state_dict, restricted_load, restricted_loads
from face_sdk.weights import WeightConversionError, convert_state_dict


class _RunsShell:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _SpawnsProcess:
    def __reduce__(self):
        return (subprocess.Popen, (["true"],))


class _Evaluates:
    def __reduce__(self):
        return (eval, ("1 + 1",))


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("payload, refused", [
    (_RunsShell("true"), "(posix|os).system"),
    (_SpawnsProcess(), "(subprocess|commands).Popen"),  # protocol 2 writes Python-2 module names
    (_Evaluates(), "(builtins|__builtin__).eval"),
])
def test_restricted_unpickler_refuses_foreign_globals(payload, refused, protocol):
    data = pickle.dumps({"weights": payload}, protocol=protocol)
    with pytest.raises(pickle.UnpicklingError, match=f"refused global '{refused}'"):
        restricted_loads(data)


def test_refused_pickle_never_runs_its_payload(tmp_path):
    marker = tmp_path / "pwned"
    model = nn.Sequential(nn.Linear(2, 2))
    model.evil = _RunsShell(f"touch {marker}")  # smuggled into a module's __dict__
    path = tmp_path / "evil.pt"
    torch.save(model, path)
    with pytest.raises(pickle.UnpicklingError, match="refused global"):
        restricted_load(path)
    assert not marker.exists()


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_whole_module_pickle_gives_exact_state_dict(tmp_path, zip_format):
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.LeakyReLU(0.1), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 5))
    model[1].running_mean.uniform_()
    path = tmp_path / "module.pkl"
    torch.save(model, path, _use_new_zipfile_serialization=zip_format)
    root = restricted_load(path)
    assert isinstance(root, ModuleStub) and root.pickled_class == "torch.nn.modules.container.Sequential"
    recovered = load_pickled_module_state_dict(path)
    expected = model.state_dict()
    assert list(recovered) == list(expected)
    for key, tensor in expected.items():
        assert torch.equal(recovered[key], tensor), key


def test_facexzoo_detector_pickle_loads_into_our_retinaface(shared):
    from face_sdk.released import RELEASED_DETECTORS, load_detector_state_dict
    from face_sdk.retinaface import RetinaFace

    path = shared("weights/detection/facexzoo_face_detection_retina_mnet025.pkl")
    source = load_pickled_module_state_dict(path)
    assert len(source) == 300
    network = RetinaFace(negative_slope=RELEASED_DETECTORS["facexzoo_mnet025"].config.negative_slope)
    converted = load_detector_state_dict(path, network)
    network.load_state_dict(converted, strict=True)
    assert torch.equal(network.state_dict()["trunk.stage1.0.conv.weight"], source["body.stage1.0.0.weight"])
    # the activation recorded in the pickled modules is the one our config declares
    slopes = set()

    def walk(stub):
        if stub.pickled_class.endswith("LeakyReLU"):
            slopes.add(stub.state["negative_slope"])
        for child in stub.state.get("_modules", {}).values():
            walk(child)

    walk(restricted_load(path))
    assert slopes == {RELEASED_DETECTORS["facexzoo_mnet025"].config.negative_slope}


def test_detector_converter_is_exact_for_both_releases(shared):
    from face_sdk.released import RELEASED_DETECTORS, read_state_dict
    from face_sdk.retinaface import RetinaFace
    from face_sdk.weights import RETINAFACE_RULES, map_keys

    for name, release in RELEASED_DETECTORS.items():
        path = shared(f"weights/{release.file}")
        source = load_pickled_module_state_dict(path) if path.suffix == ".pkl" else read_state_dict(path)
        network = RetinaFace(negative_slope=release.config.negative_slope)
        network.load_state_dict(convert_state_dict(source, RETINAFACE_RULES, network, name), strict=True)
        loaded = network.state_dict()
        for key, target in map_keys(list(source), RETINAFACE_RULES, name).items():
            assert torch.equal(loaded[target], source[key].reshape(loaded[target].shape)), (name, key)


@pytest.mark.parametrize("name", ["foamliu_mobilefacenet_ms1m", "xiaoccer_mobilefacenet_casia",
                                  "bubbliiiing_mobilefacenet_casia"])
def test_recognizer_converters_copy_every_tensor_exactly(shared, name):
    from face_sdk.released import RELEASED_RECOGNIZERS, convert_released_recognizer

    shared(f"weights/{RELEASED_RECOGNIZERS[name].file}")
    backbone, meta, source, mapping = convert_released_recognizer(name)
    loaded = backbone.state_dict()
    assert len(mapping) == len(source) == len(loaded)
    assert sorted(mapping.values()) == sorted(loaded)
    for key, target in mapping.items():
        assert loaded[target].dtype == source[key].dtype
        assert torch.equal(loaded[target], source[key]), (key, target)
    out = backbone(torch.randn(2, 3, *meta.preprocess.input_size))
    assert out.shape == (2, meta.embedding_dim) and torch.isfinite(out).all()


def test_converter_reports_missing_and_unexpected_keys(shared):
    from face_sdk.released import RELEASED_RECOGNIZERS, convert_released_recognizer, read_state_dict

    release = RELEASED_RECOGNIZERS["foamliu_mobilefacenet_ms1m"]
    source = read_state_dict(shared(f"weights/{release.file}"))
    backbone, _, _, _ = convert_released_recognizer("foamliu_mobilefacenet_ms1m")
    incomplete = dict(source)
    incomplete.pop("conv3.bias")
    with pytest.raises(WeightConversionError, match="neck.embedding.conv.bias"):
        convert_state_dict(incomplete, release.rules, backbone, "incomplete")
    extra = dict(source, **{"fc.weight": torch.zeros(3)})
    with pytest.raises(WeightConversionError, match="fc.weight"):
        convert_state_dict(extra, release.rules, backbone, "extra")
    wrong_shape = dict(source, **{"conv3.bias": torch.zeros(64)})
    with pytest.raises(WeightConversionError, match="shape mismatch"):
        convert_state_dict(wrong_shape, release.rules, backbone, "wrong shape")
