"""Visibility-aware GFRO (``backbone.visibility_head``, ``training_mode.visibility_weight``): shapes, targets from
the visibility masks against a numpy recomputation, the gate down-weighting a hidden branch by construction,
learning on the embedded data, ONNX export parity and the config error."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from backbone.gfro import template_region_boxes
from data_processor.landmarks import ARCFACE_TEMPLATE_112
from data_processor.occlusion import occlude
from data_processor.synthetic_faces import SyntheticFaceDataset
from data_processor.train_dataset import OcclusionTrainDataset
from loss.visibility import cell_visibility, region_visibility_targets
from training_mode import TRAINING_MODES
from training_mode.gfro import GFROTraining
from utils.registry import ConfigError

from tests.test_gfro_model import images, tiny_gfro
from tests.test_gfro_training import STUDENT_SPEC, StubHead, make_batch

BRANCHES = ("global", "upper", "lower", "left", "right")


def test_shapes_and_default_off():
    model = tiny_gfro(visibility_head=True).train()
    out = model.forward_train(images(6), stats_rows=3)
    assert out["visibility"].shape == (6, 5) and out["visibility"].dtype == torch.float32
    assert ((out["visibility"] > 0) & (out["visibility"] < 1)).all()
    assert out["stats"]["visibility"].shape == (6, 5) and not out["stats"]["visibility"].requires_grad
    visibility, cells = model.visibility_head(model.forward_features(images(2)))
    assert visibility.shape == (2, 5) and cells.shape == (2, 7, 7)
    assert model.visibility_weights.shape == (5, 7, 7)
    assert torch.allclose(model.visibility_weights.sum(dim=(1, 2)), torch.ones(5))
    assert model.eval()(images(4)).shape == (4, 32)

    plain = tiny_gfro()
    assert plain.visibility_head is None and "visibility" not in plain.forward_train(images(4))
    assert not any("visibility" in key for key in plain.state_dict())  # off: same checkpoints as before
    # at initialisation the head predicts the same visibility everywhere: the model computes what it did without it
    with torch.no_grad():
        assert torch.allclose(tiny_gfro(visibility_head=True).eval()(images(4)), tiny_gfro().eval()(images(4)),
                              atol=1e-6)


def numpy_region_targets(mask: np.ndarray, grid: int = 7) -> np.ndarray:
    """Independent recomputation: exact area pooling by upsampling every pixel ``grid``× (so cells are whole
    blocks), then each branch's box overlap with every cell, in float64."""
    height, width = mask.shape
    fine = np.repeat(np.repeat(mask.astype(np.float64), grid, axis=0), grid, axis=1)
    cells = fine.reshape(grid, height, grid, width).mean(axis=(1, 3))
    boxes = template_region_boxes(ARCFACE_TEMPLATE_112, (112, 112))
    targets = [cells.mean()]
    for name in BRANCHES[1:]:
        x0, y0, x1, y1 = boxes[name]
        edges = np.arange(grid + 1) * (112.0 / grid)
        oy = np.clip(np.minimum(edges[1:], y1) - np.maximum(edges[:-1], y0), 0, None)
        ox = np.clip(np.minimum(edges[1:], x1) - np.maximum(edges[:-1], x0), 0, None)
        weights = np.outer(oy, ox)
        targets.append((weights * cells).sum() / weights.sum())
    return np.array(targets)


@pytest.mark.parametrize("size", [112, 100])
def test_targets_equal_a_numpy_recomputation(size):
    mask = np.ones((size, size), np.float32)
    mask[: int(0.4 * size)] = 0                                      # upper face hidden
    mask[int(0.7 * size):, : int(0.3 * size)] = 0                    # a block at the lower left
    mask[int(0.55 * size):int(0.6 * size), int(0.5 * size):] = 0.5   # a soft edge
    model = tiny_gfro(visibility_head=True)
    batch = torch.from_numpy(np.stack([mask, np.ones_like(mask)]))[:, None]  # [2, 1, H, W] as the dataset gives
    targets = region_visibility_targets(batch, model.visibility_weights).numpy()
    np.testing.assert_allclose(targets[0], numpy_region_targets(mask), atol=1e-5)
    np.testing.assert_allclose(targets[1], np.ones(5), atol=1e-6)
    assert targets[0][1] < 0.3 < 0.6 < targets[0][2]  # upper mostly hidden, lower mostly visible
    cells = cell_visibility(batch, (7, 7))
    assert cells.shape == (2, 7, 7) and torch.allclose(cells[1], torch.ones(7, 7))


def test_hidden_region_is_down_weighted_by_construction(monkeypatch):
    model = tiny_gfro(visibility_head=True).eval()
    feature_map = model.forward_features(images(4))
    with torch.no_grad():
        before = model._aggregate(feature_map)
    upper = model.visibility_weights[1] > 0
    cells = torch.where(upper, torch.tensor(0.01), torch.tensor(1.0)).expand(4, 7, 7)  # head: region upper hidden
    monkeypatch.setattr(model.visibility_head, "forward",
                        lambda fm: (torch.einsum("bij,nij->bn", cells, model.visibility_weights), cells))
    with torch.no_grad():
        after = model._aggregate(feature_map)
    w0, w1 = before["integrate_weights"], after["integrate_weights"]
    assert (w1[:, 1] < 0.1 * w0[:, 1]).all()                            # the upper branch loses its weight
    assert (w1[:, 2] > w0[:, 2]).all()                                   # the fully visible lower branch gains
    assert torch.equal(before["integrate_logits"], after["integrate_logits"])  # the gate itself is unchanged
    ratio = (w1 / w0) / (after["visibility"] / before["visibility"])     # w_b ∝ v_b · exp(gate_b)
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), rtol=1e-4)


