"""Every margin head against an independent recomputation of the reference implementation its docstring names.

The references are re-derived here from their published formulas (FaceX-Zoo ``head/*.py``, insightface
``arcface_torch/losses.py``, HuangYG123/CurricularFace ``head/metrics.py``, IrvingMeng/MagFace ``models/magface.py``,
mk-minchul/AdaFace ``head.py``, fdbtrs/ElasticFace ``utils/losses.py``), in float64 with acos/cos arithmetic and the
references' own branch conditions; no head helper is called. Inputs are fixed: seeded class weights (classes 0 and 1
nearly parallel, so that samples far from their class have hard negatives on both sides) and embeddings placed at
chosen target angles θ, including θ just below and above π − m and near π, cos θ ≤ 0, and tiny θ.

Each head runs in float64 (module and inputs ``.double()``), compared at 1e-6 on logits, ``aux_loss``, buffer updates
and the gradients of a fixed probe loss; and in its default float32, compared at ``FP32_ATOL`` (float32 rounding of
the cosine, ~1e-7, amplified near θ = π and times s = 64, exceeds 1e-6; the reference then sees the same
float32-rounded inputs).
The float32 runs also show which departures are formula errors (they exceed that tolerance by orders of magnitude).
"""
from __future__ import annotations

import math

import pytest
import torch

from head import build_head

FEAT_DIM = 8
NUM_CLASS = 7
FP64_ATOL = 1e-6
# float32: a cosine rounded by ~6e-8 moves sin θ = √(1 − cos²θ) by ~6e-8/sin θ, i.e. 3e-6 at θ = π − 0.02 (the
# ElasticArcFace samples beyond π − m, which have no fallback), times sin m · s ≈ 31: about 1e-4.
FP32_ATOL = 2e-4
FP32_RTOL = 1e-6  # ~8 float32 ulps, for the re-weighted logits that exceed s and for the buffers
PRECISIONS = [pytest.param(torch.float64, FP64_ATOL, id="fp64"), pytest.param(torch.float32, FP32_ATOL, id="fp32")]
PI = math.pi


# ---------------------------------------------------------------------------------------------------------------
# fixed inputs
# ---------------------------------------------------------------------------------------------------------------

def class_weights() -> torch.Tensor:
    """[C, D] float64, seeded; class 1 is a slightly perturbed copy of class 0."""
    generator = torch.Generator().manual_seed(11)
    weight = torch.randn(NUM_CLASS, FEAT_DIM, generator=generator, dtype=torch.float64)
    weight[1] = weight[0] + 0.08 * torch.randn(FEAT_DIM, generator=generator, dtype=torch.float64)
    return weight


def place(weight: torch.Tensor, labels: torch.Tensor, angles: torch.Tensor, norms: torch.Tensor,
          seed: int = 5) -> torch.Tensor:
    """[B, D] float64 embeddings with exactly the target angle θ_i to class labels[i] and norm norms[i]."""
    generator = torch.Generator().manual_seed(seed)
    w = weight[labels] / weight[labels].norm(dim=1, keepdim=True)
    r = torch.randn(len(labels), FEAT_DIM, generator=generator, dtype=torch.float64)
    u = r - (r * w).sum(dim=1, keepdim=True) * w
    u = u / u.norm(dim=1, keepdim=True)
    direction = torch.cos(angles)[:, None] * w + torch.sin(angles)[:, None] * u
    return norms[:, None] * direction


def standard_samples(margin: float):
    """(labels, target angles): small, medium and obtuse θ (cos θ ≤ 0), θ = π − m ∓ 1e-3, beyond π − m, near π."""
    table = [(0, 0.05), (1, 0.07), (2, 0.4), (3, 1.0), (4, PI / 2 - 0.1), (5, PI / 2 + 0.1), (6, 2.2),
             (1, PI - margin - 1e-3), (2, PI - margin + 1e-3), (0, PI - margin + 0.1), (0, PI - 0.05),
             (1, PI - 0.02), (3, PI - 0.2)]
    labels = torch.tensor([label for label, _ in table])
    angles = torch.tensor([angle for _, angle in table], dtype=torch.float64)
    return labels, angles


def probe(batch: int) -> torch.Tensor:
    """Fixed weights of the probe loss Σ R ⊙ logits whose gradients are compared."""
    return torch.randn(batch, NUM_CLASS, generator=torch.Generator().manual_seed(3), dtype=torch.float64)


