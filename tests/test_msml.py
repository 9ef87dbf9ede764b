"""MSML (backbone/msml.py, loss/consensus_segmentation.py, training_mode/msml.py): shapes against methods.md §5,
FM arithmetic, detached side outputs, the OSB gradient scale, the consensus loss against a float64 loop, the
training mode, the presets, ONNX export of the embedding network and learning on a small embedded set."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List

import pytest
import torch

from backbone import build_backbone
from backbone.iresnet import IResNet
from backbone.msml import MSML, FeatureMaskingOperator
from data_processor.preprocess import PreprocessSpec
from head import build_head
from loss.consensus_segmentation import ConsensusSegmentationLoss, consensus_segmentation_loss
from training_mode import TRAINING_MODES
from training_mode.msml import MSMLTraining, segmentation_labels
from utils.config import load_config, merge
from utils.registry import ConfigError

REPO = Path(__file__).resolve().parents[1]


def msml(**kwargs) -> MSML:
    torch.manual_seed(0)
    return build_backbone({"type": "MSML", **kwargs})


def stage_shapes(model: MSML, x: torch.Tensor) -> Dict[str, List[tuple]]:
    """Shapes of the OSB encoder maps, side outputs, logits and FRB stage outputs for input ``x``."""
    encoder: List[tuple] = []
    frb: List[tuple] = []
    hooks = [model.osb.stem.register_forward_hook(lambda m, i, o: encoder.append(tuple(o.shape)))]
    hooks += [layer.register_forward_hook(lambda m, i, o: encoder.append(tuple(o.shape)))
              for layer in model.osb.encoder]
    hooks += [getattr(model.frb, f"layer{k}").register_forward_hook(lambda m, i, o: frb.append(tuple(o.shape)))
              for k in range(1, 5)]
    try:
        with torch.no_grad():
            sides = model.osb(x)
            logits = model.segment(x)
            model.forward_features(x)
    finally:
        for hook in hooks:
            hook.remove()
    return {"encoder": encoder[:5], "sides": [tuple(s.shape) for s in sides], "logits": [tuple(logits.shape)],
            "frb": frb}


# --- shapes (methods.md §5.1) ------------------------------------------------------------------------------------

def test_shapes_at_112_follow_methods_md():
    model = msml(depth=18).eval()
    shapes = stage_shapes(model, torch.randn(2, 3, 112, 112))
    assert [s[-1] for s in shapes["encoder"]] == [56, 28, 14, 7, 4]
    assert shapes["sides"] == [(2, 18, 56, 56), (2, 18, 28, 28), (2, 18, 14, 14), (2, 18, 7, 7)]
    assert shapes["logits"] == [(2, 2, 112, 112)]
    assert shapes["frb"] == [(2, 64, 56, 56), (2, 128, 28, 28), (2, 256, 14, 14), (2, 512, 7, 7)]
    assert model.feature_size == (7, 7) and model.feature_channels == 512
    assert model.frb.fc.weight.shape == (512, 512 * 49)


def test_shapes_follow_a_64_input_and_width():
    model = msml(width=0.25, input_size=[64, 64], feat_dim=64).eval()
    shapes = stage_shapes(model, torch.randn(2, 3, 64, 64))
    assert [s[-1] for s in shapes["encoder"]] == [32, 16, 8, 4, 2]
    assert shapes["sides"] == [(2, 18, 32, 32), (2, 18, 16, 16), (2, 18, 8, 8), (2, 18, 4, 4)]
    assert shapes["logits"] == [(2, 2, 64, 64)]
    assert shapes["frb"] == [(2, 16, 32, 32), (2, 32, 16, 16), (2, 64, 8, 8), (2, 128, 4, 4)]
    with torch.no_grad():
        assert model(torch.randn(3, 3, 64, 64)).shape == (3, 64)
    with pytest.raises(ValueError, match="backbone.input_size"):
        model(torch.randn(1, 3, 112, 112))


@pytest.mark.parametrize("depth, blocks", [(18, 8), (34, 16), (50, 24)])
def test_frb_depths_are_iresnets(depth, blocks):
    with torch.device("meta"):
        model = msml(depth=depth)
    assert isinstance(model.frb, IResNet)
    assert sum(len(getattr(model.frb, f"layer{k}")) for k in range(1, 5)) == blocks


def test_iresnet_width_scales_channels_and_keeps_the_default():
    with torch.device("meta"):
        default, quarter = IResNet(depth=18), IResNet(depth=18, width=0.25, input_size=[64, 64])
    assert default.stage_channels == (64, 128, 256, 512) and default.conv1.weight.shape == (64, 3, 3, 3)
    assert quarter.stage_channels == (16, 32, 64, 128) and quarter.feature_size == (4, 4)
    assert quarter.fc.weight.shape == (512, 128 * 16)
    with pytest.raises(ValueError, match="width must be a number > 0"):
        IResNet(depth=18, width=0)


# --- FM operators and the branch coupling -----------------------------------------------------------------------

@pytest.mark.parametrize("arithmetic", ["mul", "sub", "add", "div"])
def test_fm_operator_arithmetic(arithmetic):
    torch.manual_seed(0)
    fm = FeatureMaskingOperator(16, 18, 8, arithmetic).eval()
    y_f, y_o = torch.randn(2, 16, 5, 5), torch.randn(2, 18, 5, 5)
    with torch.no_grad():
        m = fm.mask(y_f, y_o)
        z = fm(y_f, y_o)
    assert m.shape == y_f.shape and bool(((m > 0) & (m < 1)).all())  # sigmoid
    expected = {"mul": y_f * (1 + m), "sub": 2 * y_f - m, "add": 2 * y_f + m, "div": y_f / (m + 1e-3) + y_f}
    torch.testing.assert_close(z, expected[arithmetic])


def test_fm_mask_depends_on_the_segmentation_input():
    torch.manual_seed(0)
    fm = FeatureMaskingOperator(16, 18, 8, "mul").eval()
    y_f = torch.randn(1, 16, 5, 5)
    with torch.no_grad():
        assert not torch.allclose(fm(y_f, torch.zeros(1, 18, 5, 5)), fm(y_f, torch.ones(1, 18, 5, 5)))


def test_side_outputs_are_detached_and_the_osb_learns_from_the_segmentation_only():
    model = msml(width=0.25, input_size=[64, 64], feat_dim=32, osb_lr_scale=1.0).train()
    x = torch.randn(4, 3, 64, 64)
    out = model.forward_train(x)
    out["embedding"].square().sum().backward()
    assert all(p.grad is None for p in model.osb.parameters())
    assert all(p.grad is not None for p in model.fm.parameters())
    model.zero_grad(set_to_none=True)
    out = model.forward_train(x)
    out["segmentation"].square().sum().backward()
    assert all(p.grad is None for p in model.frb.parameters()) and all(p.grad is None for p in model.fm.parameters())
    grads = [p.grad for p in model.osb.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0


def test_osb_lr_scale_scales_the_osb_gradients():
    x = torch.randn(4, 3, 64, 64)
    grads = {}
    for scale in (1.0, 0.1):
        model = msml(width=0.25, input_size=[64, 64], feat_dim=32, osb_lr_scale=scale).train()
        out = model.forward_train(x)
        (out["segmentation"].square().mean() + out["embedding"].square().mean()).backward()
        grads[scale] = (model.osb.stem[0].weight.grad.clone(), model.frb.conv1.weight.grad.clone())
    torch.testing.assert_close(grads[0.1][0], 0.1 * grads[1.0][0])
    torch.testing.assert_close(grads[0.1][1], grads[1.0][1])   # the FRB is untouched


def test_train_and_eval_paths_give_the_same_embedding():
    model = msml(width=0.25, input_size=[64, 64], feat_dim=32).eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        out = model.forward_train(x)
        assert torch.equal(out["embedding"], model(x))
        assert out["segmentation"].shape == (3, 2, 64, 64)


@pytest.mark.parametrize("kwargs, match", [
    ({"depth": 100}, "backbone.depth"), ({"fm_arithmetic": "pow"}, "backbone.fm_arithmetic"),
    ({"fm_activation": "relu"}, "backbone.fm_activation"), ({"width": 0}, "backbone.width"),
    ({"osb_lr_scale": -1}, "backbone.osb_lr_scale"), ({"gcm_kernel": 4}, "backbone.gcm_kernel"),
    ({"input_size": [16, 16]}, "backbone.input_size")])
def test_bad_backbone_config_is_named(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        build_backbone({"type": "MSML", **kwargs})


# --- consensus segmentation loss --------------------------------------------------------------------------------

def consensus_loop(logits: torch.Tensor, labels: torch.Tensor, alpha: float, beta: float) -> float:
    """Masi et al.'s blob loss written pixel by pixel in float64: mean over (image, label value) blobs."""
    logits, labels = logits.double(), labels.long()
    blob_losses = []
    for n in range(logits.shape[0]):
        probs = [[float(v) for v in torch.softmax(logits[n, :, i, j], 0)]
                 for i in range(logits.shape[2]) for j in range(logits.shape[3])]
        flat_labels = [int(v) for v in labels[n].flatten()]
        for value in sorted(set(flat_labels)):
            members = [probs[k] for k, lab in enumerate(flat_labels) if lab == value]
            mean = [sum(p[c] for p in members) / len(members) for c in range(logits.shape[1])]
            nll = -math.log(mean[value])
            kl = sum(sum(mean[c] * (math.log(mean[c]) - math.log(p[c])) for c in range(len(mean)))
                     for p in members) / len(members)
            blob_losses.append(alpha * nll + beta * kl)
    return sum(blob_losses) / len(blob_losses)


