"""Rank-correct training under torchrun (2 gloo processes on the CPU): the gathered clean–noisy contrastive loss
equals the single-process loss on the joined batch, its queue is the same on every rank, and a non-finite loss on
one rank stops every rank together with one clear error (no rank left waiting in the all-reduce)."""
from __future__ import annotations

import json
import textwrap

import pytest
import torch
import yaml

from loss.contrastive import CleanNoisyContrastiveLoss
from tests.test_trainer import tiny_config
from tests.test_trainer_ddp_resume import torchrun

WORLD, BATCH, VIEWS, DIM = 2, 6, 2, 16

# Every rank draws the same global batch, keeps its slice, and writes its loss, anchor gradient and queue.
CONTRASTIVE_WORKER = textwrap.dedent("""
    import json, sys

    import torch
    import torch.distributed as dist

    from loss.contrastive import CleanNoisyContrastiveLoss

    world, batch, views, dim, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    loss_fn = CleanNoisyContrastiveLoss(temperature=0.1, queue_size=2 * world * batch).train()
    result = {"losses": [], "grads": []}
    for step in range(2):
        generator = torch.Generator().manual_seed(step)
        anchors = torch.randn(world * batch, views, dim, generator=generator)
        targets = torch.randn(world * batch, dim, generator=generator)
        labels = torch.randint(0, 5, (world * batch,), generator=generator)
        mine = slice(rank * batch, (rank + 1) * batch)
        local = anchors[mine].clone().requires_grad_(True)
        loss = loss_fn(local, targets[mine], labels[mine])
        loss.backward()
        result["losses"].append(float(loss))
        result["grads"].append(local.grad.tolist())
    result["queue"] = loss_fn.queue[:loss_fn.queue_filled].tolist()
    result["queue_labels"] = loss_fn.queue_labels[:loss_fn.queue_filled].tolist()
    with open(f"{out}.rank{rank}.json", "w") as handle:
        json.dump(result, handle)
    dist.destroy_process_group()
""")

# Each rank feeds its slice of one global batch to CurricularFace and AdaFace and writes their buffers.
HEAD_BUFFERS_WORKER = textwrap.dedent("""
    import json, sys

    import torch
    import torch.distributed as dist

    from head import build_head

    world, batch, dim, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    buffers = {}
    for name in ("CurricularFace", "AdaFace"):
        torch.manual_seed(0)
        head = build_head({"type": name}, feat_dim=dim, num_class=7).train()
        generator = torch.Generator().manual_seed(1)
        embeddings = 5.0 * torch.randn(world * batch, dim, generator=generator)
        labels = torch.randint(0, 7, (world * batch,), generator=generator)
        mine = slice(rank * batch, (rank + 1) * batch)
        head(embeddings[mine], labels[mine])
        buffers[name] = {key: value.tolist() for key, value in head.named_buffers()}
    with open(f"{out}.rank{rank}.json", "w") as handle:
        json.dump(buffers, handle)
    dist.destroy_process_group()
""")

# Rank 1's loss turns NaN at global step 2; every rank must raise the same FloatingPointError (caught and written).
NAN_WORKER = textwrap.dedent("""
    import sys

    import torch
    import yaml

    from training_mode.trainer import Trainer

    config, work_dir, out = sys.argv[1:4]
    trainer = Trainer(yaml.safe_load(open(config)), work_dir)
    compute_loss = trainer.module.compute_loss

    def poisoned(batch):
        result = compute_loss(batch)
        if trainer.dist.rank == 1 and trainer.global_step >= 2:
            result["loss"] = result["loss"] * float("nan")
        return result

    trainer.module.compute_loss = poisoned
    try:
        trainer.fit()
        message = "finished without an error"
    except FloatingPointError as error:
        message = str(error)
    finally:
        trainer.close()
    with open(f"{out}.rank{trainer.dist.rank}.txt", "w") as handle:
        handle.write(message)
""")


def single_process(steps: int = 2):
    """Losses, anchor gradients and the final queue of the same batches on one process (the joined batch)."""
    loss_fn = CleanNoisyContrastiveLoss(temperature=0.1, queue_size=2 * WORLD * BATCH).train()
    losses, grads = [], []
    for step in range(steps):
        generator = torch.Generator().manual_seed(step)
        anchors = torch.randn(WORLD * BATCH, VIEWS, DIM, generator=generator).requires_grad_(True)
        targets = torch.randn(WORLD * BATCH, DIM, generator=generator)
        labels = torch.randint(0, 5, (WORLD * BATCH,), generator=generator)
        loss = loss_fn(anchors, targets, labels)
        loss.backward()
        losses.append(float(loss.detach()))
        grads.append(anchors.grad)
    return losses, grads, loss_fn.queue[:loss_fn.queue_filled], loss_fn.queue_labels[:loss_fn.queue_filled]


