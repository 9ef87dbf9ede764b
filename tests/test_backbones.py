"""Backbones, generated from the BACKBONES registry: build from ``{type: name}``, forward/backward on 112×112,
trunk/neck split, insightface key compatibility of IResNet, weights_only round trip, channels_last, presets."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Dict, Tuple

import pytest
import torch

from backbone import BACKBONES, build_backbone
from backbone.base import FaceBackbone
from backbone.iresnet import IResNet
from utils.config import load_yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
# Constructor arguments a registered backbone cannot do without (everything else builds from ``{type: name}``).
REQUIRED_ARGS: Dict[str, dict] = {"GFROEmbedding": {"trunk": {"type": "MobileFaceNet"}}}
# Construction and size only (on the meta device): too slow for a CPU forward pass, or (IResNet = IResNet50) a
# duplicate of a named preset's code path.
CONSTRUCT_ONLY = {"IResNet", "IResNet100", "IResNet200"}
# Forward + backward only: the remaining checks run on the lighter models with the same code.
FORWARD_BACKWARD_ONLY = {"IResNet34", "IResNet50", "FaceT"}
# The last feature map of a 112×112 input where it is not 7×7 (a ViT's token grid: 8×8 patches → 14×14).
FEATURE_SIZES: Dict[str, Tuple[int, int]] = {"FaceT": (14, 14), "FaceTTiny": (14, 14)}
# Parameter-name prefixes that ``forward`` does not use (heads trained and used only by a training mode / scorer).
OUTSIDE_FORWARD: Dict[str, Tuple[str, ...]] = {"OAMLNet": ("occlusion_head.", "pair_scorer."),
                                               "OAMLDescriptorNet": ("pair_scorer.",),
                                               "MSML": ("osb.",)}  # MSML: OSB enters detached, trained by L_seg
FORWARD_NAMES = [name for name in BACKBONES.names() if name not in CONSTRUCT_ONLY]
LIGHT_NAMES = [name for name in FORWARD_NAMES if name not in FORWARD_BACKWARD_ONLY]
# Published sizes: FaceX-Zoo training_mode/README.md (ResNet50-ir 43.57M), insightface r100 (65.2M).
PUBLISHED_PARAMS = {"IResNet50": 43.57e6, "IResNet100": 65.2e6}


def build(name: str, device: str = "cpu", **kwargs) -> FaceBackbone:
    torch.manual_seed(0)
    with torch.device(device):
        return build_backbone({"type": name, **REQUIRED_ARGS.get(name, {}), **kwargs})


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def trunk_params(model: torch.nn.Module) -> int:
    """Parameters outside a ``neck`` submodule."""
    return sum(p.numel() for name, p in model.named_parameters() if not name.startswith("neck."))


def images(batch: int = 2, size: Tuple[int, int] = (112, 112), seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def prepared():
    """name → (eval-mode model whose BN statistics were moved by one training batch, its output on ``images()``),
    built once per test module."""
    cache: Dict[str, Tuple[FaceBackbone, torch.Tensor]] = {}

    def get(name: str) -> Tuple[FaceBackbone, torch.Tensor]:
        if name not in cache:
            model = build(name)
            with torch.no_grad():
                model.train()(images(seed=1))
                cache[name] = (model.eval(), model(images()))
        return cache[name]

    return get


@pytest.mark.parametrize("name", BACKBONES.names())
def test_every_backbone_builds_from_its_name(name):
    model = build(name, device="meta" if name in CONSTRUCT_ONLY else "cpu")
    assert isinstance(model, FaceBackbone)
    assert model.feat_dim > 0 and model.feature_channels > 0
    assert model.feature_size == FEATURE_SIZES.get(name, (7, 7))
    params = count_params(model)
    assert 5e5 < params < 2e8, f"{name}: {params} parameters"
    if name in PUBLISHED_PARAMS:
        assert abs(params - PUBLISHED_PARAMS[name]) / PUBLISHED_PARAMS[name] < 0.01, f"{name}: {params}"


def test_iresnet_sizes_grow_with_depth():
    sizes = [count_params(build(f"IResNet{depth}", device="meta")) for depth in (18, 34, 50, 100, 200)]
    assert sizes == sorted(sizes) and 2e7 < sizes[0] < 3e7 and 1e8 < sizes[-1] < 1.5e8, sizes


@pytest.mark.parametrize("name", FORWARD_NAMES)
def test_forward_backward_on_112(name):
    model = build(name).train()
    out = model(images())
    assert out.shape == (2, model.feat_dim) and out.dtype == torch.float32 and torch.isfinite(out).all()
    out.square().mean().backward()
    grads = [p.grad for key, p in model.named_parameters()
             if p.requires_grad and not key.startswith(OUTSIDE_FORWARD.get(name, ()))]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0
    if isinstance(model, IResNet):
        assert model.features.weight.grad is None and model.features.bias.grad is not None


@pytest.mark.parametrize("name", LIGHT_NAMES)
def test_trunk_and_neck_compose_to_forward(name, prepared):
    model, reference = prepared(name)
    x = images()
    with torch.no_grad():
        feature_map = model.forward_features(x)
        assert feature_map.shape == (2, model.feature_channels, *model.feature_size)
        assert torch.equal(model.forward_neck(feature_map), reference)
        train_out = model.forward_train(x)
    assert {"embedding", "aux_losses", "stats"} <= set(train_out)
    assert torch.equal(train_out["embedding"], reference)


@pytest.mark.parametrize("name", LIGHT_NAMES)
def test_channels_last_gives_the_same_output(name, prepared):
    """channels_last input (and model) give the contiguous result up to float rounding. At random init the eval
    activations grow with depth, so the 1e-4 tolerance is relative to the output's magnitude."""
    def close(actual: torch.Tensor, expected: torch.Tensor) -> None:
        torch.testing.assert_close(actual, expected, rtol=0, atol=1e-4 * max(1.0, expected.abs().max().item()))

    model, reference = prepared(name)
    x = images()
    x_channels_last = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        feature_map = model.forward_features(x)
        close(model.forward_features(x_channels_last), feature_map)
        close(model(x_channels_last), reference)
        channels_last_model = copy.deepcopy(model).to(memory_format=torch.channels_last)
        close(channels_last_model(x_channels_last), reference)


