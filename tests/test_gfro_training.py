"""GFROTraining (loss terms, teacher input contract, gate logging) and build_teacher (loading, freezing)."""
from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from backbone import BACKBONES, build_backbone
from backbone.gfro import GFROEmbedding
from data_processor.preprocess import PreprocessSpec, preprocess
from training_mode import TRAINING_MODES
from training_mode.gfro import GFROTraining, occlusion_type_names
from training_mode.teacher import FrozenTeacher, build_teacher
from utils.checkpoint import atomic_torch_save, export_backbone

from tests.test_gfro_model import FEAT_DIM, TinyTrunk

STUDENT_SPEC = PreprocessSpec("BGR", (127.5,) * 3, (128.0,) * 3)
TEACHER_SPEC = PreprocessSpec("RGB", (127.5,) * 3, (127.5,) * 3)
NUM_CLASS = 5
TERMS = ("ce_clean", "ce_noisy", "contrastive", "kd", "moe_balance")


class StubHead(nn.Module):
    """Scaled cosine logits (no margin): enough to train on and cheap."""

    def __init__(self, feat_dim: int = FEAT_DIM, num_class: int = NUM_CLASS) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_class, feat_dim))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> dict:
        return {"logits": 16.0 * F.normalize(embeddings.float(), dim=1) @ F.normalize(self.weight, dim=1).t()}


class RecordingTeacher(nn.Module):
    """Teacher stub: remembers its input, returns a fixed projection of it."""

    feat_dim = FEAT_DIM

    def __init__(self, spec: PreprocessSpec = TEACHER_SPEC) -> None:
        super().__init__()
        self.preprocess_spec = spec
        self.inputs = []
        self.projection = torch.randn(3, FEAT_DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.clone())
        return F.normalize(x.mean(dim=(2, 3)) @ self.projection, dim=1)


def gfro_backbone() -> GFROEmbedding:
    torch.manual_seed(0)
    return GFROEmbedding(TinyTrunk(), feat_dim=FEAT_DIM, expert_hidden=16, gate_hidden=16)