def make_head(name: str, dtype: torch.dtype, weight: torch.Tensor, **kwargs) -> torch.nn.Module:
    head = build_head({"type": name, **kwargs}, feat_dim=FEAT_DIM, num_class=NUM_CLASS)
    with torch.no_grad():
        head.weight.copy_(weight.to(head.weight.dtype))
    return head.to(dtype)


class Run:
    """One head forward on ``embeddings``/``weight`` in ``dtype`` and the leaves the reference should use."""

    def __init__(self, head: torch.nn.Module, embeddings: torch.Tensor, labels: torch.Tensor,
                 dtype: torch.dtype) -> None:
        self.dtype = dtype
        self.labels = labels
        self.embeddings = embeddings.to(dtype).requires_grad_(True)
        self.out = head(self.embeddings, labels)
        self.head = head
        # The reference sees the values the head saw (float32-rounded in the fp32 case), in float64.
        self.ref_embeddings = self.embeddings.detach().double().requires_grad_(True)
        self.ref_weight = head.weight.detach().double().requires_grad_(True)

    def check_buffer(self, value: torch.Tensor, reference: torch.Tensor) -> None:
        rtol = 0.0 if self.dtype == torch.float64 else FP32_RTOL
        torch.testing.assert_close(value.double(), reference.detach(), atol=FP64_ATOL, rtol=rtol)

    def check(self, ref_logits: torch.Tensor, atol: float, ref_aux: torch.Tensor | None = None) -> None:
        logits = self.out["logits"]
        assert logits.dtype == self.dtype
        rtol = 0.0 if self.dtype == torch.float64 else FP32_RTOL
        torch.testing.assert_close(logits.detach().double(), ref_logits.detach(), atol=atol, rtol=rtol)
        if ref_aux is not None:
            torch.testing.assert_close(self.out["aux_loss"].detach().double(), ref_aux.detach(), atol=atol, rtol=0)
        else:
            assert "aux_loss" not in self.out
        if self.dtype != torch.float64:
            return
        weights = probe(len(self.labels))
        loss = (logits * weights).sum() + self.out.get("aux_loss", 0.0)
        grad_e, grad_w = torch.autograd.grad(loss, [self.embeddings, self.head.weight])
        ref_loss = (ref_logits * weights).sum() + (0.0 if ref_aux is None else ref_aux)
        ref_grad_e, ref_grad_w = torch.autograd.grad(ref_loss, [self.ref_embeddings, self.ref_weight])
        torch.testing.assert_close(grad_e, ref_grad_e, atol=FP64_ATOL, rtol=0)
        torch.testing.assert_close(grad_w, ref_grad_w, atol=FP64_ATOL, rtol=0)


# ---------------------------------------------------------------------------------------------------------------
# reference formulas (float64, written from the reference implementations, nothing imported from head/)
# ---------------------------------------------------------------------------------------------------------------