@pytest.mark.parametrize("name", LIGHT_NAMES)
def test_state_dict_round_trip_with_weights_only(name, prepared, tmp_path):
    model, reference = prepared(name)
    path = tmp_path / "backbone.pt"
    torch.save(model.state_dict(), path)
    torch.manual_seed(123)
    fresh = build_backbone({"type": name, **REQUIRED_ARGS.get(name, {})}).eval()
    fresh.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    with torch.no_grad():
        assert torch.equal(fresh(images()), reference)


# --- IResNet: insightface checkpoint compatibility -------------------------------------------------------------

INSIGHTFACE_LAYERS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 14, 3), 100: (3, 13, 30, 3),
                      200: (6, 26, 60, 6)}


def bn_entries(prefix: str, channels: int) -> Dict[str, tuple]:
    return {f"{prefix}.weight": (channels,), f"{prefix}.bias": (channels,), f"{prefix}.running_mean": (channels,),
            f"{prefix}.running_var": (channels,), f"{prefix}.num_batches_tracked": ()}


def insightface_iresnet_keys(depth: int, feat_dim: int = 512) -> Dict[str, tuple]:
    """Key → shape of an insightface ``iresnet<depth>`` state_dict, written out from the published layout."""
    keys: Dict[str, tuple] = {"conv1.weight": (64, 3, 3, 3), "prelu.weight": (64,)}
    keys.update(bn_entries("bn1", 64))
    in_channels = 64
    for stage, (channels, blocks) in enumerate(zip((64, 128, 256, 512), INSIGHTFACE_LAYERS[depth]), start=1):
        for block in range(blocks):
            prefix = f"layer{stage}.{block}"
            keys.update(bn_entries(f"{prefix}.bn1", in_channels))
            keys[f"{prefix}.conv1.weight"] = (channels, in_channels, 3, 3)
            keys.update(bn_entries(f"{prefix}.bn2", channels))
            keys[f"{prefix}.prelu.weight"] = (channels,)
            keys[f"{prefix}.conv2.weight"] = (channels, channels, 3, 3)
            keys.update(bn_entries(f"{prefix}.bn3", channels))
            if block == 0:
                keys[f"{prefix}.downsample.0.weight"] = (channels, in_channels, 1, 1)
                keys.update(bn_entries(f"{prefix}.downsample.1", channels))
            in_channels = channels
    keys.update(bn_entries("bn2", 512))
    keys["fc.weight"] = (feat_dim, 512 * 7 * 7)
    keys["fc.bias"] = (feat_dim,)
    keys.update(bn_entries("features", feat_dim))
    return keys


@pytest.mark.parametrize("depth", [18, 50])
def test_iresnet_state_dict_matches_insightface_layout(depth):
    model = build(f"IResNet{depth}", device="meta")
    expected = insightface_iresnet_keys(depth)
    actual = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    assert set(actual) == set(expected), (sorted(set(actual) - set(expected))[:5],
                                          sorted(set(expected) - set(actual))[:5])
    assert actual == expected
    assert model.features.eps == 1e-5 and model.bn2.eps == 1e-5 and model.layer1[0].bn1.eps == 1e-5