def test_consensus_loss_matches_a_float64_loop():
    generator = torch.Generator().manual_seed(0)
    logits = 2.0 * torch.randn(3, 2, 6, 5, generator=generator)
    labels = (torch.rand(3, 6, 5, generator=generator) > 0.4).long()
    labels[2] = 1   # one image with a single blob (all visible)
    expected = consensus_loop(logits, labels, 10.0, 5.0)
    assert consensus_segmentation_loss(logits, labels).item() == pytest.approx(expected, rel=1e-5)
    assert ConsensusSegmentationLoss(3.0, 0.5)(logits.double(), labels).item() == pytest.approx(
        consensus_loop(logits, labels, 3.0, 0.5), rel=1e-10)


def test_consensus_loss_rewards_a_right_and_uniform_segmentation():
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    labels[:, :, 2:] = 1
    right = torch.stack([1.0 - labels.float(), labels.float()], 1) * 8.0
    assert consensus_segmentation_loss(right, labels).item() < 0.01
    assert consensus_segmentation_loss(-right, labels).item() > 50.0
    # the KL term alone: a blob whose pixels disagree costs more than one that agrees on the same mean
    noisy = right.clone()
    noisy[0, :, 0, 0] = noisy[0, :, 0, 0].flip(0)
    assert consensus_segmentation_loss(noisy, labels, alpha=0.0).item() > consensus_segmentation_loss(
        right, labels, alpha=0.0).item() + 0.1


