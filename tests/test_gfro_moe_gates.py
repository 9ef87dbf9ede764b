"""GFRO's MoE gates: the balance loss does not fight ``global_prior``; ``top_k`` routes to exactly k experts.

Formulation (backbone/gfro.py, GFRO.md §2 "load-balancing auxiliary loss on both gates"): the refine gates (MoE #1)
get the Switch importance × load term; the integrate gate (MoE #2) gets KL(π ‖ P̄) from its prior π = softmax of
the initial logits (global_prior on the global branch) to the batch-mean branch weights P̄. At initialisation every
sample's integrate weights equal π: the integrate term is 0 and its gradient wrt every gate parameter is 0.
"""
from __future__ import annotations

import pytest
import torch

from loss import moe_balance
from tests.test_gfro_model import images, tiny_gfro


def integrate_gate_grads(model, loss: torch.Tensor) -> dict:
    parameters = dict(model.integrate.named_parameters())
    grads = torch.autograd.grad(loss, list(parameters.values()), allow_unused=True, retain_graph=True)
    return {name: torch.zeros_like(p) if g is None else g for (name, p), g in zip(parameters.items(), grads)}


@pytest.mark.parametrize("global_prior", [0.0, 3.0])
def test_balance_term_does_not_push_the_integrate_gate_away_from_its_prior(global_prior):
    model = tiny_gfro(global_prior=global_prior, balance_weight=1.0).train()
    out = model.forward_train(images())
    prior = torch.tensor([global_prior, 0, 0, 0, 0]).softmax(0)
    torch.testing.assert_close(out["stats"]["integrate_weights"], prior.expand(6, -1))
    integrate_logits = model._aggregate(model.forward_features(images()))["integrate_logits"]
    kl = moe_balance.prior_kl_loss(integrate_logits.softmax(-1), model.integrate_prior)
    assert kl.item() == pytest.approx(0.0, abs=1e-6)  # its minimum
    for name, grad in integrate_gate_grads(model, kl).items():
        assert grad.abs().max().item() < 1e-6, name  # no gradient pushes the gate away from the prior
    # the whole balance term (refine + integrate) has no gradient on the integrate gate either
    total = model.forward_train(images())["aux_losses"]["moe_balance"]
    for name, grad in integrate_gate_grads(model, total).items():
        assert grad.abs().max().item() < 1e-6, name
    if global_prior > 0:  # the Switch importance × load form would pull the global branch's weight down
        switch = moe_balance.switch_balance_loss(integrate_logits.softmax(-1))
        bias_grad = integrate_gate_grads(model, switch)["net.3.bias"]
        assert bias_grad[0].item() > 1e-3  # gradient descent lowers the global logit: it fights the prior


def test_integrate_term_grows_when_the_batch_leaves_the_prior():
    model = tiny_gfro(global_prior=3.0).train()
    x = images()
    at_prior = model.forward_train(x)["aux_losses"]["moe_balance"].item()
    with torch.no_grad():
        for bias in ([8.0, 0, 0, 0, 0], [0.0, 0, 0, 0, 0], [3.0, 3.0, 0, 0, 0]):  # collapse, uniform, other mix
            model.integrate.net[-1].bias.copy_(torch.tensor(bias) / model.integrate.gate_scale)
            assert model.forward_train(x)["aux_losses"]["moe_balance"].item() > at_prior + 1e-3, bias


def test_prior_kl_values():
    prior = torch.tensor([0.5, 0.25, 0.25])
    assert moe_balance.prior_kl_loss(prior.expand(4, -1), prior).item() == pytest.approx(0.0, abs=1e-7)
    probs = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # mean [0.5, 0.5, 0]: the third expert abandoned
    assert moe_balance.prior_kl_loss(probs, prior).item() > 5.0
    uniform = torch.full((3,), 1 / 3)
    expected = (uniform * (uniform / prior).log()).sum()
    torch.testing.assert_close(moe_balance.prior_kl_loss(prior.expand(2, -1), uniform), expected)
    with pytest.raises(ValueError):
        moe_balance.prior_kl_loss(probs, torch.ones(4) / 4)


@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_zero_initialised_gate_routes_to_exactly_k_experts_deterministically(top_k):
    model = tiny_gfro(top_k=top_k).train()  # gate weights and biases are zero: all logits tie
    assert model.refine.gate_weight.abs().sum() == 0 and model.refine.gate_bias.abs().sum() == 0
    weights = model.forward_train(images())["stats"]["refine_weights"]  # [B, branches, E]
    assert ((weights > 0).sum(-1) == top_k).all()
    expected = torch.zeros(4)
    expected[:top_k] = 1.0 / top_k  # ties go to the lower expert index
    torch.testing.assert_close(weights, expected.expand_as(weights))
    again = model.forward_train(images(seed=1))["stats"]["refine_weights"]
    torch.testing.assert_close(again, weights)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.forward_train(images())["stats"]["refine_weights"], weights)


def test_top_k_mask_breaks_ties_towards_the_lower_index_and_matches_topk_otherwise():
    ties = torch.tensor([[1.0, 2.0, 2.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    assert moe_balance.top_k_mask(ties, 2).tolist() == [[False, True, True, False, False],
                                                         [True, True, False, False, False]]
    assert moe_balance.top_k_mask(ties, 4).tolist() == [[True, True, True, True, False],
                                                         [True, True, True, True, False]]
    distinct = torch.randn(64, 7, generator=torch.Generator().manual_seed(0))
    for k in range(1, 8):
        mask = moe_balance.top_k_mask(distinct, k)
        reference = torch.zeros_like(mask).scatter_(1, distinct.topk(k, dim=1).indices, True)
        assert torch.equal(mask, reference), k
    coarse = torch.randint(0, 3, (200, 6), generator=torch.Generator().manual_seed(1)).float()  # many ties
    for k in range(1, 7):
        assert (moe_balance.top_k_mask(coarse, k).sum(1) == k).all()


def test_switch_load_is_deterministic_on_tied_probabilities():
    uniform = torch.full((8, 4), 0.25)
    assert moe_balance.switch_balance_loss(uniform, top_k=2).item() == pytest.approx(1.0)
    assert moe_balance.switch_balance_loss(uniform).item() == pytest.approx(1.0)
