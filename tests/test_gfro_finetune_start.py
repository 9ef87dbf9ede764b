"""Fine-tuning starts where the released model is (``runtime.init_weights`` on a released trunk, GFROEmbedding).

(a) the student's global branch reproduces the release's embedding exactly; (b) at step 0 the student's final
embedding is the same in train mode (the first training step's forward, batch statistics) and in eval mode (what
``init_head: class_means`` imprinted the head with): cosine ≥ 0.99 per image. Checked on random weights of the
released architecture (always) and on the real release + real CelebA faces of ``../shared`` (skips without it).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from backbone import build_backbone
from backbone.gfro import GFROEmbedding
from utils.checkpoint import export_backbone
from utils.config import load_config, merge

REPO = Path(__file__).resolve().parents[1]
PRESET = REPO / "configs" / "gfro" / "celeba_finetune_mobilefacenet.yaml"
RELEASE_ARCH = {"type": "MobileFaceNetReLU6", "feat_dim": 128, "input_size": [112, 112]}


def step0_embeddings(trainer):
    """(clean uint8 batch of step 0, eval-mode embedding, train-mode embedding of the same clean images as the first
    training step computes it, global-branch embedding in eval mode) — nothing is optimised."""
    batch = trainer._to_device(next(iter(trainer._loader())))
    backbone = trainer.module.backbone
    x = trainer.module.inputs(batch["image"])
    backbone.eval()
    with torch.no_grad():
        evaluated = backbone(x)
        global_branch = backbone.trunk.forward_neck(backbone.trunk.forward_features(x))
    captured = []
    original = backbone.forward_train

    def recording(inputs, **kwargs):
        captured.append(original(inputs, **kwargs))
        return captured[-1]

    backbone.forward_train = recording
    try:
        trainer._set_train_mode()
        with torch.no_grad():
            trainer.train_module(batch)  # the loss forward of step 0 (clean + noisy views, teacher, head)
    finally:
        del backbone.forward_train
    trained = captured[0]["embedding"][:batch["image"].shape[0]]
    return batch, evaluated, trained, global_branch


def release_embedding(release, x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    release = release.eval()
    if channels_last:  # the same memory format as the trainer's student, so the same kernels run
        release = release.to(memory_format=torch.channels_last)
    with torch.no_grad():
        return release(x)


def check_start(trainer, release, min_release_cosine: float):
    batch, evaluated, trained, global_branch = step0_embeddings(trainer)
    x = trainer.module.inputs(batch["image"])
    reference = release_embedding(release, x, trainer.channels_last)
    # (a) the global branch IS the release
    assert torch.equal(global_branch, reference), (global_branch - reference).abs().max()
    # (b) train mode at step 0 == eval mode (head imprinting) per image
    per_image = F.cosine_similarity(trained, evaluated, dim=1)
    assert per_image.min().item() >= 0.99, per_image.min().item()
    # ... and the fused embedding starts close to the release's
    assert F.cosine_similarity(evaluated, reference, dim=1).min().item() >= min_release_cosine
    return per_image


def preset_config(**overrides) -> dict:
    cfg = load_config(PRESET)
    cfg = merge(cfg, {"runtime": {"device": "cpu"}, "data": {"num_workers": 0}})
    return merge(cfg, overrides)


# ------------------------------------------------------------------------------------------- without ../shared
@pytest.fixture
def random_release(tmp_path):
    """A MobileFaceNetReLU6 with random weights and random BatchNorm statistics, exported like a release."""
    torch.manual_seed(0)
    model = build_backbone(dict(RELEASE_ARCH)).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.1)
    kwargs = {k: v for k, v in RELEASE_ARCH.items() if k != "type"}
    preprocess = load_config(PRESET)["data"]["preprocess"]
    export = export_backbone(model, {"arch": RELEASE_ARCH["type"], "kwargs": kwargs, "embedding_dim": 128,
                                     "preprocess": preprocess}, tmp_path / "release")
    return model, export


def test_finetuning_starts_at_a_random_release(random_faces, random_release, tmp_path):
    from training_mode.trainer import Trainer

    model, export = random_release
    cfg = preset_config(
        data={"train": {"type": "ImageListDataset", "root": str(random_faces / "images"),
                        "list_file": str(random_faces / "train_list.txt")}, "batch_size": 16},
        teacher={"weights": str(export)},
        runtime={"init_weights": {"weights": str(export)}})
    trainer = Trainer(cfg, tmp_path / "run")
    try:
        backbone = trainer.module.backbone
        assert isinstance(backbone, GFROEmbedding)
        for name, value in model.state_dict().items():  # the trunk's BN statistics are the release's, untouched
            assert torch.equal(backbone.trunk.state_dict()[name], value), name
        check_start(trainer, model, min_release_cosine=0.9)
        region_bn = backbone.region_branches[0].bn_embedding
        assert not torch.equal(region_bn.running_var, torch.ones_like(region_bn.running_var))  # calibrated
    finally:
        trainer.close()


def test_gfro_bns_take_statistics_from_the_clean_rows_only():
    """With stats_rows = the clean rows, neither the clean embeddings nor the running statistics depend on the
    noisy rows of the same forward (the trunk's BNs frozen, as when fine-tuning)."""
    torch.manual_seed(0)
    model = build_backbone({"type": "GFROEmbedding", "trunk": {"type": "MobileFaceNet", "feat_dim": 64, "width": 0.25},
                            "feat_dim": 64, "expert_hidden": 16, "gate_hidden": 16}).train()
    model.trunk.eval()
    generator = torch.Generator().manual_seed(1)
    clean, noisy = torch.randn(6, 3, 112, 112, generator=generator), torch.randn(6, 3, 112, 112, generator=generator)
    alone, mixed = model, build_backbone({"type": "GFROEmbedding",
                                          "trunk": {"type": "MobileFaceNet", "feat_dim": 64, "width": 0.25},
                                          "feat_dim": 64, "expert_hidden": 16, "gate_hidden": 16})
    mixed.load_state_dict(model.state_dict())
    mixed.train()
    mixed.trunk.eval()
    with torch.no_grad():
        reference = alone.forward_train(clean)["embedding"]
        both = mixed.forward_train(torch.cat([clean, 5.0 * noisy]), stats_rows=6)["embedding"]
    torch.testing.assert_close(both[:6], reference, rtol=1e-4, atol=1e-5)
    for name, value in alone.state_dict().items():
        if "region_branches" in name and "running" in name:
            torch.testing.assert_close(mixed.state_dict()[name], value, rtol=1e-5, atol=1e-6)
    assert mixed.region_branches[0].bn_pooled.num_batches_tracked.item() == 1


# ---------------------------------------------------------------------------------------------- with ../shared
def celeba_subset(shared, root: Path, identities: int = 32, per_identity: int = 8) -> Path:
    """``identities`` CelebA identities with at least ``per_identity`` faces, that many each (symlinks)."""
    images = shared("data/celeba_subset_112/images").resolve()
    chosen = [d for d in sorted(images.iterdir()) if d.is_dir() and len(list(d.iterdir())) >= per_identity]
    for folder in chosen[:identities]:
        (root / folder.name).mkdir(parents=True)
        for image in sorted(folder.iterdir())[:per_identity]:
            (root / folder.name / image.name).symlink_to(image)
    return root


def test_celeba_preset_starts_at_the_release_on_real_faces(shared, tmp_path):
    """The CelebA preset's model, built through the config: 256 real faces, the 64 of step 0 are checked."""
    from face_sdk.released import load_released_recognizer
    from training_mode.trainer import Trainer

    shared("weights/recognition/foamliu_mobilefacenet_ms1m.pt")
    root = celeba_subset(shared, tmp_path / "celeba")
    trainer = Trainer(preset_config(data={"train": {"root": str(root)}}), tmp_path / "run")
    try:
        assert trainer.batch_size == 64
        release, _ = load_released_recognizer("foamliu_mobilefacenet_ms1m")
        check_start(trainer, release, min_release_cosine=0.98)
    finally:
        trainer.close()
