"""FaceT (backbone/vit.py, training_mode/facet.py, training_mode/mae.py): shapes and constants against methods.md §4,
the block / prompt-pool / MAE-loss math against float64 recomputations, the flag path (classifier, oracle, ONNX),
layer decay, the MAE → fine-tune start, the oracle flag in evaluation, the presets, and a learning figure."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from backbone import build_backbone
from backbone.vit import FaceT, patchify, sincos_2d_positions
from data_processor.preprocess import PreprocessSpec
from head import build_head
from training_mode.facet import FaceTTraining
from training_mode.mae import MAEPretraining, random_masking
from training_mode.schedule import build_optimizer
from utils.config import load_config, merge

REPO = Path(__file__).resolve().parents[1]
TINY = {"type": "FaceT", "dim": 32, "depth": 2, "heads": 2, "prompt_layers": 2, "num_prompts": 4,
        "classifier_hidden": 16, "input_size": [32, 32]}


def tiny(**kwargs) -> FaceT:
    torch.manual_seed(0)
    return build_backbone({**TINY, **kwargs})


def images(batch: int = 4, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


# --- shapes and constants (methods.md §4.1) ----------------------------------------------------------------------

def test_facet_b_shapes_and_deepnorm_constants():
    with torch.device("meta"):
        model = build_backbone({"type": "FaceT"})
    assert model.num_tokens == 196 and model.patch_embed.in_features == 192 and model.dim == 768
    assert tuple(model.pos_embed.shape) == (1, 196, 768)
    assert tuple(model.prompts.shape) == (12, 2, 32, 768)
    assert tuple(model.pool.queries.shape) == (2, 12, 32, 64)
    assert model.pool.scale == pytest.approx(768 ** -0.5)
    assert model.readout.out_features == 512 and not model.bn_embedding.affine
    assert model.alpha == pytest.approx(24 ** 0.25) == pytest.approx(2.2134, abs=1e-4)
    assert model.beta == pytest.approx(96 ** -0.25) == pytest.approx(0.3195, abs=1e-4)
    assert all(block.alpha == model.alpha for block in model.blocks)


def test_patchify_order_matches_a_loop():
    x = torch.randn(2, 3, 112, 112, dtype=torch.float64)
    tokens = patchify(x, 8)
    assert tokens.shape == (2, 196, 192)
    for b, row, col in [(0, 0, 0), (1, 3, 11), (0, 13, 13)]:
        expected = [x[b, c, row * 8 + p1, col * 8 + p2] for p1 in range(8) for p2 in range(8) for c in range(3)]
        assert torch.equal(tokens[b, row * 14 + col], torch.stack(expected))


def test_deepnorm_init_gain_is_beta():
    torch.manual_seed(0)
    model = build_backbone({"type": "FaceT", "dim": 128, "depth": 12, "heads": 4, "prompt_layers": 0,
                            "input_size": [16, 16]})
    weights = torch.cat([block.mlp.fc1.weight.flatten() for block in model.blocks])
    expected = (8 * 12) ** -0.25 * math.sqrt(2.0 / (128 + 512))  # Xavier-normal std with gain β
    assert weights.std().item() == pytest.approx(expected, rel=0.03)
    assert model.readout.weight.abs().max() > 2 * expected  # readout keeps gain 1


def array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().double().numpy()


def reference_attention(x: np.ndarray, block, heads: int) -> np.ndarray:
    """Self-attention of one sample in float64 with explicit per-head loops."""
    qkv_w, qkv_b = block.attn.qkv.weight.detach().double().numpy(), block.attn.qkv.bias.detach().double().numpy()
    proj_w, proj_b = block.attn.proj.weight.detach().double().numpy(), block.attn.proj.bias.detach().double().numpy()
    dim = x.shape[1]
    head_dim = dim // heads
    qkv = x @ qkv_w.T + qkv_b
    q, k, v = qkv[:, :dim], qkv[:, dim:2 * dim], qkv[:, 2 * dim:]
    out = np.zeros_like(x)
    for h in range(heads):
        cols = slice(h * head_dim, (h + 1) * head_dim)
        scores = q[:, cols] @ k[:, cols].T / math.sqrt(head_dim)
        weights = np.exp(scores - scores.max(1, keepdims=True))
        out[:, cols] = (weights / weights.sum(1, keepdims=True)) @ v[:, cols]
    return out @ proj_w.T + proj_b


def layer_norm(x: np.ndarray, ln) -> np.ndarray:
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + ln.eps) * ln.weight.detach().double().numpy() + ln.bias.detach().double().numpy()


def mlp(x: np.ndarray, block) -> np.ndarray:
    hidden = x @ block.mlp.fc1.weight.detach().double().numpy().T + block.mlp.fc1.bias.detach().double().numpy()
    hidden = 0.5 * hidden * (1 + np.vectorize(math.erf)(hidden / math.sqrt(2)))
    return hidden @ block.mlp.fc2.weight.detach().double().numpy().T + block.mlp.fc2.bias.detach().double().numpy()


@pytest.mark.parametrize("norm", ["deepnorm", "prenorm"])
def test_block_matches_float64_recomputation(norm):
    model = tiny(norm=norm).eval()
    block = model.blocks[0]
    x = torch.randn(1, 10, 32)
    with torch.no_grad():
        actual = block(x)[0].detach().double().numpy()
    xs = x[0].detach().double().numpy()
    if norm == "deepnorm":
        alpha = (2 * 2) ** 0.25
        h = layer_norm(alpha * xs + reference_attention(xs, block, 2), block.norm1)
        expected = layer_norm(alpha * h + mlp(h, block), block.norm2)
    else:
        h = xs + reference_attention(layer_norm(xs, block.norm1), block, 2)
        expected = h + mlp(layer_norm(h, block.norm2), block)
    np.testing.assert_allclose(actual, expected, atol=2e-5)


def test_prompt_pool_matches_float64_recomputation():
    model = tiny().eval()
    pool = model.pool
    with torch.no_grad():
        pool.queries.normal_()
    tokens = torch.randn(2, 16, 32)
    flag = torch.tensor([0.0, 1.0])
    with torch.no_grad():
        actual = pool(tokens, flag).detach().double().numpy()
    queries, key_w, key_b = (pool.queries.detach().double().numpy(), pool.key.weight.detach().double().numpy(),
                             pool.key.bias.detach().double().numpy())
    for b in range(2):
        x = tokens[b].detach().double().numpy()
        keys = x @ key_w.T + key_b
        for h in range(2):
            cols = slice(h * 16, (h + 1) * 16)
            scores = queries[int(flag[b]), h] @ keys[:, cols].T / math.sqrt(32)  # scale D^-1/2, the full width
            weights = np.exp(scores - scores.max(1, keepdims=True))
            expected = (weights / weights.sum(1, keepdims=True)) @ x[:, cols]
            np.testing.assert_allclose(actual[b, :, cols], expected, atol=1e-5)


def test_deep_prompts_follow_the_flag_per_sample():
    model = tiny().eval()
    x = images(2)
    with torch.no_grad():
        tokens = model.embed_patches(x)
        out = model.encode(tokens, torch.tensor([1.0, 0.0]))
        for b, y in enumerate((1, 0)):
            manual = tokens[b:b + 1]
            for index, block in enumerate(model.blocks):
                manual = block(torch.cat([model.prompts[index, y].unsqueeze(0), manual], 1))[:, 4:]
            torch.testing.assert_close(out[b], manual[0], atol=1e-5, rtol=0)
        embedding = model.forward_train(x, flag=torch.tensor([0.0, 0.0]))["embedding"]
    assert embedding.shape == (2, 512)


# --- the flag path -------------------------------------------------------------------------------------------------

def test_classifier_flag_drives_prompts_and_oracle_flag_replaces_it():
    model = tiny().eval()
    x = images(3)
    with torch.no_grad():
        as_clean = model.forward_train(x, flag=torch.zeros(3))["embedding"]
        as_occluded = model.forward_train(x, flag=torch.ones(3))["embedding"]
        assert (as_clean - as_occluded).abs().max() > 1e-3
        model.classifier.out.bias.fill_(1e4)
        torch.testing.assert_close(model(x), as_occluded)
        assert torch.equal(model.forward_features(x)[:, -1], torch.ones(3, 4, 4))  # the flag channel
        model.classifier.out.bias.fill_(-1e4)
        torch.testing.assert_close(model(x), as_clean)
        oracle = tiny(flag_source="oracle").eval()
        with pytest.raises(RuntimeError, match="set_oracle_flag"):
            oracle(x)
        oracle.set_oracle_flag(1)
        torch.testing.assert_close(oracle(x), oracle.forward_train(x, flag=torch.ones(3))["embedding"])


def test_width_and_input_size_of_the_comparison_budget():
    model = build_backbone({"type": "FaceT", "width": 0.25, "input_size": [64, 64]})
    assert (model.dim, model.heads, model.num_tokens) == (192, 12, 64)
    model = build_backbone({"type": "FaceTTiny", "dim": 128, "heads": 4, "width": 0.25, "input_size": [64, 64]})
    assert (model.dim, model.heads) == (32, 2)
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 3, 64, 64)).shape == (2, 512)


def test_onnx_export_keeps_the_flag_path(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from utils.export_onnx import export_to_onnx

    model = tiny().eval()
    x = images(6)
    with torch.no_grad():
        logits = model.flag_logits(model.embed_patches(x))
        middle = logits.sort().values[2:4].mean()
        model.classifier.out.bias -= middle  # half the batch flagged occluded, no logit near the threshold
        flags = model.forward_features(x)[:, -1, 0, 0]
        expected = model(x)
    assert 0 < int(flags.sum()) < 6
    path = export_to_onnx(model, (32, 32), tmp_path / "facet.onnx", exporter="torchscript")  # dynamo: 3× slower
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    actual = session.run(["embedding"], {"input": x.numpy()})[0]
    np.testing.assert_allclose(actual, expected.numpy(), atol=1e-4)
    with torch.no_grad():  # the same images with the other flag give other embeddings: the graph kept the switch
        flipped = model.forward_train(x, flag=1 - flags)["embedding"]
    assert np.abs(actual - flipped.numpy()).max(axis=1).min() > 1e-3


# --- training modes ------------------------------------------------------------------------------------------------

SPEC = PreprocessSpec.from_dict({"channel_order": "RGB", "mean": [127.5] * 3, "std": [127.5] * 3,
                                 "input_size": [32, 32]})


def facet_batch(batch: int = 8) -> dict:
    generator = torch.Generator().manual_seed(1)
    return {"image": torch.randint(0, 255, (batch, 3, 32, 32), dtype=torch.uint8, generator=generator),
            "noisy": torch.zeros(batch, 3, 32, 32, dtype=torch.uint8),
            "occlusion_type": torch.tensor([0, 3] * (batch // 2)), "label": torch.arange(batch) % 4}


def test_facet_training_views_flags_and_loss_terms():
    backbone = tiny()
    head = build_head({"type": "MagFace", "lambda_g": 35.0, "scale": 64.0}, feat_dim=512, num_class=4)
    assert head.lambda_g == 35.0
    batch = facet_batch()
    mode = FaceTTraining(backbone, head, SPEC, masked_probability=1.0, flag_weight=0.5)
    chosen, flag = mode.choose_views(batch)
    assert torch.equal(chosen, batch["noisy"]) and torch.equal(flag, torch.tensor([0.0, 1.0] * 4))
    clean, zeros = FaceTTraining(backbone, head, SPEC, masked_probability=0.0).choose_views(batch)
    assert torch.equal(clean, batch["image"]) and not zeros.any()
    torch.manual_seed(0)
    out = mode(batch)
    torch.manual_seed(0)
    logits = backbone.forward_train(mode.inputs(batch["noisy"]), flag=flag)["flag_logits"]
    expected_bce = 0.5 * F.binary_cross_entropy_with_logits(logits, flag)
    assert set(out["terms"]) == {"ce", "head_aux", "flag_bce"}
    torch.testing.assert_close(out["terms"]["flag_bce"], expected_bce.detach())
    torch.testing.assert_close(out["loss"].detach(), sum(out["terms"].values()))


def test_mae_masking_and_masked_patch_mse():
    kept, restore, mask = random_masking(3, 196, 0.75, torch.device("cpu"))
    assert kept.shape == (3, 49) and mask.sum(1).tolist() == [147.0] * 3
    assert torch.equal(mask.gather(1, kept), torch.zeros(3, 49))
    backbone = tiny()
    mode = MAEPretraining(backbone, None, SPEC, decoder_dim=24, decoder_depth=1, decoder_heads=2)
    assert mode.decoder.positions.shape == (1, 16, 24) and mode.head is None
    expected = [math.sin(1), math.sin(0.01), math.cos(1), math.cos(0.01)] * 2  # row 1, col 1; ω = 1, 1/100
    torch.testing.assert_close(sincos_2d_positions(8, (2, 2))[0, 3], torch.tensor(expected))
    batch = facet_batch(4)
    torch.manual_seed(5)
    out = mode(batch)
    torch.manual_seed(5)
    with torch.no_grad():
        parts = mode.reconstruct(mode.inputs(batch["image"]))
    pred, target, hidden = (parts[key].double() for key in ("pred", "target", "mask"))
    total, count = 0.0, 0
    for b in range(4):
        for n in range(16):
            if hidden[b, n] == 1:
                total += float(((pred[b, n] - target[b, n]) ** 2).mean())
                count += 1
    assert count == 4 * (16 - int(16 * 0.25))
    assert out["loss"].item() == pytest.approx(total / count, rel=1e-5)


# --- optimiser: AdamW + layer decay --------------------------------------------------------------------------------

def test_layer_decay_groups_and_no_decay_names():
    backbone, head = tiny(), build_head({"type": "MagFace"}, feat_dim=512, num_class=4)
    optimizer = build_optimizer({"type": "AdamW", "lr": 1e-3, "betas": [0.9, 0.95], "weight_decay": 0.05,
                                 "no_decay_bn_bias": True, "layer_decay": 0.75}, [backbone, head])
    where = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    top = backbone.depth + 1
    for name, param in backbone.named_parameters():
        group = where[id(param)]
        layer = 0 if name.startswith(("patch_embed", "pos_embed")) else (
            int(name.split(".")[1]) + 1 if name.startswith("blocks.") else top)
        assert group["lr"] == pytest.approx(1e-3 * 0.75 ** (top - layer)), name
        decays = param.ndim > 1 and name != "pos_embed"
        assert group.get("weight_decay", 0.05) == (0.05 if decays else 0.0), name
    assert where[id(head.weight)]["lr"] == pytest.approx(1e-3)
    plain = build_optimizer({"type": "SGD", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4}, [backbone, head])
    assert len(plain.param_groups) == 1  # plain configs: one group as before


# --- presets, MAE → fine-tune, oracle evaluation, learning ---------------------------------------------------------

@pytest.mark.parametrize("name", ["facet.yaml", "facet_mae.yaml", "facet_gpu.yaml", "facet_mae_gpu.yaml"])
def test_presets_load_and_build(name):
    from training_mode import TRAINING_MODES

    cfg = load_config(REPO / "configs" / "methods" / name)
    with torch.device("meta"):
        backbone = build_backbone(cfg["backbone"])
        head = build_head(cfg["head"], feat_dim=backbone.feat_dim, num_class=10)
        mode = TRAINING_MODES.build(cfg["training_mode"], where="training_mode", backbone=backbone, head=head,
                                    preprocess_spec=PreprocessSpec.from_dict(cfg["data"]["preprocess"]))
    if name.endswith("_gpu.yaml"):
        assert backbone.dim == 768 and backbone.depth == 12 and backbone.norm_kind == "deepnorm"
    if "mae" in name:
        assert isinstance(mode, MAEPretraining) and mode.mask_ratio == 0.75
    else:
        assert cfg["head"]["lambda_g"] == 35.0 and cfg["optim"]["layer_decay"] == 0.75


def small_config(name: str, steps: int, **update) -> dict:
    """A preset on the embedded synthetic faces (data_cache/, shared with the other tests) at 32×32, tiny sizes."""
    cfg = load_config(REPO / "configs" / "methods" / name)
    return merge(merge(cfg, {
        "data": {"preprocess": {"input_size": [32, 32]}, "batch_size": 32, "num_workers": 0},
        "backbone": {"input_size": [32, 32], "dim": 64, "heads": 2, "depth": 2, "prompt_layers": 2,
                     "num_prompts": 8},
        "eval": {"protocols": []},
        "runtime": {"device": "cpu", "max_steps": steps, "log_interval": 10},
    }), update)


def test_mae_checkpoint_starts_finetuning(tmp_path):
    from training_mode.trainer import Trainer

    mae = Trainer(small_config("facet_mae.yaml", 2, backbone={"prompt_layers": 0}), tmp_path / "mae")
    try:
        mae.fit()
        encoder = {k: v.clone() for k, v in mae.module.backbone.state_dict().items()}
    finally:
        mae.close()
    cfg = small_config("facet.yaml", 1, runtime={"init_weights": {
        "weights": str(tmp_path / "mae" / "checkpoints" / "last.pt"), "module": "backbone"}})
    finetune = Trainer(cfg, tmp_path / "finetune")
    try:
        state = finetune.module.backbone.state_dict()
        assert set(encoder) < set(state) and any(k.startswith("prompts") for k in state)
        for key, value in encoder.items():
            assert torch.equal(state[key], value), key
    finally:
        finetune.close()


def test_oracle_flag_per_image_set_in_evaluation():
    from test_protocol.evaluate import evaluate_model

    class Recorder(torch.nn.Module):
        flag_source, feat_dim = "oracle", 8

        def __init__(self) -> None:
            super().__init__()
            self.flags, self.current = [], None

        def set_oracle_flag(self, flag):
            self.flags.append(flag)
            self.current = flag

        def forward(self, x):
            return x.mean(dim=(2, 3)).repeat(1, 3)[:, :8] + self.current

    model = Recorder()
    rows = evaluate_model(model, SPEC, [{"set": "SYNTH-VAL", "variant": "facexzoo"},
                                        {"set": "SYNTH-VAL-CROP", "variant": "facexzoo"}], "cpu")
    assert model.flags == [0, 1] and [row["flag"] for row in rows] == ["oracle", "oracle"]


def test_facet_learns_above_chance(tmp_path):
    """60 steps of the embedded preset (tiny sizes, 32×32) on 20 identities of the embedded faces (16 images each)
    identify held-out images of those identities (4 each) far above chance (5 %) and the untrained model."""
    from data_processor.image_io import read_image
    from training_mode.trainer import Trainer

    from data_processor.synthetic_faces import ensure_synthetic_faces

    root = REPO / "data_cache" / "synthetic_faces" / "train" / "images"
    ensure_synthetic_faces(root.parents[1])  # the embedded set, built on first use
    list_file = tmp_path / "train_list.txt"
    list_file.write_text("".join(f"{k:05d}/{n:03d}.png {k}\n" for k in range(20) for n in range(16)))
    held_out = torch.stack([torch.from_numpy(read_image(root / f"{k:05d}/{n:03d}.png")).permute(2, 0, 1)
                            for k in range(20) for n in range(16, 20)])
    labels = torch.arange(20).repeat_interleave(4)

    def identify(steps: int) -> tuple:
        cfg = small_config("facet.yaml", steps, data={"train": {"type": "ImageListDataset", "root": str(root),
                                                                "list_file": str(list_file)}},
                           schedule={"epochs": 6, "warmup_epochs": 0.5})
        trainer = Trainer(cfg, tmp_path / f"run{steps}")
        try:
            info = trainer.fit() if steps else {"history": []}
            model = trainer.module.embedding_model().eval()
            with torch.no_grad():
                embeddings = F.normalize(model(trainer.module.inputs(held_out)), dim=1)
                scores = embeddings @ F.normalize(trainer.module.head.weight, dim=1).T
        finally:
            trainer.close()
        return 100.0 * (scores.argmax(1) == labels).float().mean().item(), info["history"]

    untrained, _ = identify(0)
    trained, history = identify(60)
    print(f"FaceT held-out identification (20 ids): untrained {untrained:.1f} %, 60 steps {trained:.1f} %")
    assert trained >= 30.0, trained  # chance is 5 %
    assert trained >= untrained + 15.0, (untrained, trained)
    assert history[-1]["loss"] < history[0]["loss"]