def test_gathered_contrastive_loss_equals_the_joined_batch(tmp_path):
    worker = tmp_path / "worker.py"
    worker.write_text(CONTRASTIVE_WORKER)
    torchrun(str(worker), str(WORLD), str(BATCH), str(VIEWS), str(DIM), str(tmp_path / "out"))
    ranks = [json.loads((tmp_path / f"out.rank{rank}.json").read_text()) for rank in range(WORLD)]
    losses, grads, queue, queue_labels = single_process()
    for step in range(2):
        # DDP averages the ranks' gradients: the mean of the rank losses is what is optimised
        mean_loss = sum(rank["losses"][step] for rank in ranks) / WORLD
        assert mean_loss == pytest.approx(losses[step], abs=1e-5)
        # the gradient of the mean loss wrt anchor i is 1/W of its rank's local gradient
        joined = torch.cat([torch.tensor(rank["grads"][step]) for rank in ranks]) / WORLD
        torch.testing.assert_close(joined, grads[step], atol=1e-6, rtol=1e-5)
    for rank in ranks:  # the queue holds the gathered targets in rank order: identical on every rank
        torch.testing.assert_close(torch.tensor(rank["queue"]), queue, atol=1e-6, rtol=1e-5)
        assert rank["queue_labels"] == queue_labels.tolist()
    # the local-negatives loss (what each rank computed before) differs: the test would catch a missing gather
    local_fn = CleanNoisyContrastiveLoss(temperature=0.1)
    generator = torch.Generator().manual_seed(0)
    anchors = torch.randn(WORLD * BATCH, VIEWS, DIM, generator=generator)
    targets = torch.randn(WORLD * BATCH, DIM, generator=generator)
    labels = torch.randint(0, 5, (WORLD * BATCH,), generator=generator)
    local_mean = sum(float(local_fn(anchors[r * BATCH:(r + 1) * BATCH], targets[r * BATCH:(r + 1) * BATCH],
                                    labels[r * BATCH:(r + 1) * BATCH])) for r in range(WORLD)) / WORLD
    assert abs(local_mean - losses[0]) > 1e-3


def test_head_buffers_follow_the_global_batch_on_every_rank(tmp_path):
    from head import build_head

    worker = tmp_path / "worker.py"
    worker.write_text(HEAD_BUFFERS_WORKER)
    torchrun(str(worker), str(WORLD), str(BATCH), str(DIM), str(tmp_path / "out"))
    ranks = [json.loads((tmp_path / f"out.rank{rank}.json").read_text()) for rank in range(WORLD)]
    generator = torch.Generator().manual_seed(1)
    embeddings = 5.0 * torch.randn(WORLD * BATCH, DIM, generator=generator)
    labels = torch.randint(0, 7, (WORLD * BATCH,), generator=generator)
    for name in ("CurricularFace", "AdaFace"):
        torch.manual_seed(0)
        head = build_head({"type": name}, feat_dim=DIM, num_class=7).train()
        initial = {key: value.clone() for key, value in head.named_buffers()}
        head(embeddings, labels)  # one process, the joined batch
        for key, value in head.named_buffers():
            assert not torch.equal(value, initial[key]), f"{name}.{key} did not move"
            for rank in ranks:
                assert rank[name][key] == pytest.approx(value.tolist(), abs=1e-5), (name, key)


def test_nan_on_one_rank_stops_every_rank_with_one_error(random_faces, tmp_path):
    worker = tmp_path / "worker.py"
    worker.write_text(NAN_WORKER)
    config = tmp_path / "ddp.yaml"
    config.write_text(yaml.safe_dump(tiny_config(random_faces, max_steps=6)))
    run = tmp_path / "run"
    torchrun(str(worker), str(config), str(run), str(tmp_path / "out"))  # returns: no rank hangs (timeout 600 s)
    messages = [(tmp_path / f"out.rank{rank}.txt").read_text() for rank in range(WORLD)]
    for message in messages:
        assert message.startswith("non-finite loss on rank(s) [1] at global step 2"), message
        assert "nan_step_0000002.pt" in message
    assert (run / "checkpoints" / "nan_step_0000002.pt").is_file()