def make_batch(size: int = 6, views: int = 1, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    clean = torch.randint(0, 256, (size, 3, 112, 112), dtype=torch.uint8, generator=generator)
    noisy_shape = (size, 3, 112, 112) if views == 1 else (size, views, 3, 112, 112)
    noisy = torch.randint(0, 256, noisy_shape, dtype=torch.uint8, generator=generator)
    types_shape = (size,) if views == 1 else (size, views)
    return {"image": clean, "noisy": noisy, "label": torch.tensor([0, 1, 1, 2, 3, 4][:size]),
            "occlusion_type": torch.randint(0, 3, types_shape, generator=generator),
            "visibility": torch.ones(size, 1, 112, 112), "landmarks": torch.zeros(size, 5, 2)}


def test_registered_and_built_like_the_trainer_does():
    mode = TRAINING_MODES.build({"type": "GFROTraining", "contrastive_weight": 0.5, "kd_weight": 0.0},
                                where="training_mode", backbone=gfro_backbone(), head=StubHead(),
                                preprocess_spec=STUDENT_SPEC, teacher=None)
    assert isinstance(mode, GFROTraining) and mode.embedding_model() is mode.backbone


def test_all_terms_present_finite_and_backward_reaches_everything(caplog):
    with caplog.at_level(logging.INFO, logger="training_mode.gfro"):
        mode = GFROTraining(gfro_backbone(), StubHead(), STUDENT_SPEC).train()
    assert "teacher-free mode: positives are stop-grad clean student embeddings" in caplog.text
    out = mode(make_batch())
    assert set(TERMS) <= set(out["terms"])
    for name, value in out["terms"].items():
        assert torch.isfinite(value) and not value.requires_grad, name
    assert out["terms"]["contrastive"].item() > 0 and out["terms"]["kd"].item() == 0
    torch.testing.assert_close(out["loss"].detach(), sum(out["terms"].values()))
    out["loss"].backward()
    assert mode.head.weight.grad.abs().sum() > 0
    assert mode.backbone.trunk.body[0].weight.grad.abs().sum() > 0
    assert mode.backbone.refine.w2.grad.abs().sum() > 0


def test_clean_and_noisy_share_one_forward_gfro_statistics_from_the_clean_rows():
    backbone = gfro_backbone()
    calls = []
    original = backbone.forward_train
    backbone.forward_train = lambda x, **kwargs: calls.append((x.shape[0], kwargs)) or original(x, **kwargs)
    GFROTraining(backbone, StubHead(), STUDENT_SPEC)(make_batch(size=6))
    assert calls == [(12, {"stats_rows": 6})]  # one forward; GFRO's own BNs normalise with the 6 clean rows
    plain_calls = []
    plain = TinyTrunk()
    plain_original = plain.forward_train
    plain.forward_train = lambda x: plain_calls.append(x.shape[0]) or plain_original(x)
    GFROTraining(plain, StubHead(), STUDENT_SPEC)(make_batch(size=6))
    assert plain_calls == [12]  # a plain backbone: one forward, batch statistics over both views


def test_plain_backbone_with_zero_weights_is_arcface_on_clean_plus_partial_views():
    mode = GFROTraining(TinyTrunk(), StubHead(), STUDENT_SPEC, contrastive_weight=0.0, kd_weight=0.0)
    out = mode(make_batch())
    assert out["terms"]["contrastive"].item() == 0 and out["stats"]["raw/contrastive"].item() > 0
    torch.testing.assert_close(out["loss"], out["terms"]["ce_clean"] + out["terms"]["ce_noisy"])
    assert not any(name.startswith("gate/") for name in out["stats"])  # no gates in a plain backbone
    out["loss"].backward()


def test_teacher_gets_the_clean_batch_in_its_own_channel_order_and_normalisation():
    teacher = RecordingTeacher()
    mode = GFROTraining(gfro_backbone(), StubHead(), STUDENT_SPEC, teacher=teacher, kd_weight=1.0)
    batch = make_batch()
    mode(batch)
    assert len(teacher.inputs) == 1
    torch.testing.assert_close(teacher.inputs[0], preprocess(batch["image"], TEACHER_SPEC))
    assert not torch.allclose(teacher.inputs[0], preprocess(batch["image"], STUDENT_SPEC))
    # RGB order: channel 0 of the teacher input is the red channel of the uint8 batch
    torch.testing.assert_close(teacher.inputs[0][:, 0], (batch["image"][:, 0].float() - 127.5) / 127.5)


def test_teacher_positives_drive_the_contrastive_term():
    teacher = RecordingTeacher()
    mode = GFROTraining(gfro_backbone(), StubHead(), STUDENT_SPEC, teacher=teacher)
    out = mode(make_batch())
    assert out["stats"]["cos/noisy_target"].item() != pytest.approx(out["stats"]["cos/clean_noisy"].item())


def test_teacher_is_skipped_when_neither_contrastive_nor_kd_uses_it():
    teacher = RecordingTeacher()
    GFROTraining(gfro_backbone(), StubHead(), STUDENT_SPEC, teacher=teacher, contrastive_weight=0.0)(make_batch())
    assert teacher.inputs == []


def test_kd_is_zero_when_the_teacher_is_the_student():
    student = gfro_backbone()
    teacher_copy = gfro_backbone()
    teacher_copy.load_state_dict(student.state_dict())
    teacher = FrozenTeacher(teacher_copy, STUDENT_SPEC)
    mode = GFROTraining(student, StubHead(), STUDENT_SPEC, teacher=teacher, kd_weight=1.0).eval()
    with torch.no_grad():
        out = mode(make_batch())
    assert out["terms"]["kd"].item() == pytest.approx(0.0, abs=1e-5)
    mse = GFROTraining(student, StubHead(), STUDENT_SPEC, teacher=teacher, kd_weight=1.0, kd_form="mse").eval()
    with torch.no_grad():
        assert mse(make_batch())["terms"]["kd"].item() == pytest.approx(0.0, abs=1e-5)


def test_teacher_embedding_size_must_match():
    teacher = RecordingTeacher()
    teacher.feat_dim = FEAT_DIM * 2
    with pytest.raises(ValueError, match="same size"):
        GFROTraining(gfro_backbone(), StubHead(), STUDENT_SPEC, teacher=teacher)


def test_gate_weights_are_logged_per_occlusion_type():
    mode = GFROTraining(gfro_backbone(), StubHead(), STUDENT_SPEC)
    with torch.no_grad():
        mode.backbone.integrate.net[-1].weight.normal_()  # input-dependent gates
    batch = make_batch()
    batch["occlusion_type"] = torch.tensor([0, 1, 1, 2, 2, 2])
    out = mode(batch)
    names = occlusion_type_names()
    branches = mode.backbone.branch_names
    x = torch.cat([mode.inputs(batch["image"]), mode.inputs(batch["noisy"])])
    with torch.no_grad():  # the same forward again (train mode: the same batch statistics)
        gates = mode.backbone.forward_train(x, stats_rows=6)["stats"]["integrate_weights"]
    expected = {0: torch.cat([gates[:6], gates[6:7]]).mean(0), 1: gates[7:9].mean(0), 2: gates[9:].mean(0)}
    for type_id, means in expected.items():
        for branch, name in enumerate(branches):
            value = out["stats"][f"gate/{names[type_id]}/{name}"]
            assert value.numel() == 1
            assert value.item() == pytest.approx(means[branch].item(), abs=1e-5)
    per_type = [sum(out["stats"][f"gate/{names[t]}/{b}"].item() for b in branches) for t in expected]
    assert per_type == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)
    assert not any(key.startswith(f"gate/{names.get(3, 'type3')}/") for key in out["stats"])