def test_consensus_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="labels"):
        consensus_segmentation_loss(torch.zeros(2, 2, 4, 4), torch.zeros(2, 5, 4, dtype=torch.long))


def test_segmentation_labels_resize_and_threshold():
    mask = torch.ones(1, 1, 8, 8)
    mask[..., :4, :] = 0.0
    labels = segmentation_labels(mask, torch.Size([4, 4]))
    assert labels.dtype == torch.long and labels.shape == (1, 4, 4)
    assert labels[0, :2].sum() == 0 and bool((labels[0, 2:] == 1).all())


# --- training mode ----------------------------------------------------------------------------------------------

def training_mode(**kwargs) -> MSMLTraining:
    backbone = msml(width=0.25, input_size=[64, 64], feat_dim=32)
    head = build_head({"type": "ArcFace"}, feat_dim=32, num_class=5)
    spec = PreprocessSpec.from_dict({"input_size": [64, 64]})
    return TRAINING_MODES.build({"type": "MSMLTraining", **kwargs}, where="training_mode", backbone=backbone,
                                head=head, preprocess_spec=spec)


def fake_batch(size: int = 4) -> dict:
    generator = torch.Generator().manual_seed(0)
    visibility = torch.ones(size, 1, 112, 112)
    visibility[:, :, 60:] = 0.0
    return {"image": torch.randint(0, 255, (size, 3, 112, 112), dtype=torch.uint8, generator=generator),
            "noisy": torch.randint(0, 255, (size, 3, 112, 112), dtype=torch.uint8, generator=generator),
            "visibility": visibility, "label": torch.arange(size) % 5}


