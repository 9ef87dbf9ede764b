"""PairVerification / MeGlassProtocol objects, feature extraction and evaluate_model on tiny generated data."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from data_processor.image_io import encode_image, write_image
from data_processor.preprocess import PreprocessSpec, preprocess
from data_processor.verification_bin import write_verification_bin
from test_protocol import PROTOCOLS
from test_protocol.evaluate import evaluate_model, format_table
from test_protocol.extract import EmbeddingViews, ImagePathDataset, extract_embeddings, extract_views
from test_protocol.protocol_base import SetNotAvailable

FIXTURES = Path(__file__).parent / "fixtures" / "protocols"
LFW_IMAGES = [f"{name}/{name}_{i:04d}.png" for name in ("Alice", "Bob", "Carol") for i in (1, 2)]
COLOURS = {"Alice": (200, 30, 30), "Bob": (30, 200, 30), "Carol": (30, 30, 200)}
SPEC = PreprocessSpec("RGB", (127.5,) * 3, (127.5,) * 3, (16, 16))


def touch_images(root: Path, names) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).touch()


def identity_image(name: str, seed: int, size: int = 16) -> np.ndarray:
    """A flat colour per identity plus a little noise; the left half is darker so flips change the pixels."""
    rng = np.random.default_rng(seed)
    image = np.clip(np.array(COLOURS[name]) + rng.normal(0, 8, (size, size, 3)), 0, 255).astype(np.uint8)
    image[:, : size // 2] //= 2
    return image


def write_lfw_images(root: Path) -> None:
    for seed, name in enumerate(LFW_IMAGES):
        write_image(root / name, identity_image(name.split("/")[0], seed))


class CountingModel(nn.Module):
    """Mean colour of the left half and 3x that of the right half (6-d; a flip changes the norm); counts calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        half = x.shape[-1] // 2
        return torch.cat([x[..., :half].mean((2, 3)), 3 * x[..., half:].mean((2, 3))], 1) * self.scale


def lfw_protocol(root: Path, **kwargs):
    return PROTOCOLS.build({"type": "PairVerification", "name": "TINY", "root": str(root),
                            "pairs_file": str(FIXTURES / "lfw_pairs_6.txt"), "image_ext": ".png", **kwargs})


def test_rows_name_variant_checksum_and_checkpoint(tmp_path):
    touch_images(tmp_path, LFW_IMAGES)
    protocol = lfw_protocol(tmp_path)
    assert protocol.image_paths() == [str(tmp_path / p) for p in protocol.pairs.images]
    identity = {"Alice": [1.0, 0, 0], "Bob": [0, 1.0, 0], "Carol": [0, 0, 1.0]}
    embeddings = torch.tensor([identity[p.split("/")[0]] for p in protocol.pairs.images])
    protocol.process(range(3), embeddings[:3])  # in two batches, the second by path
    protocol.process(protocol.image_paths()[3:], embeddings[3:])
    row = protocol.compute(checkpoint="run/last.pt")
    assert row["variant"] == "facexzoo" and row["flip"] == "none" and row["threshold_rule"] == "youden"
    assert row["accuracy"] == 100.0 and row["spread_kind"] == "sem" and row["auc"] == 1.0
    assert row["num_pairs"] == 6 and row["num_folds"] == 3
    # 3 negative pairs cannot resolve FAR 1e-3 or 1e-4: reported as None ('-'), with the floor 1/3
    assert row["tar@far=1e-3"] is None and row["tar@far=1e-4"] is None and row["far_floor"] == pytest.approx(1 / 3)
    assert re.fullmatch(r"[0-9a-f]{12}", row["pairs_sha256"]) and row["checkpoint"] == "run/last.pt"


def test_missing_images_fail_at_construction_with_count_and_first_paths(tmp_path):
    touch_images(tmp_path, LFW_IMAGES[:4])
    with pytest.raises(FileNotFoundError) as error:
        lfw_protocol(tmp_path)
    message = str(error.value)
    assert "TINY: 2 of 6 images named by" in message and "lfw_pairs_6.txt" in message
    assert "first: Carol/Carol_0001.png, Carol/Carol_0002.png" in message


def test_absent_set_is_not_available_not_an_error(tmp_path):
    with pytest.raises(SetNotAvailable, match="not available: .*nowhere missing"):
        lfw_protocol(tmp_path / "nowhere")
    rows = evaluate_model(CountingModel(), SPEC, [{"name": "GONE", "root": str(tmp_path / "nowhere"),
                                                  "pairs_file": str(FIXTURES / "lfw_pairs_6.txt")}], "cpu")
    assert rows[0]["status"].startswith("not available:") and rows[0]["set"] == "GONE"
    assert "GONE" in format_table(rows) and "not available" in format_table(rows)