def test_multiple_noisy_views_per_image():
    mode = GFROTraining(gfro_backbone(), StubHead(), STUDENT_SPEC)
    out = mode(make_batch(views=2))
    assert all(torch.isfinite(out["terms"][name]) for name in TERMS)
    out["loss"].backward()


def test_missing_noisy_view_is_a_clear_error():
    batch = make_batch()
    del batch["noisy"]
    with pytest.raises(KeyError, match="noisy"):
        GFROTraining(gfro_backbone(), StubHead(), STUDENT_SPEC)(batch)


def test_bf16_autocast_training_step_is_finite():
    mode = GFROTraining(gfro_backbone(), StubHead(), STUDENT_SPEC)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = mode(make_batch())
    assert torch.isfinite(out["loss"]) and all(torch.isfinite(v) for v in out["terms"].values())
    out["loss"].backward()


# ---------------------------------------------------------------------------------------------- build_teacher
SMALL_IRESNET = {"type": "IResNet18", "input_size": [32, 32]}  # 2×2 map: a small fc, same key layout


def small_iresnet() -> nn.Module:
    if "IResNet18" not in BACKBONES:
        pytest.skip("IResNet18 is not registered")
    torch.manual_seed(1)
    return build_backbone(dict(SMALL_IRESNET))


def test_no_section_or_missing_weights_with_strict_false_is_teacher_free(tmp_path, caplog):
    missing = tmp_path / "295672backbone.pth"
    with caplog.at_level(logging.INFO, logger="training_mode.teacher"):
        assert build_teacher(None, "cpu") is None
        assert build_teacher({"backbone": {"type": "IResNet100"}}, "cpu") is None
        assert build_teacher({"backbone": {"type": "IResNet100"}, "weights": str(missing), "strict": False},
                             "cpu") is None
    assert f"teacher weights not found at {missing}: teacher-free mode" in caplog.text
    assert "positives are stop-grad clean student embeddings" in caplog.text
    with pytest.raises(FileNotFoundError, match="teacher.strict"):  # the default: named weights must exist
        build_teacher({"backbone": {"type": "IResNet100"}, "weights": str(missing)}, "cpu")


