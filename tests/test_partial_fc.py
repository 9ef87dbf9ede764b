"""Partial FC (head/partial_fc.py): on one process it is the wrapped margin head (every registered one), sampling
keeps the positives and scores over the kept classes only; under torchrun (2 gloo processes) training with
sample rate 1 equals the full classifier on the joined batch, and a 2-rank checkpoint resumes on 1 rank."""
from __future__ import annotations

import textwrap

import pytest
import torch
import torch.nn.functional as F
import yaml

from head import HEADS, build_head
from head.margin_base import MarginHead, cross_entropy_rows
from head.partial_fc import INIT_BLOCK, initial_rows
from tests.test_trainer import tiny_config
from tests.test_trainer_ddp_resume import torchrun
from training_mode.trainer import Trainer
from utils.checkpoint import load_checkpoint
from utils.distributed import shard_range

MARGIN_HEADS = [name for name in HEADS.names() if isinstance(HEADS.get(name), type)
                and issubclass(HEADS.get(name), MarginHead)]


def batch(rows: int = 12, dim: int = 16, classes: int = 9, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return 4.0 * torch.randn(rows, dim, generator=generator), torch.randint(0, classes, (rows,), generator=generator)


@pytest.mark.parametrize("name", MARGIN_HEADS)
def test_one_process_partial_fc_is_the_wrapped_head(name):
    embeddings, labels = batch()
    partial = build_head({"type": "PartialFC", "head": {"type": name}}, feat_dim=16, num_class=9).train()
    plain = build_head({"type": name}, feat_dim=16, num_class=9).train()
    plain.load_state_dict(partial.head.state_dict())
    inputs = [embeddings.clone().requires_grad_(True) for _ in range(2)]
    torch.manual_seed(5)  # heads with random margins (ElasticFace) draw the same margins
    out_partial = partial(inputs[0], labels)
    torch.manual_seed(5)
    out_plain = plain(inputs[1], labels)
    expected = F.cross_entropy(out_plain["logits"].float(), labels, reduction="none")
    torch.testing.assert_close(out_partial["ce_per_row"], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cross_entropy_rows(out_plain, labels), expected)
    loss_partial = out_partial["ce_per_row"].mean() + out_partial.get("aux_loss", 0.0)
    loss_plain = expected.mean() + out_plain.get("aux_loss", 0.0)
    loss_partial.backward()
    loss_plain.backward()
    torch.testing.assert_close(inputs[0].grad, inputs[1].grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(partial.head.weight.grad, plain.weight.grad, atol=1e-5, rtol=1e-4)
    for (key, value), reference in zip(partial.head.named_buffers(), plain.buffers()):
        torch.testing.assert_close(value, reference, msg=f"{name}.{key}")


def test_sampling_keeps_positives_and_scores_the_kept_classes_only():
    embeddings, labels = batch(rows=6, classes=40)
    partial = build_head({"type": "PartialFC", "head": {"type": "CosFace"}, "sample_rate": 0.25},
                         feat_dim=16, num_class=40).train()
    torch.manual_seed(3)
    out = partial(embeddings, labels)
    kept = out["logits"].shape[1]
    assert kept == max(10, int(torch.unique(labels).numel()))
    torch.manual_seed(3)  # the same draw: recompute the CE over the kept classes independently
    index, column = partial._sample(labels.clone())
    assert set(labels.tolist()) <= set(index.tolist())
    assert torch.equal(index[column], labels)
    cosine = F.normalize(embeddings, dim=1) @ F.normalize(partial.head.weight[index], dim=1).t()
    logits = cosine.clone()
    logits[torch.arange(6), column] -= partial.head.margin
    expected = F.cross_entropy(partial.head.scale * logits, column, reduction="none")
    torch.testing.assert_close(out["ce_per_row"], expected, atol=1e-5, rtol=1e-5)


def test_initial_centres_and_shards_do_not_depend_on_the_world_size():
    total = INIT_BLOCK + 37
    full = initial_rows(0, total, 8, seed=2)
    assert full.shape == (total, 8) and abs(float(full.std()) - 0.01) < 1e-3
    for world in (2, 3, 4):
        ranges = [shard_range(total, rank, world) for rank in range(world)]
        assert ranges[0][0] == 0 and ranges[-1][1] == total
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
        assert max(b - a for a, b in ranges) - min(b - a for a, b in ranges) <= 1
        torch.testing.assert_close(torch.cat([initial_rows(a, b, 8, seed=2) for a, b in ranges]), full,
                                   atol=0, rtol=0)


def test_bad_partial_fc_configs_are_named():
    with pytest.raises(ValueError, match="sample_rate"):
        build_head({"type": "PartialFC", "sample_rate": 0}, feat_dim=8, num_class=4)
    with pytest.raises(ValueError, match="head.head.num_class"):
        build_head({"type": "PartialFC", "head": {"type": "ArcFace", "num_class": 3}}, feat_dim=8, num_class=4)


# Trains the Partial FC config under torchrun until runtime.max_steps (checkpoint last.pt).
WORKER = textwrap.dedent("""
    import sys

    import yaml

    from training_mode.trainer import Trainer

    config, work_dir = sys.argv[1:3]
    trainer = Trainer(yaml.safe_load(open(config)), work_dir)
    try:
        trainer.fit()
    finally:
        trainer.close()
""")


def joined_config(faces, head: dict, batch_size: int, **runtime) -> dict:
    cfg = tiny_config(faces, freeze_bn_stats=True, **runtime)  # BN in eval mode: per-sample, batch-size-free
    cfg["data"]["batch_size"] = batch_size
    cfg["head"] = head
    return cfg


def test_two_ranks_equal_the_full_classifier_and_resume_on_one_rank(random_faces, tmp_path):
    partial_head = {"type": "PartialFC", "head": {"type": "ArcFace", "margin": 0.35, "scale": 32.0},
                    "sample_rate": 1.0}
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    config = tmp_path / "pfc.yaml"
    config.write_text(yaml.safe_dump(joined_config(random_faces, partial_head, batch_size=8, max_steps=4)))
    torchrun(str(worker), str(config), str(tmp_path / "two"))
    two = load_checkpoint(tmp_path / "two" / "checkpoints" / "last.pt")

    # the full classifier, one process, batch 16 = the joined batch of the two ranks, same initial centres
    reference = Trainer(joined_config(random_faces, {"type": "ArcFace", "margin": 0.35, "scale": 32.0},
                                      batch_size=16, checkpoint_interval_steps=1), tmp_path / "one")
    num_class = reference.num_class
    with torch.no_grad():
        reference.module.head.weight.copy_(initial_rows(0, num_class, reference.module.backbone.feat_dim, 0))
    try:
        history = reference.fit()["history"]
    finally:
        reference.close()
    full = load_checkpoint(tmp_path / "one" / "checkpoints" / "last.pt")
    steps = len(history)
    assert two["global_step"] == 4 and steps == 6
    assert two["model"]["head.head.weight"].shape == (num_class, 64)  # world-size-free: every class centre
    assert_same_model(two, load_checkpoint(tmp_path / "one" / "checkpoints" / "step_0000004.pt"))

    # resume the 2-rank checkpoint on 1 rank with the joined batch and finish: equals the uninterrupted full run
    resumed_cfg = joined_config(random_faces, partial_head, batch_size=16)
    resumed = Trainer(resumed_cfg, tmp_path / "two", resume="auto")
    assert resumed.global_step == 4
    try:
        resumed_history = resumed.fit()["history"]
    finally:
        resumed.close()
    after = load_checkpoint(tmp_path / "two" / "checkpoints" / "last.pt")
    assert [row["loss"] for row in resumed_history] == pytest.approx([row["loss"] for row in history[4:]], rel=1e-4)
    assert_same_model(after, full)


def assert_same_model(partial: dict, full: dict) -> None:
    """Partial FC checkpoint (head.head.weight + its momentum) vs the full classifier's (head.weight)."""
    torch.testing.assert_close(partial["model"]["head.head.weight"], full["model"]["head.weight"], atol=1e-5, rtol=0)
    compared = 0
    for key, value in full["model"].items():
        if key.startswith("backbone.") and value.is_floating_point():
            torch.testing.assert_close(partial["model"][key], value, atol=1e-5, rtol=1e-4, msg=key)
            compared += 1
    assert compared > 10