def test_flip_protocols_need_the_flipped_view(tmp_path):
    touch_images(tmp_path, LFW_IMAGES)
    protocol = lfw_protocol(tmp_path, variant="insightface")
    assert protocol.flip == "sum" and protocol.spread_kind == "std" and protocol.needs_flip
    with pytest.raises(ValueError, match="needs EmbeddingViews with the flipped view"):
        protocol.process(range(6), torch.randn(6, 4))
    with pytest.raises(RuntimeError, match="5 images were never processed"):
        protocol.process([0], EmbeddingViews(torch.randn(1, 4), torch.randn(1, 4)))
        protocol.compute()


def test_bad_settings_are_refused(tmp_path):
    touch_images(tmp_path, LFW_IMAGES)
    with pytest.raises(ValueError, match="variant must be one of"):
        lfw_protocol(tmp_path, variant="arcface")
    with pytest.raises(ValueError, match="flip must be one of"):
        lfw_protocol(tmp_path, flip="mirror")
    with pytest.raises(ValueError, match="spread must be one of"):
        lfw_protocol(tmp_path, spread="var")


def test_extraction_flip_modes_share_one_pass(tmp_path):
    write_lfw_images(tmp_path)
    paths = [tmp_path / p for p in LFW_IMAGES]
    model = CountingModel()
    views = extract_views(model, paths, SPEC, "cpu", batch_size=4, with_flip=True, progress=False)
    assert model.calls == 2 and views.plain.shape == (6, 6) and not torch.allclose(views.plain, views.flipped)
    plain = extract_embeddings(model, paths, SPEC, "cpu", batch_size=4)
    assert torch.allclose(plain, views.plain)
    raw_sum = extract_embeddings(model, paths, SPEC, "cpu", flip="norm_weighted")
    assert torch.allclose(raw_sum, views.plain + views.flipped)
    assert not torch.allclose(views.plain.norm(dim=1), views.flipped.norm(dim=1))
    unit_sum = extract_embeddings(model, paths, SPEC, "cpu", flip="sum")
    assert torch.allclose(unit_sum, views.plain / views.plain.norm(dim=1, keepdim=True)
                          + views.flipped / views.flipped.norm(dim=1, keepdim=True))
    assert model.training  # the model's mode is restored


def test_extraction_accepts_mixed_sizes_and_in_memory_images(tmp_path):
    write_image(tmp_path / "a.png", identity_image("Alice", 0, 16))
    write_image(tmp_path / "b.png", identity_image("Alice", 0, 32))
    model = CountingModel()
    views = extract_views(model, [tmp_path / "a.png", tmp_path / "b.png"], SPEC, "cpu", with_flip=True,
                          progress=False)
    assert views.plain.shape == (2, 6) and torch.allclose(views.plain[0], views.plain[1], atol=0.05)
    arrays = [identity_image("Bob", i) for i in range(3)]
    assert torch.allclose(extract_embeddings(model, arrays, SPEC, "cpu"),
                          extract_embeddings(model, [{"image": torch.from_numpy(a.transpose(2, 0, 1))}
                                                     for a in arrays], SPEC, "cpu"))


def test_cpu_extraction_of_a_conv_net_feeds_channels_last_with_the_same_embeddings(tmp_path):
    write_lfw_images(tmp_path)
    paths = [tmp_path / p for p in LFW_IMAGES]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten())
    seen = []
    model[0].register_forward_pre_hook(lambda module, args: seen.append(args[0].is_contiguous()))
    embeddings = extract_embeddings(model, paths, SPEC, "cpu", batch_size=4)
    assert seen and not any(seen)  # channels-last inputs, never the default layout
    with torch.no_grad():
        reference = model.eval()(preprocess(torch.stack([ImagePathDataset(paths)[i] for i in range(len(paths))]),
                                            SPEC))
    assert torch.allclose(embeddings, reference, atol=1e-5)