def test_insightface_state_dict_loads_strictly_and_is_frozen(tmp_path):
    source = small_iresnet().eval()
    state = source.state_dict()
    assert {"conv1.weight", "bn1.weight", "prelu.weight", "layer1.0.conv1.weight", "bn2.weight", "fc.weight",
            "features.weight"} <= set(state)  # insightface key layout
    path = tmp_path / "backbone.pth"
    atomic_torch_save(state, path)
    teacher = build_teacher({"backbone": SMALL_IRESNET, "weights": str(path)}, "cpu")
    assert isinstance(teacher, FrozenTeacher)
    assert teacher.preprocess_spec == TEACHER_SPEC  # ElasticFace-Arc default: RGB, (x/255 − 0.5)/0.5
    assert all(not p.requires_grad for p in teacher.parameters())
    parent = nn.Module()
    parent.teacher = teacher
    parent.train()
    assert not teacher.training and not teacher.model.training
    x = torch.randn(3, 3, 32, 32)
    out = teacher(x)
    assert not out.requires_grad
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))
    with torch.no_grad():
        torch.testing.assert_close(out, F.normalize(source(x), dim=1))


def test_key_mismatch_is_an_error(tmp_path):
    state = small_iresnet().state_dict()
    path = tmp_path / "broken.pth"
    missing = dict(state)
    missing.pop("fc.weight")
    atomic_torch_save(missing, path)
    with pytest.raises(RuntimeError, match="missing.*fc.weight"):
        build_teacher({"backbone": SMALL_IRESNET, "weights": str(path)}, "cpu")
    extra = dict(state, **{"head.kernel": torch.zeros(2)})
    atomic_torch_save(extra, path)
    with pytest.raises(RuntimeError, match="unexpected.*head.kernel"):
        build_teacher({"backbone": SMALL_IRESNET, "weights": str(path)}, "cpu")


def test_training_checkpoint_and_export_folder_carry_architecture_and_preprocessing(tmp_path):
    source = small_iresnet().eval()
    spec = {"channel_order": "BGR", "mean": [127.5] * 3, "std": [128.0] * 3, "input_size": [32, 32]}
    checkpoint = {"model": {f"backbone.{k}": v for k, v in source.state_dict().items()},
                  "config": {"backbone": dict(SMALL_IRESNET), "data": {"preprocess": spec}}}
    atomic_torch_save(checkpoint, tmp_path / "last.pt")
    from_checkpoint = build_teacher({"weights": str(tmp_path / "last.pt")}, "cpu")
    assert from_checkpoint.preprocess_spec == PreprocessSpec.from_dict(spec)
    meta = {"arch": "IResNet18", "kwargs": {"input_size": [32, 32]}, "embedding_dim": 512,
            "preprocess": PreprocessSpec.from_dict(spec).to_dict()}
    export_backbone(source, meta, tmp_path / "export")
    overridden = build_teacher({"weights": str(tmp_path / "export"), "preprocess": TEACHER_SPEC.to_dict()}, "cpu")
    assert overridden.preprocess_spec == TEACHER_SPEC  # the section wins over the weights' metadata
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(from_checkpoint(x), overridden(x))
        torch.testing.assert_close(from_checkpoint(x), F.normalize(source(x), dim=1))


def test_released_recogniser_as_teacher(shared):
    shared("weights/recognition/bubbliiiing_arcface_mobilefacenet_casia.pth")
    teacher = build_teacher({"weights": "bubbliiiing_mobilefacenet_casia"}, "cpu")
    assert teacher.feat_dim == 128 and teacher.preprocess_spec.channel_order == "RGB"
    assert teacher(torch.randn(2, 3, 112, 112)).shape == (2, 128)


def test_unknown_teacher_key_is_a_config_error():
    from utils.registry import ConfigError

    with pytest.raises(ConfigError, match="unknown key"):
        build_teacher({"weights": "x", "lr": 0.1}, "cpu")