@pytest.mark.parametrize("views", ["both", "noisy"])
def test_training_mode_loss_is_ce_plus_weighted_segmentation(views):
    mode = training_mode(seg_weight=0.5, train_views=views).train()
    out = mode(fake_batch())
    terms = out["terms"]
    assert set(terms) == {"ce", "seg"}
    assert out["loss"].item() == pytest.approx(float(terms["ce"] + terms["seg"]), rel=1e-6)
    assert terms["seg"].item() == pytest.approx(0.5 * float(out["stats"]["raw/seg"]), rel=1e-6)
    expected_visible = (1.0 + 60 / 112) / 2 if views == "both" else 60 / 112   # clean views: all visible
    assert float(out["stats"]["osb/true_visible"]) == pytest.approx(expected_visible, abs=0.02)
    out["loss"].backward()
    assert mode.backbone.osb.stem[0].weight.grad is not None and mode.head.weight.grad is not None


def test_training_mode_config_errors():
    with pytest.raises(ConfigError, match="train_views"):
        training_mode(train_views="clean")
    with pytest.raises(ConfigError, match="seg_weight"):
        training_mode(seg_weight=-1)
    with pytest.raises(ConfigError, match="backbone.type: MSML"):
        TRAINING_MODES.build({"type": "MSMLTraining"}, where="training_mode",
                             backbone=build_backbone({"type": "IResNet18", "width": 0.25}),
                             head=build_head({"type": "ArcFace"}, feat_dim=512, num_class=5),
                             preprocess_spec=PreprocessSpec.from_dict(None))
    with pytest.raises(KeyError, match="visibility"):
        training_mode()({k: v for k, v in fake_batch().items() if k != "visibility"})


# --- presets ----------------------------------------------------------------------------------------------------

def test_embedded_preset_builds_and_matches_the_budget_keys():
    cfg = load_config(REPO / "configs" / "methods" / "msml.yaml")
    assert cfg["backbone"]["type"] == "MSML" and "trunk" not in cfg["backbone"]   # budget key: backbone
    assert cfg["data"]["occlusion"]["mode"] == "partial" and cfg["training_mode"]["type"] == "MSMLTraining"
    assert cfg["backbone"]["input_size"] == cfg["data"]["preprocess"]["input_size"]
    model = build_backbone(cfg["backbone"])
    assert model.frb.depth == 18 and model.frb.stage_channels == (16, 32, 64, 128)