def test_evaluate_model_extracts_once_for_both_variants(tmp_path):
    write_lfw_images(tmp_path)
    model = CountingModel()
    cfg = {"name": "TINY", "root": str(tmp_path), "pairs_file": str(FIXTURES / "lfw_pairs_6.txt"),
           "image_ext": ".png", "variant": "both"}
    rows = evaluate_model(model, SPEC, [cfg], "cpu", batch_size=64, checkpoint="tiny.pt")
    assert model.calls == 1  # 6 images, one batch, flip view in the same forward
    assert [row["variant"] for row in rows] == ["facexzoo", "insightface"]
    assert [row["flip"] for row in rows] == ["none", "sum"]
    assert all(row["auc"] == 1.0 and row["checkpoint"] == "tiny.pt" for row in rows)
    # with 4 train pairs, FaceX-Zoo's threshold sits just above the highest train negative, so a test negative
    # can exceed it; the insightface grid threshold lies in the gap
    assert rows[1]["accuracy"] == 100.0
    table = format_table(rows)
    assert "facexzoo" in table and "insightface" in table and rows[0]["pairs_sha256"] in table


def test_bin_set_end_to_end(tmp_path):
    names = ["Alice", "Alice", "Alice", "Bob", "Bob", "Bob", "Carol", "Alice"]
    encoded = [encode_image(identity_image(name, i), ".png") for i, name in enumerate(names)]
    write_verification_bin(tmp_path / "tiny.bin", encoded, [True, False, True, False])
    rows = evaluate_model(CountingModel(), SPEC, [{"name": "BIN", "pairs_file": str(tmp_path / "tiny.bin"),
                                                  "parser": "bin", "num_folds": 2, "variant": "both"}], "cpu")
    assert [row["auc"] for row in rows] == [1.0, 1.0] and rows[1]["accuracy"] == 100.0
    assert rows[0]["num_pairs"] == 4 and rows[0]["num_folds"] == 2


def test_meglass_tar_and_rank1_on_a_constructed_fixture(tmp_path):
    lists = FIXTURES / "meglass"
    names = [line.strip() for f in ("gallery_no_glass.txt", "probe_black_glass.txt") for line in open(lists / f)]
    touch_images(tmp_path, names)
    protocol = PROTOCOLS.build({"type": "MeGlassProtocol", "name": "MEGLASS", "root": str(tmp_path),
                                "lists_dir": str(lists), "gallery": "no_glass", "probe": "black_glass"})
    gallery = torch.eye(3)
    probe = torch.tensor([[1.0, 0.1, 0], [0, 1.0, 0.2], [0, 1.0, 0.3]])  # the third probe looks like identity 1
    protocol.process(range(6), torch.cat([gallery, probe]))
    row = protocol.compute()
    assert row["rank1"] == pytest.approx(200 / 3) and row["num_pairs"] == 9 and row["variant"] == "meglass_official"
    # 6 impostor pairs cannot resolve FAR 1e-3 / 1e-4: no TAR is claimed there
    assert row["tar@far=1e-3"] is None and row["tar@far=1e-4"] is None and row["far_floor"] == pytest.approx(1 / 6)
    with pytest.raises(FileNotFoundError, match=r"MEGLASS: 3 of 6 images named by gallery_black_glass.txt"):
        PROTOCOLS.build({"type": "MeGlassProtocol", "name": "MEGLASS", "root": str(tmp_path),
                         "lists_dir": str(lists), "gallery": "black_glass", "probe": "black_glass"})


# ---------------------------------------------------------------- GFRO's released lists (../shared)
def touch_listed(root: Path, list_file: Path) -> None:
    touch_images(root, [line.split()[0] for line in open(list_file) if line.strip()])


@pytest.mark.shared
def test_gfro_cplfw_list_and_pairs_mismatch_fails_loudly(shared, tmp_path):
    """GFRO's CPLFW image list names Name_2.jpg while its pairs expect Name_0002.jpg: every image is 'missing'."""
    touch_listed(tmp_path, shared("data/protocols/gfro_CPLFW_train_list.txt"))
    with pytest.raises(FileNotFoundError) as error:
        PROTOCOLS.build({"type": "PairVerification", "name": "CPLFW", "root": str(tmp_path),
                         "pairs_file": str(shared("data/protocols/gfro_CPLFW_pairs.txt"))})
    message = str(error.value)
    assert re.search(r"CPLFW: (\d+) of \1 images named by .*gfro_CPLFW_pairs.txt are missing", message)
    assert "first: Adam_Ant/Adam_Ant_0002.jpg, Adam_Ant/Adam_Ant_0003.jpg" in message


@pytest.mark.shared
def test_gfro_calfw_list_matches_its_pairs(shared, tmp_path):
    touch_listed(tmp_path, shared("data/protocols/gfro_CALFW_train_list.txt"))
    protocol = PROTOCOLS.build({"type": "PairVerification", "name": "CALFW", "root": str(tmp_path),
                                "pairs_file": str(shared("data/protocols/gfro_CALFW_pairs.txt"))})
    assert len(protocol.pairs) == 6000 and protocol.num_folds == 10
