"""``data.decode: device``: workers read JPEG bytes, the batch is decoded where the model runs (here the CPU, the
same torchvision call that runs nvJPEG on a GPU) and flipped there, giving the samples of the CPU path."""
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from data_processor.device_decode import EncodedJPEGDataset, decode_batch
from data_processor.train_dataset import build_train_dataset
from tests.test_trainer import run_losses, tiny_config
from training_mode.trainer import Trainer
from utils.config import merge
from utils.registry import ConfigError


@pytest.fixture(scope="module")
def jpeg_faces(tmp_path_factory) -> Path:
    """24 smooth 112×112 JPEG images of 4 identities in a FaceX-Zoo train list."""
    root = tmp_path_factory.mktemp("jpeg_faces")
    rng = np.random.default_rng(0)
    lines = []
    for k in range(24):
        path = f"id{k % 4}/{k:03d}.jpg"
        (root / "images" / path).parent.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 255, (14, 14, 3), np.uint8)
        cv2.imwrite(str(root / "images" / path), cv2.resize(small, (112, 112), interpolation=cv2.INTER_CUBIC))
        lines.append(f"{path} {k % 4}")
    (root / "train_list.txt").write_text("\n".join(lines) + "\n")
    return root


def data_cfg(faces: Path, decode: str, **extra) -> dict:
    return {"train": {"type": "ImageListDataset", "root": str(faces / "images"),
                      "list_file": str(faces / "train_list.txt")}, "decode": decode,
            "flip": {"probability": 0.5, "seed": 3}, **extra}


def test_device_batches_equal_the_cpu_samples(jpeg_faces):
    cpu = build_train_dataset(data_cfg(jpeg_faces, "cpu"))
    encoded = build_train_dataset(data_cfg(jpeg_faces, "device"))
    assert isinstance(encoded, EncodedJPEGDataset) and encoded.num_classes == 4
    for dataset in (cpu, encoded):
        dataset.set_epoch(1)
    batch = next(iter(DataLoader(encoded, batch_size=24, collate_fn=encoded.collate_fn)))
    assert isinstance(batch["jpeg"], list) and batch["jpeg"][0].dtype == torch.uint8
    decoded = decode_batch(batch, torch.device("cpu"))
    assert decoded["image"].shape == (24, 3, 112, 112) and decoded["image"].dtype == torch.uint8
    assert "jpeg" not in decoded and "path" not in decoded
    flips = [bool(cpu[i]["flipped"]) for i in range(24)]
    assert decoded["flipped"].tolist() == flips and 4 <= sum(flips) <= 20  # the same draws as FlipDataset
    for i in range(24):
        reference = cpu[i]["image"].int()
        assert int(decoded["label"][i]) == int(cpu[i]["label"])
        # two JPEG decoders (OpenCV's, torchvision's) may round the IDCT differently by a level or two
        assert (decoded["image"][i].int() - reference).abs().max() <= 3
        assert (decoded["image"][i].int() - reference).abs().float().mean() < 0.5


def test_bad_inputs_are_named(jpeg_faces, tmp_path):
    with pytest.raises(ConfigError, match="data.occlusion renders its views from CPU pixels"):
        build_train_dataset(data_cfg(jpeg_faces, "device", occlusion={"mode": "partial"}))
    with pytest.raises(ConfigError, match="data.decode: expected one of cpu, device"):
        build_train_dataset(data_cfg(jpeg_faces, "gpu"))
    png = tmp_path / "images" / "id0" / "a.png"
    png.parent.mkdir(parents=True)
    cv2.imwrite(str(png), np.zeros((112, 112, 3), np.uint8))
    (tmp_path / "list.txt").write_text("id0/a.png 0\n")
    dataset = build_train_dataset({"train": {"type": "ImageListDataset", "root": str(tmp_path / "images"),
                                             "list_file": str(tmp_path / "list.txt")}, "decode": "device"})
    with pytest.raises(ValueError, match=r"a\.png: data.decode=device decodes JPEG files only"):
        dataset[0]
    odd = tmp_path / "images" / "id0" / "b.jpg"
    cv2.imwrite(str(odd), np.zeros((100, 90, 3), np.uint8))
    first = jpeg_faces / "images" / "id0" / "000.jpg"
    batch = {"jpeg": [torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) for p in (first, odd)],
             "label": torch.tensor([0, 0]), "flipped": torch.tensor([False, False]), "path": [str(first), str(odd)]}
    with pytest.raises(ValueError, match=r"b\.jpg: decoded to \(3, 100, 90\)"):
        decode_batch(batch, torch.device("cpu"))


def test_trainer_decodes_on_the_device(jpeg_faces, tmp_path):
    def config(decode: str) -> dict:
        cfg = tiny_config(jpeg_faces, max_steps=3)
        return merge(cfg, {"data": {"decode": decode, "flip": {"probability": 0.5, "seed": 3}},
                           "runtime": {"init_head": "class_means"}})  # the imprinting loader decodes too
    cpu = run_losses(Trainer(config("cpu"), tmp_path / "cpu"))
    device = Trainer(config("device"), tmp_path / "device")
    assert isinstance(device.dataset, EncodedJPEGDataset)
    losses = run_losses(device)
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert losses == pytest.approx(cpu, rel=2e-3)  # the same samples, up to the decoders' rounding
