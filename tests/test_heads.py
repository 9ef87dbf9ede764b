"""Margin heads, generated from the HEADS registry: shapes, margin-0 reduction, label checks, fp32 under autocast,
head-specific state (MagFace / AdaFace / CurricularFace / ElasticFace) and a small learning check."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from head import HEADS, build_head
from head.margin_base import additive_angular_target
from utils.config import load_yaml

FEAT_DIM = 16
NUM_CLASS = 10
BATCH = 6

# Keyword arguments under which each head must reduce to scale·cos (None: it cannot, see its own test).
NEUTRAL_KWARGS = {
    "ArcFace": {"margin": 0.0},
    "CosFace": {"margin": 0.0},
    "AMSoftmax": {"margin": 0.0},
    "ElasticArcFace": {"margin": 0.0, "std": 0.0},
    "ElasticCosFace": {"margin": 0.0, "std": 0.0},
    "MagFace": {"lower_margin": 0.0, "upper_margin": 0.0},
    "AdaFace": {"margin": 0.0},
    "MVSoftmax": {"margin": 0.0, "t": 1.0},
    "CurricularFace": None,  # margin 0 still re-weights hard negatives: test_curricularface_margin_zero
}
# Heads without class weights whose training interface differs (tested in their own files), left out here:
# SSTPrototype scores probe features against a queue of gallery features (pair_logits; tests/test_semi_siamese.py).
# PartialFC wraps one of these heads (sharded class centres): tests/test_partial_fc.py checks it against each.
NOT_MARGIN_HEADS = {"SSTPrototype", "PartialFC"}
HEAD_NAMES = [name for name in HEADS.names() if name not in NOT_MARGIN_HEADS]
HEAD_PRESETS = sorted((Path(__file__).resolve().parents[1] / "configs" / "head").glob("*.yaml"))


def make_batch(head: torch.nn.Module, seed: int = 0, norm: float = 30.0):
    """Embeddings near their class weight (so cos θ_y > 0 and θ_y + m < π) with norm ``norm``, plus labels."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, NUM_CLASS, (BATCH,), generator=generator)
    directions = F.normalize(head.weight.detach()[labels], dim=1) + 0.5 * F.normalize(
        torch.randn(BATCH, FEAT_DIM, generator=generator), dim=1)
    return norm * F.normalize(directions, dim=1), labels


def reference_cosine(head: torch.nn.Module, embeddings: torch.Tensor) -> torch.Tensor:
    return F.normalize(embeddings.double(), dim=1) @ F.normalize(head.weight.detach().double(), dim=1).T


def test_every_head_has_a_neutral_config():
    missing = sorted(set(HEAD_NAMES) - set(NEUTRAL_KWARGS))
    assert not missing, f"add the heads {missing} to NEUTRAL_KWARGS in tests/test_heads.py"


@pytest.mark.parametrize("name", HEAD_NAMES)
def test_logits_shape_and_dtype_in_train_and_eval(name):
    head = build_head({"type": name}, feat_dim=FEAT_DIM, num_class=NUM_CLASS)
    embeddings, labels = make_batch(head)
    for training in (True, False):
        head.train(training)
        out = head(embeddings, labels)
        assert out["logits"].shape == (BATCH, NUM_CLASS)
        assert out["logits"].dtype == torch.float32
        assert torch.isfinite(out["logits"]).all()
        if "aux_loss" in out:
            assert out["aux_loss"].dim() == 0 and torch.isfinite(out["aux_loss"])