def test_insightface_format_state_dict_loads_unchanged():
    """A checkpoint written key by key from the insightface layout loads strictly, every tensor in its place."""
    expected = insightface_iresnet_keys(18, feat_dim=128)
    generator = torch.Generator().manual_seed(0)
    checkpoint = {}
    for key, shape in expected.items():
        if key.endswith("num_batches_tracked"):
            checkpoint[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            checkpoint[key] = 0.5 + torch.rand(shape, generator=generator)
        else:
            checkpoint[key] = 0.05 * torch.randn(shape, generator=generator)
    model = build_backbone({"type": "IResNet", "depth": 18, "feat_dim": 128})
    model.load_state_dict(checkpoint, strict=True)
    for key, value in model.state_dict().items():
        assert torch.equal(value, checkpoint[key]), key
    with torch.no_grad():
        out = model.eval()(images())
    assert out.shape == (2, 128) and torch.isfinite(out).all()


def test_iresnet_features_weight_is_frozen_at_one():
    """insightface freezes the embedding BN's scale; test_forward_backward_on_112 checks it gets no gradient."""
    model = build_backbone({"type": "IResNet18"})
    assert not model.features.weight.requires_grad and model.features.bias.requires_grad
    assert torch.equal(model.features.weight, torch.ones(512))


def test_iresnet_se_mode_adds_only_se_module_keys():
    plain = set(build("IResNet18", device="meta").state_dict())
    se_model = build("IResNet18", device="meta", mode="ir_se")
    extra = set(se_model.state_dict()) - plain
    assert plain <= set(se_model.state_dict())
    assert extra and all(".se_module." in key for key in extra)
    assert len(extra) == 2 * sum(INSIGHTFACE_LAYERS[18])  # fc1 and fc2 per block
    assert se_model.layer2[0].se_module.fc1.weight.shape == (128 // 16, 128, 1, 1)


def test_iresnet_named_presets_equal_the_generic_class():
    for depth in (18, 34, 50, 100, 200):
        preset = BACKBONES.get(f"IResNet{depth}")
        assert issubclass(preset, BACKBONES.get("IResNet"))
    assert set(build("IResNet", device="meta", depth=34).state_dict()) == set(
        build("IResNet34", device="meta", mode="ir", feat_dim=512, dropout=0.1).state_dict())


def test_invalid_iresnet_arguments_are_rejected():
    with pytest.raises(ValueError, match=r"depth must be one of \[18, 34, 50, 100, 200\], got 42"):
        build_backbone({"type": "IResNet", "depth": 42})
    with pytest.raises(ValueError, match="mode must be one of"):
        build_backbone({"type": "IResNet18", "mode": "se"})
    with pytest.raises(ValueError, match="unknown config key"):
        build_backbone({"type": "IResNet50", "depth": 18})  # the preset fixes the depth


# --- MobileFaceNet -------------------------------------------------------------------------------------------

def test_mobilefacenet_size():
    model = build("MobileFaceNet", device="meta")
    trunk = trunk_params(model)
    assert 0.85e6 < trunk < 1.0e6, trunk  # the paper's ~1M incl. a GDC neck of ~0.3M
    assert model.neck.fc.weight.shape == (512, 512 * 7 * 7)
    assert count_params(model) == trunk + 512 * 7 * 7 * 512 + 512 + 2 * 512 + 2 * 512  # + FC, BN2d, BN1d


def test_mobilefacenet_non_square_input():
    model = build("MobileFaceNet", input_size=[112, 96], feat_dim=128).eval()
    assert model.feature_size == (7, 6)
    with torch.no_grad():
        assert model.forward_features(images(size=(112, 96))).shape == (2, 512, 7, 6)
        assert model(images(size=(112, 96))).shape == (2, 128)


def test_mobilefacenet_width_multiplier():
    half = build("MobileFaceNet", width=0.5).eval()
    full = build("MobileFaceNet", device="meta")
    assert trunk_params(half) < 0.5 * trunk_params(full)
    with torch.no_grad():
        assert half.forward_features(images()).shape == (2, 512, 7, 7)


def test_invalid_mobilefacenet_arguments_are_rejected():
    with pytest.raises(ValueError, match="width must be > 0"):
        build_backbone({"type": "MobileFaceNet", "width": 0})
    with pytest.raises(ValueError, match="input_size must be"):
        build_backbone({"type": "MobileFaceNet", "input_size": [112]})


# --- YAML presets ----------------------------------------------------------------------------------------------

BACKBONE_PRESETS = sorted((REPO_ROOT / "configs" / "backbone").glob("*.yaml"))


@pytest.mark.parametrize("path", BACKBONE_PRESETS, ids=lambda p: p.name)
def test_backbone_presets_build(path):
    with torch.device("meta"):
        model = build_backbone(load_yaml(path))
    assert isinstance(model, FaceBackbone)


def test_backbone_presets_exist():
    names = {path.stem for path in BACKBONE_PRESETS}
    assert {"mobilefacenet", "iresnet50", "iresnet100"} <= names