def test_gpu_preset_loads_and_builds_on_meta():
    cfg = load_config(REPO / "configs" / "methods" / "msml_gpu.yaml")
    assert cfg["data"]["batch_size"] == 80 and cfg["schedule"]["epochs"] == 34
    assert cfg["schedule"]["milestones"] == [20, 28, 32]
    assert cfg["optim"]["lr"] == pytest.approx(0.1 * 80 / 512) and cfg["backbone"]["osb_lr_scale"] == 0.1
    assert (cfg["head"]["scale"], cfg["head"]["margin"]) == (64.0, 0.48)
    assert cfg["data"]["train"]["type"] == "RecordIODataset"
    with torch.device("meta"):
        model = build_backbone(cfg["backbone"])
        head = build_head(cfg["head"], feat_dim=model.feat_dim, num_class=10572)
    assert model.frb.depth == 50 and model.fm_arithmetic == "sub" and head.scale == 64.0
    assert sum(p.numel() for p in model.frb.parameters()) == pytest.approx(43.6e6, rel=0.01)


# --- ONNX export of the embedding network -----------------------------------------------------------------------

def test_onnx_export_of_the_whole_embedding_network(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from utils.export_onnx import check_onnx_parity, export_to_onnx

    model = msml(width=0.25, input_size=[64, 64], feat_dim=32)
    with torch.no_grad():
        model.train()(torch.randn(8, 3, 64, 64))   # BN statistics away from 0/1
    model.eval()
    path = export_to_onnx(model, (64, 64), tmp_path / "model.onnx", exporter="torchscript")
    import onnx
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert {"ConvTranspose", "Sigmoid"} <= ops      # OSB decoder and FM masks are in the graph
    report = check_onnx_parity(model, path, (64, 64))
    assert report.max_cosine_gap < 1e-5, report


# --- learning on a small embedded set ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_faces(tmp_path_factory):
    from data_processor.synthetic_faces import build_synthetic_faces
    root = tmp_path_factory.mktemp("msml_faces")
    build_synthetic_faces(root, num_train_identities=16, images_per_train_identity=10, num_test_identities=20,
                          images_per_test_identity=6, pairs_per_fold=10, seed=5, num_val_identities=20,
                          images_per_val_identity=2, val_pairs_per_fold=2)
    return root


def test_msml_learns_identity_and_occlusion(small_faces, tmp_path):
    from test_protocol.evaluate import evaluate_model
    from training_mode.trainer import Trainer

    cfg = merge(load_config(REPO / "configs" / "methods" / "msml.yaml"), {
        "data": {"train": {"type": "ImageListDataset", "root": str(small_faces / "train" / "images"),
                           "list_file": str(small_faces / "train" / "train_list.txt")},
                 "occlusion": {"fill": "zero"}, "batch_size": 16, "num_workers": 0},
        "backbone": {"feat_dim": 64, "osb_lr_scale": 1.0},
        "schedule": {"type": "cosine", "epochs": 2, "warmup_epochs": 0.3, "min_lr_ratio": 0.05},
        "eval": {"protocols": []},
        "runtime": {"max_steps": 20, "log_interval": 10},
    })
    trainer = Trainer(cfg, tmp_path / "run")
    try:
        trainer.fit()
        protocol = {"name": "SMALL", "root": str(small_faces / "test" / "images"),
                    "pairs_file": str(small_faces / "test" / "pairs.txt"), "parser": "lfw", "image_ext": ".png"}
        (row,) = evaluate_model(trainer.module.embedding_model(), trainer.spec, [protocol], torch.device("cpu"))
        batch = next(iter(torch.utils.data.DataLoader(trainer.dataset, batch_size=32, shuffle=False)))
        model = trainer.module.eval()
        with torch.no_grad():
            logits = model.backbone.segment(model.inputs(batch["noisy"]))
        labels = segmentation_labels(batch["visibility"], logits.shape[-2:])
    finally:
        trainer.close()
    pixel_accuracy = float((logits.argmax(1) == labels).float().mean())
    majority = max(float(labels.float().mean()), 1.0 - float(labels.float().mean()))
    print(f"pair accuracy {row['accuracy']:.1f} %, OSB pixel accuracy {pixel_accuracy:.3f} (majority {majority:.3f})")
    assert row["accuracy"] >= 70.0, row          # chance is 50 %
    assert pixel_accuracy >= majority + 0.05, (pixel_accuracy, majority)