@pytest.mark.parametrize("name", HEAD_NAMES)
def test_cosine_matches_a_float64_reference(name):
    head = build_head({"type": name}, feat_dim=FEAT_DIM, num_class=NUM_CLASS)
    embeddings, _ = make_batch(head)
    torch.testing.assert_close(head.cosine(embeddings).double(), reference_cosine(head, embeddings),
                               atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", [n for n in HEAD_NAMES if NEUTRAL_KWARGS.get(n) is not None])
def test_margin_zero_reduces_to_scaled_cosine(name):
    head = build_head({"type": name, **NEUTRAL_KWARGS[name]}, feat_dim=FEAT_DIM, num_class=NUM_CLASS)
    embeddings, labels = make_batch(head)
    expected = head.scale * head.cosine(embeddings)
    for training in (True, False):
        head.train(training)
        assert torch.equal(head(embeddings, labels)["logits"], expected)


def test_curricularface_margin_zero_keeps_target_and_easy_negatives():
    head = build_head({"type": "CurricularFace", "margin": 0.0}, feat_dim=FEAT_DIM, num_class=NUM_CLASS)
    embeddings, labels = make_batch(head)
    cosine = head.cosine(embeddings)
    logits = head(embeddings, labels)["logits"]
    target = cosine.gather(1, labels[:, None])
    easy = cosine <= target  # includes the target column
    assert torch.equal(logits[easy], head.scale * cosine[easy])


@pytest.mark.parametrize("name", HEAD_NAMES)
def test_margin_lowers_the_target_logit(name):
    torch.manual_seed(0)
    head = build_head({"type": name}, feat_dim=FEAT_DIM, num_class=NUM_CLASS)
    embeddings, labels = make_batch(head)
    scaled_target = head.scale * head.cosine(embeddings).gather(1, labels[:, None])
    target_logit = head(embeddings, labels)["logits"].gather(1, labels[:, None])
    assert (target_logit < scaled_target - 1e-3).all()


@pytest.mark.parametrize("name", HEAD_NAMES)
def test_labels_none_gives_scaled_cosine(name):
    head = build_head({"type": name}, feat_dim=FEAT_DIM, num_class=NUM_CLASS)
    embeddings, _ = make_batch(head)
    assert torch.equal(head(embeddings)["logits"], head.scale * head.cosine(embeddings))


@pytest.mark.parametrize("name", HEAD_NAMES)
@pytest.mark.parametrize("bad_label, message", [
    (12, "label 12 out of range for head with num_class=10"),
    (-1, "label -1 out of range for head with num_class=10"),
    (10, "label 10 out of range for head with num_class=10"),
])
def test_out_of_range_label_is_a_clear_error(name, bad_label, message):
    head = build_head({"type": name}, feat_dim=FEAT_DIM, num_class=NUM_CLASS)
    embeddings, labels = make_batch(head)
    labels[2] = bad_label
    with pytest.raises(ValueError, match=message):
        head(embeddings, labels)


@pytest.mark.parametrize("name", HEAD_NAMES)
def test_malformed_labels_are_rejected(name):
    head = build_head({"type": name}, feat_dim=FEAT_DIM, num_class=NUM_CLASS)
    embeddings, labels = make_batch(head)
    with pytest.raises(ValueError, match="integer dtype"):
        head(embeddings, labels.float())
    with pytest.raises(ValueError, match=r"shape \[6\]"):
        head(embeddings, labels[:, None])
    with pytest.raises(ValueError, match=r"shape \[6\]"):
        head(embeddings, labels[:4])
    with pytest.raises(ValueError, match=r"embeddings must have shape \[B, 16\]"):
        head(embeddings[:, :8], labels)


@pytest.mark.parametrize("name", HEAD_NAMES)
def test_int32_labels_are_accepted(name):
    head = build_head({"type": name}, feat_dim=FEAT_DIM, num_class=NUM_CLASS).eval()
    embeddings, labels = make_batch(head)
    assert torch.equal(head(embeddings, labels.int())["logits"], head(embeddings, labels)["logits"])


@pytest.mark.parametrize("name", HEAD_NAMES)
def test_logits_are_float32_under_bf16_autocast(name):
    head = build_head({"type": name}, feat_dim=FEAT_DIM, num_class=NUM_CLASS)
    embeddings, labels = make_batch(head)
    projection = torch.nn.Linear(FEAT_DIM, FEAT_DIM)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low_precision = projection(embeddings)
        assert low_precision.dtype == torch.bfloat16
        out = head(low_precision, labels)
    assert out["logits"].dtype == torch.float32
    assert torch.isfinite(out["logits"]).all()
    if "aux_loss" in out:
        assert out["aux_loss"].dtype == torch.float32


@pytest.mark.parametrize("name", HEAD_NAMES)
def test_gradients_reach_embeddings_and_class_weights(name):
    head = build_head({"type": name}, feat_dim=FEAT_DIM, num_class=NUM_CLASS)
    embeddings, labels = make_batch(head)
    embeddings.requires_grad_(True)
    out = head(embeddings, labels)
    loss = F.cross_entropy(out["logits"], labels) + out.get("aux_loss", 0.0)
    loss.backward()
    assert torch.isfinite(embeddings.grad).all() and embeddings.grad.abs().sum() > 0
    assert torch.isfinite(head.weight.grad).all() and head.weight.grad.abs().sum() > 0


def test_extreme_cosines_have_finite_gradients():
    """Embeddings exactly on (and opposite to) their class weight: cos = ±1 before the clamp."""
    for name in ("ArcFace", "CurricularFace", "MagFace", "AdaFace", "ElasticArcFace"):
        head = build_head({"type": name}, feat_dim=FEAT_DIM, num_class=NUM_CLASS)
        labels = torch.tensor([0, 1])
        embeddings = (torch.stack([head.weight[0], -head.weight[1]]) * 1000).detach().requires_grad_(True)
        out = head(embeddings, labels)
        (F.cross_entropy(out["logits"], labels) + out.get("aux_loss", 0.0)).backward()
        assert torch.isfinite(embeddings.grad).all(), name
        assert torch.isfinite(head.weight.grad).all(), name


def test_arcface_target_formula_and_fallback():
    cosine = torch.tensor([0.9, 0.2, -0.5, -0.99])
    margin = 0.5
    expected = torch.where(torch.acos(cosine) + margin < math.pi, torch.cos(torch.acos(cosine) + margin),
                           cosine - 0.1)
    torch.testing.assert_close(additive_angular_target(cosine, margin, margin_am=0.1), expected)
    easy = additive_angular_target(cosine, margin, easy_margin=True)
    torch.testing.assert_close(easy[2:], cosine[2:])
    torch.testing.assert_close(easy[:2], torch.cos(torch.acos(cosine[:2]) + margin))


def test_cosface_and_amsoftmax_target_is_cos_minus_margin():
    assert HEADS.get("AMSoftmax") is HEADS.get("CosFace")
    head = build_head({"type": "CosFace", "margin": 0.35, "scale": 32.0}, feat_dim=FEAT_DIM, num_class=NUM_CLASS)
    embeddings, labels = make_batch(head)
    cosine = head.cosine(embeddings)
    logits = head(embeddings, labels)["logits"]
    torch.testing.assert_close(logits.gather(1, labels[:, None]), 32.0 * (cosine.gather(1, labels[:, None]) - 0.35))
    others = torch.ones_like(cosine, dtype=torch.bool).scatter(1, labels[:, None], False)
    assert torch.equal(logits[others], 32.0 * cosine[others])


def test_magface_margin_grows_with_norm_and_regulariser_matches_formula():
    head = build_head({"type": "MagFace"}, feat_dim=FEAT_DIM, num_class=NUM_CLASS)
    unit, labels = make_batch(head, norm=1.0)
    targets, aux = [], []
    for norm in (5.0, 10.0, 60.0, 110.0, 500.0):
        out = head(unit * norm, labels)
        targets.append(out["logits"].gather(1, labels[:, None]))
        clamped = min(max(norm, 10.0), 110.0)
        torch.testing.assert_close(out["aux_loss"], torch.tensor(20.0 * (clamped / 110.0 ** 2 + 1.0 / clamped)))
        aux.append(out["aux_loss"].item())
    cosine = head.cosine(unit).gather(1, labels[:, None])
    torch.testing.assert_close(targets[0], 64.0 * torch.cos(torch.acos(cosine) + 0.45), atol=1e-4, rtol=0)
    torch.testing.assert_close(targets[-1], 64.0 * torch.cos(torch.acos(cosine) + 0.8), atol=1e-4, rtol=0)
    torch.testing.assert_close(targets[0], targets[1])  # norms outside [l_a, u_a] are clamped
    torch.testing.assert_close(targets[3], targets[4])
    assert (targets[1] > targets[2]).all() and (targets[2] > targets[3]).all()  # larger norm, larger margin
    assert aux[1] > aux[2] > aux[3]  # g decreases on [l_a, u_a]: the regulariser pulls norms up


def test_adaface_statistics_and_margin():
    head = build_head({"type": "AdaFace"}, feat_dim=FEAT_DIM, num_class=NUM_CLASS)
    assert head.batch_mean.item() == 20.0 and head.batch_std.item() == 100.0
    assert {"batch_mean", "batch_std"} <= set(head.state_dict())
    unit, labels = make_batch(head, norm=1.0)
    norms = torch.linspace(10.0, 50.0, BATCH)
    head(unit * norms[:, None], labels)
    torch.testing.assert_close(head.batch_mean, torch.tensor(0.99 * 20.0 + 0.01 * norms.mean().item()))
    torch.testing.assert_close(head.batch_std, torch.tensor(0.99 * 100.0 + 0.01 * norms.std().item()))
    # Eval mode uses the statistics without updating them.
    head.eval()
    before = (head.batch_mean.clone(), head.batch_std.clone())
    out = head(unit * norms[:, None], labels)
    assert torch.equal(head.batch_mean, before[0]) and torch.equal(head.batch_std, before[1])
    g = (0.333 * (norms - head.batch_mean) / (head.batch_std + 1e-3)).clamp(-1, 1)
    theta = torch.acos(head.cosine(unit).gather(1, labels[:, None]).squeeze(1))
    expected = 64.0 * (torch.cos(theta - 0.4 * g) - (0.4 + 0.4 * g))
    torch.testing.assert_close(out["logits"].gather(1, labels[:, None]).squeeze(1), expected, atol=1e-4, rtol=0)


def test_adaface_quality_is_clipped():
    head = build_head({"type": "AdaFace", "h": 100.0}, feat_dim=FEAT_DIM, num_class=NUM_CLASS).eval()
    unit, _ = make_batch(head, norm=1.0)
    g = head.quality(unit * torch.tensor([1.0, 5.0, 20.0, 40.0, 90.0, 1000.0])[:, None])
    assert g.min() >= -1.0 and g.max() <= 1.0 and g[0] == -1.0 and g[-1] == 1.0


def test_adaface_single_sample_batch_keeps_std():
    head = build_head({"type": "AdaFace"}, feat_dim=FEAT_DIM, num_class=NUM_CLASS)
    unit, labels = make_batch(head, norm=1.0)
    out = head(unit[:1] * 30.0, labels[:1])
    assert head.batch_std.item() == 100.0 and torch.isfinite(out["logits"]).all()


def test_curricularface_t_is_an_ema_of_target_cosine():
    head = build_head({"type": "CurricularFace"}, feat_dim=FEAT_DIM, num_class=NUM_CLASS)
    embeddings, labels = make_batch(head)
    embeddings[0] = 30.0 * F.normalize(head.weight.detach()[(labels[0] + 1) % NUM_CLASS], dim=0)  # wrong class
    target_cos = head.cosine(embeddings).gather(1, labels[:, None]).mean()
    head(embeddings, labels)
    torch.testing.assert_close(head.t, 0.01 * target_cos)
    head(embeddings, labels)
    torch.testing.assert_close(head.t, 0.99 * 0.01 * target_cos + 0.01 * target_cos)
    head.eval()
    t_before = head.t.clone()
    logits = head(embeddings, labels)["logits"]
    assert torch.equal(head.t, t_before)
    cosine = head.cosine(embeddings)
    target = additive_angular_target(cosine.gather(1, labels[:, None]), 0.5, 0.5 * math.sin(0.5))
    hard = (cosine > target).scatter(1, labels[:, None], False)
    assert hard.any(), "the test batch should contain hard negatives"
    torch.testing.assert_close(logits[hard], 64.0 * cosine[hard] * (t_before + cosine[hard]))


def test_mvsoftmax_emphasises_misclassified_negatives():
    head = build_head({"type": "MVSoftmax"}, feat_dim=FEAT_DIM, num_class=NUM_CLASS)
    embeddings, labels = make_batch(head)
    embeddings[0] = 30.0 * F.normalize(head.weight.detach()[(labels[0] + 1) % NUM_CLASS], dim=0)  # wrong class
    cosine = head.cosine(embeddings)
    logits = head(embeddings, labels)["logits"]
    target = cosine.gather(1, labels[:, None]) - 0.35
    hard = (cosine > target).scatter(1, labels[:, None], False)
    assert hard[0].any()
    torch.testing.assert_close(logits[hard], 32.0 * (1.12 * cosine[hard] + 0.12))
    torch.testing.assert_close(logits[~hard.scatter(1, labels[:, None], True)],
                               32.0 * cosine[~hard.scatter(1, labels[:, None], True)])


@pytest.mark.parametrize("name, reference", [("ElasticArcFace", "ArcFace"), ("ElasticCosFace", "CosFace")])
def test_elastic_margins_are_random_in_training_and_fixed_in_eval(name, reference):
    head = build_head({"type": name}, feat_dim=FEAT_DIM, num_class=NUM_CLASS)
    fixed = build_head({"type": reference, "margin": head.margin, "scale": head.scale},
                       feat_dim=FEAT_DIM, num_class=NUM_CLASS)
    fixed.load_state_dict(head.state_dict())
    embeddings, labels = make_batch(head)
    torch.manual_seed(1)
    first = head(embeddings, labels)["logits"]
    second = head(embeddings, labels)["logits"]
    assert not torch.equal(first, second)
    head.eval()
    torch.testing.assert_close(head(embeddings, labels)["logits"], fixed(embeddings, labels)["logits"])
    # Training-mode margins scatter around the mean with the configured std.
    head.train()
    margins = head.sample_margins(torch.zeros(20000, dtype=torch.long))
    assert abs(margins.mean().item() - head.margin) < 0.01 and abs(margins.std().item() - head.std) < 0.005


def test_arcface_learns_separable_classes():
    torch.manual_seed(0)
    num_class, dim = 4, 16
    centres = 3.0 * F.normalize(torch.randn(num_class, dim), dim=1)
    labels = torch.arange(num_class).repeat_interleave(16)
    features = centres[labels] + 0.3 * torch.randn(len(labels), dim)
    head = build_head({"type": "ArcFace"}, feat_dim=dim, num_class=num_class)
    optimiser = torch.optim.SGD(head.parameters(), lr=0.01, momentum=0.9)
    losses = []
    for _ in range(50):
        loss = F.cross_entropy(head(features, labels)["logits"], labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 5, f"ArcFace CE went from {losses[0]:.3f} to {losses[-1]:.3f}"
    head.eval()
    assert (head(features)["logits"].argmax(1) == labels).float().mean() == 1.0


def test_invalid_hyper_parameters_are_rejected():
    with pytest.raises(ValueError, match="scale must be positive"):
        build_head({"type": "ArcFace", "scale": 0.0}, feat_dim=FEAT_DIM, num_class=NUM_CLASS)
    with pytest.raises(ValueError, match="lower_norm < upper_norm"):
        build_head({"type": "MagFace", "lower_norm": 100.0, "upper_norm": 10.0}, feat_dim=FEAT_DIM,
                   num_class=NUM_CLASS)
    with pytest.raises(ValueError, match="std must be >= 0"):
        build_head({"type": "ElasticArcFace", "std": -0.1}, feat_dim=FEAT_DIM, num_class=NUM_CLASS)
    with pytest.raises(ValueError, match="t must be >= 1"):
        build_head({"type": "MVSoftmax", "t": 0.9}, feat_dim=FEAT_DIM, num_class=NUM_CLASS)


def test_class_weights_are_normal_with_std_001():
    head = build_head({"type": "ArcFace"}, feat_dim=64, num_class=2000)
    assert head.weight.shape == (2000, 64)
    assert abs(head.weight.std().item() - 0.01) < 5e-4 and abs(head.weight.mean().item()) < 5e-4


@pytest.mark.parametrize("path", HEAD_PRESETS, ids=lambda p: p.name)
def test_head_presets_build(path):
    head = build_head(load_yaml(path), feat_dim=512, num_class=10)
    assert head(torch.randn(2, 512), torch.tensor([1, 2]))["logits"].shape == (2, 10)


def test_every_head_has_a_preset():
    preset_types = {load_yaml(path)["type"] for path in HEAD_PRESETS}
    assert set(HEAD_NAMES) - {"AMSoftmax"} <= preset_types
