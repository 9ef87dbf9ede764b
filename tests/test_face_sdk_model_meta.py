"""model_meta.json schema: round trip, validation messages, the Trainer's export format (face_sdk.model_meta)."""
from __future__ import annotations

import json

import pytest

from data_processor.preprocess import PreprocessSpec
from face_sdk.model_meta import ModelMeta, read_model_meta, write_model_meta


def _meta() -> ModelMeta:
    return ModelMeta(arch="MobileFaceNetGDC", kwargs={"feat_dim": 128, "input_size": [112, 96]}, embedding_dim=128,
                     preprocess=PreprocessSpec("RGB", (127.5,) * 3, (128.0,) * 3, (112, 96), "sphereface_112x96"),
                     name="demo", source="unit test", provenance={"results": {"lfw": 0.99}})


def test_round_trip(tmp_path):
    path = tmp_path / "model_meta.json"
    write_model_meta(path, _meta())
    loaded = read_model_meta(path)
    assert loaded == _meta()
    assert loaded.backbone_config == {"type": "MobileFaceNetGDC", "feat_dim": 128, "input_size": [112, 96]}
    assert loaded.template == "sphereface_112x96" and loaded.preprocess.input_size == (112, 96)
    assert json.loads(path.read_text())["template"] == "sphereface_112x96"


def test_reads_the_trainer_export_format(tmp_path):
    trainer_meta = {"arch": "MobileFaceNetReLU6", "kwargs": {"feat_dim": 128}, "embedding_dim": 128,
                    "preprocess": PreprocessSpec().to_dict(), "template": "arcface_112x112",
                    "num_train_classes": 298, "training_mode": "ConventionalTraining", "source": "training run"}
    path = tmp_path / "model_meta.json"
    path.write_text(json.dumps(trainer_meta))
    meta = read_model_meta(path)
    assert meta.arch == "MobileFaceNetReLU6" and meta.provenance["num_train_classes"] == 298
    assert meta.weights == "backbone.pt"


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.pop("arch"), "missing key"),
    (lambda d: d.update(colour="blue"), "unknown key.*colour"),
    (lambda d: d.update(template="arcface_112x112"), "key 'template'"),
    (lambda d: d["preprocess"].update(channel_order="RGBA"), "key 'preprocess'"),
    (lambda d: d.update(format_version=7), "format_version"),
])
def test_bad_meta_names_file_and_key(tmp_path, edit, message):
    data = _meta().to_dict()
    edit(data)
    path = tmp_path / "model_meta.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message) as error:
        read_model_meta(path)
    assert str(path) in str(error.value)


def test_invalid_json_names_the_line(tmp_path):
    path = tmp_path / "model_meta.json"
    path.write_text('{\n  "arch": "x",\n  oops\n}')
    with pytest.raises(ValueError, match=r"model_meta.json:3"):
        read_model_meta(path)
