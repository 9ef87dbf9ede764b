"""GFRO's losses: clean–noisy contrastive (InfoNCE with same-identity exclusion), distillation, MoE balance."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from loss import LOSSES
from loss.contrastive import CleanNoisyContrastiveLoss
from loss.distillation import CosineDistillationLoss
from loss.moe_balance import switch_balance_loss


def unit(*shape: int, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def reference_infonce(anchors, targets, labels, temperature):
    """Per-anchor loop: positive = own target, negatives = other targets with a different label."""
    losses = []
    for i in range(anchors.shape[0]):
        sims = (F.normalize(anchors[i], dim=0) @ F.normalize(targets, dim=1).t()) / temperature
        keep = [j for j in range(targets.shape[0]) if j == i or labels is None or labels[j] != labels[i]]
        losses.append(torch.logsumexp(sims[keep], 0) - sims[i])
    return torch.stack(losses).mean()


def test_registered_in_losses():
    for name in ("CleanNoisyContrastiveLoss", "CosineDistillationLoss", "MoEBalanceLoss"):
        assert name in LOSSES


def test_contrastive_positive_on_random_features_and_matches_reference():
    anchors, targets = torch.randn(16, 32), torch.randn(16, 32)
    labels = torch.arange(16)
    loss = CleanNoisyContrastiveLoss(temperature=0.07)(anchors, targets, labels)
    assert loss.item() > 0
    torch.testing.assert_close(loss, reference_infonce(anchors, targets, labels, 0.07))


def test_contrastive_has_gradient_wrt_noisy_anchor():
    anchors = torch.randn(8, 32, requires_grad=True)
    loss = CleanNoisyContrastiveLoss()(anchors, torch.randn(8, 32), torch.arange(8))
    loss.backward()
    assert anchors.grad is not None and anchors.grad.abs().sum().item() > 1e-3


def test_contrastive_decreases_as_noisy_moves_to_clean_target():
    targets, start = unit(16, 64, seed=1), unit(16, 64, seed=2)
    criterion, labels = CleanNoisyContrastiveLoss(), torch.arange(16)
    values = [criterion(torch.lerp(start, targets, alpha), targets, labels).item()
              for alpha in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert all(later < earlier for earlier, later in zip(values, values[1:])), values
    assert values[-1] < 0.05 * values[0]


def test_same_identity_exclusion_changes_value_when_labels_collide():
    anchors, targets = torch.randn(8, 16), torch.randn(8, 16)
    colliding = torch.tensor([0, 0, 1, 1, 2, 3, 4, 5])
    with_exclusion = CleanNoisyContrastiveLoss()(anchors, targets, colliding)
    without = CleanNoisyContrastiveLoss(exclude_same_identity=False)(anchors, targets, colliding)
    unlabelled = CleanNoisyContrastiveLoss()(anchors, targets, None)
    assert not torch.isclose(with_exclusion, without)
    torch.testing.assert_close(without, unlabelled)
    torch.testing.assert_close(with_exclusion, reference_infonce(anchors, targets, colliding, 0.07))
    distinct = CleanNoisyContrastiveLoss()(anchors, targets, torch.arange(8))
    torch.testing.assert_close(distinct, without)  # nothing to exclude: same value


def test_contrastive_stable_in_bf16_autocast():
    anchors = (torch.randn(32, 128) * 30).bfloat16().requires_grad_()
    targets = (torch.randn(32, 128) * 30).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = CleanNoisyContrastiveLoss(temperature=0.02)(anchors, targets, torch.arange(32) % 5)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(anchors.grad.float()).all()
    reference = CleanNoisyContrastiveLoss(temperature=0.02)(anchors.detach().float(), targets.float(),
                                                            torch.arange(32) % 5)
    torch.testing.assert_close(loss, reference, rtol=1e-4, atol=1e-4)


def test_multi_view_anchors_average_the_single_view_losses():
    targets, labels = torch.randn(6, 16), torch.tensor([0, 0, 1, 2, 3, 4])
    views = torch.randn(6, 3, 16)
    criterion = CleanNoisyContrastiveLoss()
    combined = criterion(views, targets, labels)
    separate = torch.stack([criterion(views[:, v], targets, labels) for v in range(3)]).mean()
    torch.testing.assert_close(combined, separate)


def test_queue_adds_negatives_in_training_only():
    criterion = CleanNoisyContrastiveLoss(queue_size=8)
    anchors, targets, labels = torch.randn(4, 16), torch.randn(4, 16), torch.arange(4)
    criterion.eval()
    first = criterion(anchors, targets, labels)
    assert criterion.queue_filled == 0
    criterion.train()
    assert torch.isclose(criterion(anchors, targets, labels), first)  # queue still empty during this call
    assert criterion.queue_filled == 4
    with_queue = criterion(anchors, targets, labels + 100)
    assert with_queue.item() > first.item()  # 4 more negatives in the denominator
    criterion(torch.randn(8, 16), torch.randn(8, 16), torch.arange(8))
    assert criterion.queue_filled == 8 and criterion.queue.shape == (8, 16)
    assert "queue" not in criterion.state_dict()


def test_queue_entries_with_the_anchor_identity_are_excluded():
    criterion = CleanNoisyContrastiveLoss(queue_size=4).train()
    anchors, targets, labels = torch.randn(4, 16), torch.randn(4, 16), torch.arange(4)
    criterion(anchors, targets, labels)  # fills the queue with labels 0..3
    same_labels = criterion(anchors, targets, labels)  # every queue entry shares a label with one anchor
    criterion.reset_queue()
    criterion(anchors, targets, labels)
    unrelated = criterion(anchors, targets, labels + 10)  # queue labels 0..3 ≠ 10..13: all kept as negatives
    assert same_labels.item() < unrelated.item()


def test_contrastive_rejects_bad_shapes():
    criterion = CleanNoisyContrastiveLoss()
    with pytest.raises(ValueError, match="anchors"):
        criterion(torch.randn(4, 8), torch.randn(5, 8))
    with pytest.raises(ValueError, match="labels"):
        criterion(torch.randn(4, 8), torch.randn(4, 8), torch.arange(3))
    with pytest.raises(ValueError, match="temperature"):
        CleanNoisyContrastiveLoss(temperature=0)


def test_cosine_distillation_values():
    student, teacher = unit(8, 32, seed=4), unit(8, 32, seed=5)
    cosine = CosineDistillationLoss("cosine")
    assert cosine(teacher * 3.0, teacher).item() == pytest.approx(0.0, abs=1e-6)
    expected = (1 - (student * teacher).sum(1)).mean()
    torch.testing.assert_close(cosine(student, teacher), expected)
    torch.testing.assert_close(CosineDistillationLoss("mse")(student, teacher), 2 * expected)
    orthogonal = torch.eye(4)
    assert cosine(orthogonal, orthogonal.roll(1, 0)).item() == pytest.approx(1.0)


def test_distillation_gradient_and_errors():
    student = torch.randn(4, 16, requires_grad=True)
    CosineDistillationLoss()(student, torch.randn(4, 16)).backward()
    assert student.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="form"):
        CosineDistillationLoss("l1")
    with pytest.raises(ValueError, match="same shape"):
        CosineDistillationLoss()(torch.randn(4, 16), torch.randn(4, 8))


def test_balance_loss_is_one_for_uniform_and_num_experts_for_collapse():
    uniform = torch.full((64, 4), 0.25)
    collapsed = F.one_hot(torch.zeros(64, dtype=torch.long), 4).float()
    skewed = torch.softmax(torch.randn(64, 4) * 3 + torch.tensor([2.0, 0, 0, 0]), dim=1)
    assert switch_balance_loss(uniform).item() == pytest.approx(1.0)
    assert switch_balance_loss(collapsed).item() == pytest.approx(4.0)
    assert 1.0 < switch_balance_loss(skewed).item() < 4.0
    balanced_hard = F.one_hot(torch.arange(64) % 4, 4).float()
    assert switch_balance_loss(balanced_hard).item() == pytest.approx(1.0)
    assert switch_balance_loss(balanced_hard, top_k=2).item() > 0


def test_balance_loss_gradient_lowers_the_overloaded_expert():
    logits = (torch.randn(32, 4) * 0.1 + torch.tensor([1.0, 0, 0, 0])).requires_grad_()
    switch_balance_loss(logits.softmax(dim=1)).backward()
    assert logits.grad[:, 0].sum() > 0 > logits.grad[:, 1:].sum()  # gradient descent lowers expert 0's logits


def test_balance_loss_rejects_bad_input():
    with pytest.raises(ValueError):
        switch_balance_loss(torch.rand(4))
    with pytest.raises(ValueError, match="top_k"):
        switch_balance_loss(torch.rand(4, 3), top_k=4)