def ref_cosine(embeddings: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    e = embeddings / embeddings.norm(dim=1, keepdim=True)
    w = weight / weight.norm(dim=1, keepdim=True)
    return (e @ w.T).clamp(-1.0, 1.0)


def one_hot(labels: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels, NUM_CLASS).bool()


def gather(cosine: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return cosine[torch.arange(len(labels)), labels]


def with_target(others: torch.Tensor, labels: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.where(one_hot(labels), target[:, None], others)


def ref_arcface(emb, weight, labels, m, s, mm, easy):
    """FaceX-Zoo head/ArcFace.py (mm = margin_am) / insightface arcface_torch losses.ArcFace (mm = sin(π−m)·m)."""
    cos = ref_cosine(emb, weight)
    gt = gather(cos, labels)
    gt_m = torch.cos(torch.acos(gt) + m)
    if easy:
        final = torch.where(gt > 0, gt_m, gt)
    else:
        final = torch.where(gt > math.cos(PI - m), gt_m, gt - mm)
    return s * with_target(cos, labels, final)


def ref_cosface(emb, weight, labels, m, s):
    """FaceX-Zoo head/AM_Softmax.py."""
    cos = ref_cosine(emb, weight)
    return s * with_target(cos, labels, gather(cos, labels) - m)


def ref_curricularface(emb, weight, labels, m, s, t_old, update):
    """HuangYG123/CurricularFace head/metrics.py CurricularFace: returns (logits, new t)."""
    cos = ref_cosine(emb, weight)
    gt = gather(cos, labels)
    gt_m = torch.cos(torch.acos(gt) + m)  # raw cos(θ + m)
    mask = cos > gt_m[:, None]
    final = torch.where(gt > math.cos(PI - m), gt_m, gt - math.sin(PI - m) * m)
    t = gt.detach().mean() * 0.01 + (1 - 0.01) * t_old if update else torch.tensor(t_old, dtype=torch.float64)
    reweighted = torch.where(mask, cos * (t + cos), cos)
    return s * with_target(reweighted, labels, final), t


def ref_mv_softmax(emb, weight, labels, m, s, mv_weight, is_am):
    """FaceX-Zoo head/MV_Softmax.py."""
    cos = ref_cosine(emb, weight)
    gt = gather(cos, labels)
    if is_am:
        mask = cos > (gt - m)[:, None]
        final = torch.where(gt > m, gt - m, gt)
    else:
        gt_m = torch.cos(torch.acos(gt) + m)
        mask = cos > gt_m[:, None]
        final = torch.where(gt > 0.0, gt_m, gt)
    hard = torch.where(mask, mv_weight * cos + mv_weight - 1.0, cos)
    return s * with_target(hard, labels, final)


def ref_magface(emb, weight, labels, s, l_a, u_a, l_m, u_m, lamda, margin_am=0.0, insightface=False, easy=False):
    """FaceX-Zoo head/MagFace.py (margin_am; output and lamda·g, the loss adds g's mean) and, for insightface/easy,
    IrvingMeng/MagFace models/magface.py MagLinear (mm = sin(π − m(a))·m(a), th = cos(π − m(a))) + MagLoss."""
    x_norm = emb.norm(dim=1).clamp(l_a, u_a)
    ada_margin = (u_m - l_m) / (u_a - l_a) * (x_norm - l_a) + l_m
    cos = ref_cosine(emb, weight)
    gt = gather(cos, labels)
    gt_m = torch.cos(torch.acos(gt) + ada_margin)
    if easy:
        final = torch.where(gt > 0, gt_m, gt)
    else:
        mm = torch.sin(PI - ada_margin) * ada_margin if insightface else margin_am
        final = torch.where(gt > torch.cos(PI - ada_margin), gt_m, gt - mm)
    loss_g = 1 / (u_a ** 2) * x_norm + 1 / x_norm
    return s * with_target(cos, labels, final), (lamda * loss_g).mean()


def ref_adaface(emb, weight, labels, m, h, s, t_alpha, mean_old, std_old, update):
    """mk-minchul/AdaFace head.py AdaFace (norms = ‖backbone output‖, embeddings normalised): (logits, μ, σ)."""
    eps = 1e-3
    cos = ref_cosine(emb, weight).clamp(-1 + eps, 1 - eps)
    safe_norms = emb.norm(dim=1).clip(0.001, 100).detach()
    mean, std = torch.tensor(mean_old, dtype=torch.float64), torch.tensor(std_old, dtype=torch.float64)
    if update:
        mean = safe_norms.mean() * t_alpha + (1 - t_alpha) * mean
        std = safe_norms.std() * t_alpha + (1 - t_alpha) * std
    scaler = torch.clip((safe_norms - mean) / (std + eps) * h, -1, 1)
    theta = cos.acos()
    m_arc = one_hot(labels) * (m * scaler * -1)[:, None]
    theta_m = torch.clip(theta + m_arc, min=eps, max=PI - eps)
    cos_m = theta_m.cos() - one_hot(labels) * (m + m * scaler)[:, None]
    return s * cos_m, mean, std, scaler


def ref_elastic_margins(cos_target: torch.Tensor, margins: torch.Tensor, plus: bool) -> torch.Tensor:
    """fdbtrs/ElasticFace utils/losses.py: with plus, margin[idicate_cosie] after sorting both (as coded)."""
    margins = margins.reshape(-1, 1)
    if plus:
        _, order = torch.sort(cos_target.detach(), dim=0, descending=True)
        margins, _ = torch.sort(margins, dim=0)
        margins = margins[order]
    return margins.reshape(-1)


def ref_elastic_arcface(emb, weight, labels, s, margins, plus):
    """fdbtrs/ElasticFace utils/losses.py ElasticArcFace: cos(acos(cos) + m_hot), no fallback."""
    cos = ref_cosine(emb, weight)
    m_hot = one_hot(labels) * ref_elastic_margins(gather(cos, labels), margins, plus)[:, None]
    return torch.cos(torch.acos(cos) + m_hot) * s


def ref_elastic_cosface(emb, weight, labels, s, margins, plus):
    """fdbtrs/ElasticFace utils/losses.py ElasticCosFace."""
    cos = ref_cosine(emb, weight)
    m_hot = one_hot(labels) * ref_elastic_margins(gather(cos, labels), margins, plus)[:, None]
    return (cos - m_hot) * s


# ---------------------------------------------------------------------------------------------------------------
# the heads
# ---------------------------------------------------------------------------------------------------------------

ARCFACE_CASES = {
    # FaceX-Zoo head/ArcFace.py, head_conf.yaml: m 0.35, margin_am 0, s 32
    "facexzoo": ({"margin": 0.35, "scale": 32.0}, dict(m=0.35, s=32.0, mm=0.0, easy=False)),
    "facexzoo_margin_am": ({"margin": 0.35, "scale": 32.0, "margin_am": 0.1}, dict(m=0.35, s=32.0, mm=0.1,
                                                                                   easy=False)),
    # insightface arcface_torch losses.ArcFace: m 0.5, s 64, sinmm = sin(π − m)·m
    "insightface": ({"margin": 0.5, "scale": 64.0, "margin_am": "insightface"},
                    dict(m=0.5, s=64.0, mm=math.sin(PI - 0.5) * 0.5, easy=False)),
    "insightface_number": ({"margin": 0.5, "scale": 64.0, "margin_am": 0.5 * math.sin(0.5)},
                           dict(m=0.5, s=64.0, mm=math.sin(PI - 0.5) * 0.5, easy=False)),
    "easy_margin": ({"margin": 0.5, "scale": 64.0, "easy_margin": True}, dict(m=0.5, s=64.0, mm=0.0, easy=True)),
}


@pytest.mark.parametrize("dtype, atol", PRECISIONS)
@pytest.mark.parametrize("case", sorted(ARCFACE_CASES))
def test_arcface_equals_reference(case, dtype, atol):
    kwargs, ref = ARCFACE_CASES[case]
    labels, angles = standard_samples(ref["m"])
    assert (angles > PI - ref["m"]).any() and (angles < PI - ref["m"]).any() and (angles > PI / 2).any()
    weight = class_weights()
    embeddings = place(weight, labels, angles, torch.full_like(angles, 7.0))
    run = Run(make_head("ArcFace", dtype, weight, **kwargs), embeddings, labels, dtype)
    run.check(ref_arcface(run.ref_embeddings, run.ref_weight, labels, **ref), atol)


@pytest.mark.parametrize("dtype, atol", PRECISIONS)
@pytest.mark.parametrize("name", ["CosFace", "AMSoftmax"])
def test_cosface_equals_reference(name, dtype, atol):
    labels, angles = standard_samples(0.35)
    weight = class_weights()
    embeddings = place(weight, labels, angles, torch.full_like(angles, 3.0))
    run = Run(make_head(name, dtype, weight, margin=0.35, scale=32.0), embeddings, labels, dtype)
    run.check(ref_cosface(run.ref_embeddings, run.ref_weight, labels, m=0.35, s=32.0), atol)


@pytest.mark.parametrize("dtype, atol", PRECISIONS)
def test_curricularface_equals_reference_including_the_t_update(dtype, atol):
    m, s = 0.5, 64.0
    labels, angles = standard_samples(m)
    weight = class_weights()
    embeddings = place(weight, labels, angles, torch.full_like(angles, 5.0))
    head = make_head("CurricularFace", dtype, weight, margin=m, scale=s)
    with torch.no_grad():
        head.t.fill_(0.3)  # a non-zero t makes the re-weighting visible
    # The inputs exercise the raw-mask rule: some negatives are hard against the fallback target but not
    # against the raw cos(θ + m) (the samples beyond π − m with a nearly parallel class).
    cos = ref_cosine(embeddings, weight)
    gt = gather(cos, labels)
    raw = torch.cos(torch.acos(gt) + m)
    fallback = torch.where(gt > math.cos(PI - m), raw, gt - math.sin(PI - m) * m)
    negatives = ~one_hot(labels)
    assert ((cos > fallback[:, None]) != (cos > raw[:, None]))[negatives].any()
    assert (cos > raw[:, None])[negatives].any() and (cos <= raw[:, None])[negatives].any()

    t_old = head.t.item()
    run = Run(head, embeddings, labels, dtype)
    ref_logits, ref_t = ref_curricularface(run.ref_embeddings, run.ref_weight, labels, m, s, t_old, update=True)
    run.check_buffer(head.t, ref_t)
    run.check(ref_logits, atol)
    # A second step continues the EMA from the updated t.
    t_old = head.t.item()
    run = Run(head, embeddings, labels, dtype)
    ref_logits, ref_t = ref_curricularface(run.ref_embeddings, run.ref_weight, labels, m, s, t_old, update=True)
    run.check_buffer(head.t, ref_t)
    run.check(ref_logits, atol)
    # Eval mode (a departure, documented): t is used but not updated.
    head.eval()
    t_old = head.t.item()
    run = Run(head, embeddings, labels, dtype)
    ref_logits, _ = ref_curricularface(run.ref_embeddings, run.ref_weight, labels, m, s, t_old, update=False)
    assert head.t.item() == t_old
    run.check(ref_logits, atol)


@pytest.mark.parametrize("dtype, atol", PRECISIONS)
@pytest.mark.parametrize("is_am, m", [(True, 0.35), (False, 0.35), (False, 0.5)])
def test_mv_softmax_equals_reference(is_am, m, dtype, atol):
    s, mv_weight = 32.0, 1.12
    labels, angles = standard_samples(m)
    weight = class_weights()
    embeddings = place(weight, labels, angles, torch.full_like(angles, 4.0))
    gt = torch.cos(angles)
    if is_am:
        assert (gt > m).any() and (gt <= m).any()  # both sides of the AM condition
    else:
        assert (gt > 0).any() and ((gt <= 0) & (angles < PI - m)).any() and (angles > PI - m).any()
    run = Run(make_head("MVSoftmax", dtype, weight, margin=m, scale=s, t=mv_weight, is_am=is_am), embeddings,
              labels, dtype)
    run.check(ref_mv_softmax(run.ref_embeddings, run.ref_weight, labels, m, s, mv_weight, is_am), atol)


MAGFACE_CASES = {
    # FaceX-Zoo head/MagFace.py with its head_conf.yaml values
    "facexzoo": ({}, dict(margin_am=0.0)),
    "facexzoo_margin_am": ({"margin_am": 0.2}, dict(margin_am=0.2)),
    # IrvingMeng/MagFace MagLinear: easy_margin False branch / default easy_margin True, λ_g 35
    "official": ({"margin_am": "insightface", "lambda_g": 35.0}, dict(insightface=True, lamda=35.0)),
    "official_easy": ({"easy_margin": True, "lambda_g": 35.0}, dict(easy=True, lamda=35.0)),
}


@pytest.mark.parametrize("dtype, atol", PRECISIONS)
@pytest.mark.parametrize("case", sorted(MAGFACE_CASES))
def test_magface_equals_reference(case, dtype, atol):
    kwargs, ref = MAGFACE_CASES[case]
    l_a, u_a, l_m, u_m = 10.0, 110.0, 0.45, 0.8
    norms = torch.tensor([5.0, 10.0, 25.0, 40.0, 60.0, 75.0, 90.0, 110.0, 300.0, 33.0, 47.0, 101.0],
                         dtype=torch.float64)
    own_margin = (u_m - l_m) / (u_a - l_a) * (norms.clamp(l_a, u_a) - l_a) + l_m
    # per-sample angles relative to each sample's own m(a): just below / above π − m(a), near π, and ordinary ones
    angles = torch.stack([torch.tensor(0.3), torch.tensor(1.2), PI - own_margin[2] - 1e-3,
                          PI - own_margin[3] + 1e-3, torch.tensor(1.9), PI - own_margin[5] + 0.15,
                          torch.tensor(PI - 0.04), torch.tensor(0.7), PI - own_margin[8] - 2e-3,
                          PI - own_margin[9] + 2e-3, torch.tensor(2.5), torch.tensor(PI / 2 - 0.05)]).double()
    labels = torch.tensor([2, 3, 0, 1, 4, 0, 1, 5, 0, 1, 6, 2])
    assert (angles > PI - own_margin).any() and (angles < PI - own_margin).any()
    weight = class_weights()
    embeddings = place(weight, labels, angles, norms)
    run = Run(make_head("MagFace", dtype, weight, **kwargs), embeddings, labels, dtype)
    ref_kwargs = {"lamda": 20.0, **ref}
    ref_logits, ref_aux = ref_magface(run.ref_embeddings, run.ref_weight, labels, s=64.0, l_a=l_a, u_a=u_a,
                                      l_m=l_m, u_m=u_m, **ref_kwargs)
    run.check(ref_logits, atol, ref_aux)


@pytest.mark.parametrize("dtype, atol", PRECISIONS)
@pytest.mark.parametrize("t_alpha", [0.01, 1.0])
def test_adaface_equals_reference_including_the_norm_statistics(t_alpha, dtype, atol):
    m, h, s = 0.4, 0.333, 64.0
    table = [  # (label, θ, ‖e‖)
        (2, 0.02, 30.0),        # cos θ > 1 − 1e-3: clamped by the reference
        (3, 0.2, 80.0),         # large norm: ĝ = 1, θ − m < ε → θ' = ε
        (4, 0.9, 60.0),
        (5, 1.4, 21.0),
        (6, PI / 2 + 0.3, 19.0),
        (0, 2.3, 12.0),
        (1, 2.9, 0.0005),       # tiny norm (clipped to 1e-3): ĝ = −1, θ + m > π − ε → θ' = π − ε
        (0, PI - 0.03, 2.0),    # cos θ < −1 + 1e-3
        (2, 2.95, 150.0),       # norm clipped to 100
        (3, 1.1, 8.0),
        (0, PI - 0.2, 40.0),
    ]
    labels = torch.tensor([row[0] for row in table])
    angles = torch.tensor([row[1] for row in table], dtype=torch.float64)
    norms = torch.tensor([row[2] for row in table], dtype=torch.float64)
    weight = class_weights()
    embeddings = place(weight, labels, angles, norms)
    head = make_head("AdaFace", dtype, weight, margin=m, h=h, scale=s, t_alpha=t_alpha)
    with torch.no_grad():
        head.batch_std.fill_(4.0)  # a small σ so that ĝ saturates at both ends
    mean_old, std_old = head.batch_mean.item(), head.batch_std.item()
    run = Run(head, embeddings, labels, dtype)
    ref_logits, ref_mean, ref_std, scaler = ref_adaface(run.ref_embeddings, run.ref_weight, labels, m, h, s,
                                                        t_alpha, mean_old, std_old, update=True)
    if t_alpha == 0.01:  # the inputs reach every clip of the reference
        assert (scaler == 1).any() and (scaler == -1).any() and (scaler.abs() < 1).any()
        theta = torch.acos(torch.cos(angles).clamp(-1 + 1e-3, 1 - 1e-3))
        assert ((theta - m * scaler) < 1e-3).any() and ((theta - m * scaler) > PI - 1e-3).any()
    run.check_buffer(head.batch_mean, ref_mean)
    run.check_buffer(head.batch_std, ref_std)
    run.check(ref_logits, atol)
    # Eval mode (a departure, documented): the statistics are used but not updated.
    head.eval()
    mean_old, std_old = head.batch_mean.item(), head.batch_std.item()
    run = Run(head, embeddings, labels, dtype)
    ref_logits, *_ = ref_adaface(run.ref_embeddings, run.ref_weight, labels, m, h, s, t_alpha, mean_old, std_old,
                                 update=False)
    assert head.batch_mean.item() == mean_old and head.batch_std.item() == std_old
    run.check(ref_logits, atol)


ELASTIC = {"ElasticArcFace": (0.5, 0.05, ref_elastic_arcface), "ElasticCosFace": (0.35, 0.05, ref_elastic_cosface)}


def elastic_case(name):
    """(m, σ, reference, labels, weight, embeddings) shared by the ElasticFace tests."""
    m, std, reference = ELASTIC[name]
    labels, angles = standard_samples(m)
    weight = class_weights()
    return m, std, reference, labels, weight, place(weight, labels, angles, torch.full_like(angles, 9.0))


@pytest.mark.parametrize("dtype, atol", PRECISIONS)
@pytest.mark.parametrize("plus", [False, True], ids=["plain", "plus"])
@pytest.mark.parametrize("name", sorted(ELASTIC))
def test_elastic_heads_equal_reference_with_the_reference_draws(name, plus, dtype, atol):
    """Seeded: the head draws exactly the reference's torch.normal(mean=m, std=σ, size=[B, 1]) margins."""
    m, std, reference, labels, weight, embeddings = elastic_case(name)
    head = make_head(name, dtype, weight, margin=m, scale=64.0, std=std, **({"plus": True} if plus else {}))
    torch.manual_seed(1234)
    drawn = torch.normal(mean=m, std=std, size=labels[:, None].size())
    torch.manual_seed(1234)
    run = Run(head, embeddings, labels, dtype)
    run.check(reference(run.ref_embeddings, run.ref_weight, labels, 64.0, drawn.double(), plus), atol)
    # Eval mode (a departure, documented): every margin is m.
    head.eval()
    run = Run(head, embeddings, labels, dtype)
    run.check(reference(run.ref_embeddings, run.ref_weight, labels, 64.0,
                        torch.full((len(labels),), m, dtype=torch.float64), plus), atol)


@pytest.mark.parametrize("dtype, atol", PRECISIONS)
@pytest.mark.parametrize("name", sorted(ELASTIC))
def test_elastic_plus_orders_injected_margins_as_the_reference(name, dtype, atol, monkeypatch):
    """Injected margins (spread out, so every position matters) through ElasticFace+'s sort-and-index rule."""
    m, std, reference, labels, weight, embeddings = elastic_case(name)
    injected = torch.linspace(0.2, 0.8, len(labels), dtype=torch.float32)[torch.randperm(
        len(labels), generator=torch.Generator().manual_seed(2))]
    for plus in (False, True):
        head = make_head(name, dtype, weight, margin=m, scale=64.0, std=std, **({"plus": True} if plus else {}))
        monkeypatch.setattr(head, "sample_margins", lambda labels, dtype=None: injected.clone())
        run = Run(head, embeddings, labels, dtype)
        run.check(reference(run.ref_embeddings, run.ref_weight, labels, 64.0, injected.double(), plus), atol)
    # The reference's ordering is a gather, not the rank assignment: on these inputs the two differ.
    cos_target = gather(ref_cosine(embeddings, weight), labels)
    order = torch.sort(cos_target, descending=True).indices
    ranked = torch.empty_like(injected).scatter_(0, order, torch.sort(injected).values)
    assert not torch.equal(ref_elastic_margins(cos_target, injected.double(), True).float(), ranked)


def test_elastic_arcface_has_no_fallback_past_pi_like_the_reference():
    """θ + m > π: the reference keeps cos(θ + m) (which rises again); ArcFace's fallback is only an option."""
    m = 0.5
    labels = torch.tensor([0, 1])
    angles = torch.tensor([PI - 0.1, PI - 0.3], dtype=torch.float64)
    weight = class_weights()
    embeddings = place(weight, labels, angles, torch.full_like(angles, 9.0))
    head = make_head("ElasticArcFace", torch.float64, weight, margin=m, std=0.0).eval()
    target = head(embeddings, labels)["logits"].gather(1, labels[:, None]).squeeze(1)
    torch.testing.assert_close(target, 64.0 * torch.cos(angles + m), atol=FP64_ATOL, rtol=0)
    option = make_head("ElasticArcFace", torch.float64, weight, margin=m, std=0.0, margin_am=0.0).eval()
    target = option(embeddings, labels)["logits"].gather(1, labels[:, None]).squeeze(1)
    torch.testing.assert_close(target, 64.0 * torch.cos(angles), atol=FP64_ATOL, rtol=0)


def test_margin_am_must_be_a_number_or_insightface():
    with pytest.raises(ValueError, match="margin_am"):
        build_head({"type": "ArcFace", "margin_am": "facexzoo"}, feat_dim=FEAT_DIM, num_class=NUM_CLASS)
    with pytest.raises(ValueError, match="margin_am"):
        build_head({"type": "MagFace", "margin_am": None}, feat_dim=FEAT_DIM, num_class=NUM_CLASS)


def test_fp64_inputs_stay_fp64_and_fp32_heads_keep_fp32_logits():
    weight = class_weights()
    labels, angles = standard_samples(0.5)
    embeddings = place(weight, labels, angles, torch.full_like(angles, 3.0))
    head = make_head("ArcFace", torch.float32, weight)
    assert head(embeddings.float(), labels)["logits"].dtype == torch.float32
    assert head.double()(embeddings, labels)["logits"].dtype == torch.float64