def test_config_error_without_head_and_weight_validation():
    with pytest.raises(ConfigError, match="visibility_weight.*visibility_head"):
        TRAINING_MODES.build({"type": "GFROTraining", "visibility_weight": 0.1}, where="training_mode",
                             backbone=tiny_gfro(), head=StubHead(), preprocess_spec=STUDENT_SPEC, teacher=None)
    with pytest.raises(ValueError, match="visibility_weight"):
        GFROTraining(tiny_gfro(visibility_head=True), StubHead(), STUDENT_SPEC, visibility_weight=-1.0)
    with pytest.raises(ConfigError, match="visibility_head"):
        tiny_gfro(visibility_head="yes")


def test_visibility_term_logged_and_multi_view():
    mode = GFROTraining(tiny_gfro(visibility_head=True), StubHead(), STUDENT_SPEC, visibility_weight=0.5).train()
    batch = make_batch(views=2)
    batch["visibility"] = torch.ones(6, 2, 1, 112, 112)
    batch["visibility"][:, 1, :, :48] = 0
    out = mode(batch)
    assert torch.isclose(out["terms"]["visibility"], 0.5 * out["stats"]["raw/visibility"])
    assert torch.isclose(out["loss"].detach(), sum(out["terms"].values()))
    assert any(key.startswith("visibility/") for key in out["stats"])
    out["loss"].backward()
    assert mode.backbone.visibility_head.out.weight.grad.abs().sum() > 0
    del batch["visibility"]
    with pytest.raises(KeyError, match="visibility"):
        mode(batch)


def visibility_batch(dataset, indices):
    samples = [dataset[i] for i in indices]
    return {key: torch.stack([s[key] for s in samples]) for key in ("image", "noisy", "label", "visibility",
                                                                      "occlusion_type")}


def test_training_lowers_visibility_loss_and_sees_the_hidden_upper_face(tmp_path):
    torch.set_num_threads(1)
    base = SyntheticFaceDataset(root=str(tmp_path / "faces"), num_train_identities=8, images_per_train_identity=6,
                                num_test_identities=20, images_per_test_identity=2, pairs_per_fold=1,
                                num_val_identities=0)
    data = OcclusionTrainDataset(base, mode="mixed", fill="random", seed=0, flip_probability=0.5)
    model = tiny_gfro(visibility_head=True)
    mode = GFROTraining(model, StubHead(num_class=base.num_classes), STUDENT_SPEC, contrastive_weight=0.0,
                        visibility_weight=1.0).train()
    optimizer = torch.optim.Adam(mode.parameters(), lr=1e-2)
    probe = visibility_batch(data, range(48))  # fixed views of all 48 images, scored before and after training

    def probe_loss() -> float:
        with torch.no_grad():
            return float(mode(probe)["stats"]["raw/visibility"])

    initial = probe_loss()
    generator = np.random.default_rng(0)
    for step in range(100):  # a 16-channel trunk learning identities too: ~30 steps only calibrate the head
        data.set_epoch(step)
        out = mode(visibility_batch(data, generator.choice(len(data), 16, replace=False)))
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
    final = probe_loss()
    print(f"visibility BCE on a fixed batch: {initial:.4f} -> {final:.4f} ({final / initial:.2f}x)")
    assert final < 0.7 * initial

    # partial_lower views (they KEEP the lower face: the upper face is hidden) against their clean images
    clean, noisy = [], []
    for index in range(8):
        sample = base[index]
        rgb = np.ascontiguousarray(sample["image"].numpy().transpose(1, 2, 0))
        view, _ = occlude(rgb, sample["landmarks"].numpy(), "partial_lower", (0, index), fill="mean")
        clean.append(sample["image"])
        noisy.append(torch.from_numpy(np.ascontiguousarray(view.transpose(2, 0, 1))))
    model.eval()
    with torch.no_grad():
        visibility, _ = model.visibility_head(model.forward_features(mode.inputs(torch.stack(clean + noisy))))
        weights = model._aggregate(model.forward_features(mode.inputs(torch.stack(clean + noisy))))
    upper_clean, upper_noisy = visibility[:8, 1], visibility[8:, 1]
    print(f"predicted upper visibility: clean {upper_clean.mean():.3f}, upper face hidden {upper_noisy.mean():.3f}")
    assert (upper_noisy < upper_clean).sum() >= 5 and upper_noisy.mean() < upper_clean.mean() - 0.1
    gate = weights["integrate_weights"]
    assert gate[8:, 1].mean() < gate[:8, 1].mean()  # and the integrate gate follows


def test_onnx_export_parity_with_the_head(tmp_path):
    pytest.importorskip("onnxruntime")
    from utils.export_onnx import check_onnx_parity, export_to_onnx

    model = tiny_gfro(visibility_head=True)
    with torch.no_grad():  # a non-trivial head: different visibility per cell
        torch.nn.init.normal_(model.visibility_head.out.weight, std=0.5)
    path = export_to_onnx(model.eval(), (112, 112), tmp_path / "model.onnx", exporter="torchscript")
    report = check_onnx_parity(model, path, (112, 112))
    assert report.max_abs_diff < 1e-4 and report.max_cosine_gap < 1e-6, report
