"""GFROEmbedding: shapes, train/test consistency, gates, balance loss, gradients, region masks, config errors."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from backbone import BACKBONES, build_backbone
from backbone.base import EmbeddingNeck, FaceBackbone
from backbone.gfro import GFROEmbedding, region_cell_weights, template_region_boxes
from data_processor.landmarks import ARCFACE_TEMPLATE_112
from utils.registry import ConfigError

FEAT_DIM = 32


class TinyTrunk(FaceBackbone):
    """Four stride-2 convolutions: 112×112 → 16×7×7, plus the toolbox's flatten neck (fast on CPU)."""

    feature_channels = 16
    feature_size = (7, 7)

    def __init__(self, feat_dim: int = FEAT_DIM) -> None:
        super().__init__()
        self.feat_dim = feat_dim
        layers, channels = [], 3
        for out_channels in (8, 16, 16, 16):
            layers += [nn.Conv2d(channels, out_channels, 3, 2, 1, bias=False), nn.BatchNorm2d(out_channels),
                       nn.PReLU(out_channels)]
            channels = out_channels
        self.body = nn.Sequential(*layers)
        self.neck = EmbeddingNeck(16, (7, 7), feat_dim)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward_neck(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self.neck(feature_map)


def tiny_gfro(**kwargs) -> GFROEmbedding:
    torch.manual_seed(0)
    options = dict(feat_dim=FEAT_DIM, expert_hidden=16, gate_hidden=16)
    options.update(kwargs)
    return GFROEmbedding(TinyTrunk(), **options)


def images(batch: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, 112, 112, generator=torch.Generator().manual_seed(seed))


def test_builds_from_config_with_a_registered_trunk():
    if "MobileFaceNet" not in BACKBONES:
        pytest.skip("MobileFaceNet is not registered")
    model = build_backbone({"type": "GFROEmbedding", "trunk": {"type": "MobileFaceNet"}}).eval()
    assert model.feat_dim == 512 and model.feature_size == (7, 7)
    assert model.branch_names == ("global", "upper", "lower", "left", "right")
    with torch.no_grad():
        out = model(images(2))
    assert out.shape == (2, 512) and torch.isfinite(out).all()


def test_output_shape_and_same_function_in_forward_and_forward_train():
    model = tiny_gfro()
    x = images()
    model.train()
    torch.testing.assert_close(model(x), model.forward_train(x)["embedding"])  # same batch statistics
    model.eval()
    with torch.no_grad():
        first, second = model(x), model(x)
        trained = model.forward_train(x)
    assert first.shape == (6, FEAT_DIM) and torch.isfinite(first).all()
    torch.testing.assert_close(first, second)
    torch.testing.assert_close(first, trained["embedding"])
    torch.testing.assert_close(first, model.forward_neck(model.forward_features(x)))
    with torch.no_grad():  # eval is per sample: a sub-batch gives the same rows
        torch.testing.assert_close(model(x[:2]), first[:2])


def test_gates_are_distributions_and_top_k_is_sparse():
    model = tiny_gfro(top_k=2).eval()
    with torch.no_grad():
        model.refine.gate_weight.normal_()  # non-uniform routing
        stats = model.forward_train(images())["stats"]
    integrate, refine = stats["integrate_weights"], stats["refine_weights"]
    assert integrate.shape == (6, 5) and refine.shape == (6, 5, 4)
    torch.testing.assert_close(integrate.sum(-1), torch.ones(6))
    torch.testing.assert_close(refine.sum(-1), torch.ones(6, 5))
    assert ((refine > 0).sum(-1) == 2).all()


def test_untrained_gates_are_uniform_and_balance_term_is_its_minimum():
    model = tiny_gfro(balance_weight=0.5).train()
    out = model.forward_train(images())
    torch.testing.assert_close(out["stats"]["integrate_weights"], torch.full((6, 5), 0.2))
    # uniform routing: 1 for the refine gates (Switch, mean over branches) + 0 for the integrate gate (KL to prior)
    assert out["aux_losses"]["moe_balance"].item() == pytest.approx(0.5 * 1.0)
    with torch.no_grad():
        model.integrate.net[-1].bias.copy_(torch.tensor([8.0, 0, 0, 0, 0]) / model.integrate.gate_scale)
    collapsed = model.forward_train(images())["aux_losses"]["moe_balance"]
    assert collapsed.item() > 0.5 * 1.0 + 1.0


def test_global_prior_favours_the_global_branch():
    model = tiny_gfro(global_prior=2.0).eval()
    with torch.no_grad():
        weights = model.forward_train(images())["stats"]["integrate_weights"]
    expected = torch.tensor([2.0, 0, 0, 0, 0]).softmax(0)  # the prior is the initial logit whatever the gate scale
    torch.testing.assert_close(weights, expected.expand(6, -1))


@pytest.mark.parametrize("gate_lr_scale", [0.01, 1.0])
def test_gate_lr_scale_multiplies_the_gates_sgd_step(gate_lr_scale):
    """Same initial function; one small SGD step changes every gate weight by gate_lr_scale × the unscaled step."""
    def effective_step(scale: float) -> dict:
        model = tiny_gfro(gate_lr_scale=scale).eval()
        alpha = model.integrate.gate_scale
        with torch.no_grad():  # non-zero output layers, the same effective weights for every scale
            model.integrate.net[-1].weight.copy_(torch.linspace(-1, 1, 5 * 16).view(5, 16) / alpha)
            model.refine.gate_weight.copy_(torch.linspace(-1, 1, model.refine.gate_weight.numel())
                                           .view_as(model.refine.gate_weight) / alpha)
        feature = torch.randn(4, 5, FEAT_DIM, generator=torch.Generator().manual_seed(3))
        integrate_logits = model.integrate(feature)
        refine_logits = model.refine(feature)[1]
        (integrate_logits * torch.arange(5.0)).sum().add((refine_logits * torch.arange(4.0)).sum()).backward()
        steps = {}
        for name, parameter in [("integrate.0", model.integrate.net[1].weight),
                                ("integrate.1", model.integrate.net[-1].weight),
                                ("refine", model.refine.gate_weight)]:
            steps[name] = -1e-3 * parameter.grad * alpha  # the change of the effective weight
        return steps

    scaled, reference = effective_step(gate_lr_scale), effective_step(1.0)
    for name in reference:
        assert reference[name].abs().sum() > 0, name
        torch.testing.assert_close(scaled[name], gate_lr_scale * reference[name], rtol=1e-4, atol=1e-9)


def test_gradient_reaches_experts_gates_branches_and_trunk():
    model = tiny_gfro().train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    direction = torch.randn(6, FEAT_DIM)
    for _ in range(2):  # the integrate gate's output layer starts at zero: its input layer learns from step 2
        optimizer.zero_grad()
        out = model.forward_train(images())
        ((out["embedding"] * direction).sum() + sum(out["aux_losses"].values())).backward()
        optimizer.step()
    named = dict(model.named_parameters())
    for name in ("refine.w1", "refine.w2", "refine.gate_weight", "integrate.net.3.weight", "integrate.net.1.weight",
                 "region_branches.0.spatial_weight", "region_branches.3.fc.weight", "trunk.body.0.weight",
                 "trunk.neck.fc.weight"):
        assert named[name].grad is not None and named[name].grad.abs().sum() > 0, name


def test_region_masks_follow_the_template():
    boxes = template_region_boxes(ARCFACE_TEMPLATE_112, (112, 112))
    masks = {name: region_cell_weights(box, (112, 112), (7, 7)) for name, box in boxes.items()}
    torch.testing.assert_close(masks["upper"] + masks["lower"], torch.ones(7, 7))
    torch.testing.assert_close(masks["left"] + masks["right"], torch.ones(7, 7))
    assert (masks["upper"][:3] == 1).all() and (masks["upper"][4:] == 0).all() and 0 < masks["upper"][3, 0] < 1
    assert (masks["left"][:, :3] == 1).all() and (masks["left"][:, 4:] == 0).all()
    eye_row = int(ARCFACE_TEMPLATE_112[0, 1] // 16)
    mouth_row = int(ARCFACE_TEMPLATE_112[3, 1] // 16)
    assert masks["eyes"][eye_row].min() > 0.5 and masks["eyes"][mouth_row].max() == 0
    assert masks["mouth"][mouth_row].min() > 0.5 and masks["mouth"][eye_row].max() == 0
    assert masks["central"][:, 0].max() == 0 and masks["central"][3, 3] == 1


def test_region_branch_ignores_the_map_outside_its_region():
    model = tiny_gfro().eval()
    feature_map = torch.randn(2, 16, 7, 7)
    changed = feature_map.clone()
    changed[:, :, 4:] = torch.randn(2, 16, 3, 7)  # rows outside "upper"
    upper = model.region_branches[model.regions.index("upper")]
    lower = model.region_branches[model.regions.index("lower")]
    with torch.no_grad():
        torch.testing.assert_close(upper(feature_map), upper(changed))
        assert not torch.allclose(lower(feature_map), lower(changed))


@pytest.mark.parametrize("integrate_input", ["concat", "mean_norms"])
def test_integrate_inputs_and_extra_regions(integrate_input):
    model = tiny_gfro(regions=("eyes", "mouth", "central"), integrate_input=integrate_input).eval()
    with torch.no_grad():
        out = model.forward_train(images(3))
    assert out["embedding"].shape == (3, FEAT_DIM) and out["stats"]["integrate_weights"].shape == (3, 4)


@pytest.mark.parametrize("embedding_norm", ["affine", "batchnorm"])
def test_embedding_norm_options(embedding_norm):
    model = tiny_gfro(embedding_norm=embedding_norm).train()
    fusion = model.fusion_norm
    assert (len(list(fusion.buffers())) == 0) == (embedding_norm == "affine")  # affine: no statistics
    x = images()
    out = model.forward_train(torch.cat([x, x.flip(-1)]), stats_rows=6)["embedding"]
    assert out.shape == (12, FEAT_DIM) and torch.isfinite(out).all()
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(x)).all()
    if embedding_norm == "affine":  # identity at initialisation: the embedding is the gated sum itself
        assert torch.equal(fusion.weight, torch.ones(FEAT_DIM)) and torch.equal(fusion.bias, torch.zeros(FEAT_DIM))


def test_bf16_autocast_forward_is_finite():
    model = tiny_gfro().train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.forward_train(images(4))
    assert torch.isfinite(out["embedding"].float()).all()
    assert out["aux_losses"]["moe_balance"].dtype == torch.float32


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="regions"):
        tiny_gfro(regions=("upper", "forehead"))
    with pytest.raises(ConfigError, match="feat_dim"):
        GFROEmbedding(TinyTrunk(), feat_dim=64)
    with pytest.raises(ConfigError, match="top_k"):
        tiny_gfro(top_k=5)
    with pytest.raises(ConfigError, match="gate_lr_scale"):
        tiny_gfro(gate_lr_scale=0.0)
    with pytest.raises(ConfigError, match="integrate_input"):
        tiny_gfro(integrate_input="sum")
    with pytest.raises(ConfigError, match="template"):
        tiny_gfro(template="nope_112x112")
    with pytest.raises(ConfigError, match="embedding_norm"):
        tiny_gfro(embedding_norm="layernorm")
    with pytest.raises(ConfigError, match="trunk"):
        build_backbone({"type": "GFROEmbedding", "trunk": {"type": "NoSuchTrunk"}})


def test_load_trunk_state_dict_is_strict():
    model = tiny_gfro().eval()
    source = TinyTrunk().eval()
    with torch.no_grad():
        for parameter in source.parameters():
            parameter.normal_()
    state = {f"module.{k}": v for k, v in source.state_dict().items()}  # DataParallel prefix is tolerated
    model.load_trunk_state_dict(state)
    x = images(2)
    with torch.no_grad():
        torch.testing.assert_close(model.trunk(x), source(x))
    broken = dict(source.state_dict())
    broken.pop("neck.fc.weight")
    with pytest.raises(RuntimeError, match="missing"):
        model.load_trunk_state_dict(broken)


def test_state_dict_round_trip_rebuilds_the_same_model():
    model = tiny_gfro(top_k=2)
    with torch.no_grad():
        model.refine.gate_weight.normal_()
    clone = tiny_gfro(top_k=2)
    clone.load_state_dict(copy.deepcopy(model.state_dict()))
    x = images(3)
    model.eval(), clone.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), clone(x))


def test_onnx_export_matches_pytorch_with_sparse_gates(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from utils.export_onnx import export_to_onnx

    model = tiny_gfro(top_k=2).eval()
    with torch.no_grad():
        model.refine.gate_weight.normal_()
    path = export_to_onnx(model, (112, 112), tmp_path / "gfro.onnx")
    x = images(3)
    onnx_out = ort.InferenceSession(str(path)).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(onnx_out), model(x), rtol=1e-4, atol=1e-5)
